//! Capability sets: Docker's default set minus `NET_RAW`, adjusted by add/drop.

use crate::error::{Result, RuntimeError};
use crate::spec::CapabilitiesSpec;

/// Capability names in kernel bit order (`CAP_CHOWN` = 0 ... `CAP_CHECKPOINT_RESTORE` = 40).
pub const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capabilities without `NET_RAW`.
pub const DEFAULT_CAPS: [&str; 13] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Parse `NET_ADMIN`, `cap_net_admin`, `CAP_NET_ADMIN` to its bit number.
pub fn parse_cap(name: &str) -> Result<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAP_NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| i as u32)
        .ok_or_else(|| RuntimeError::UnknownCapability(name.to_string()))
}

pub fn mask_of(names: &[&str]) -> u64 {
    names
        .iter()
        .filter_map(|n| parse_cap(n).ok())
        .fold(0, |m, b| m | (1 << b))
}

/// All capabilities the kernel knows.
pub fn all_caps_mask() -> u64 {
    let last = last_cap().min(63);
    if last == 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// The capability sets the container process gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapPlan {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    /// Always empty (CVE-2022-24769: a non-empty inheritable set leaks caps through exec).
    pub inheritable: u64,
}

/// Compute the sets: default (or all when privileged), then drop, then add. A non-root uid
/// gets empty effective/permitted sets (capabilities stay in the bounding set only).
pub fn plan(spec: &CapabilitiesSpec, privileged: bool, uid: u32) -> Result<CapPlan> {
    let mut set = if privileged {
        all_caps_mask()
    } else {
        mask_of(&DEFAULT_CAPS)
    };
    for d in &spec.drop {
        if d.eq_ignore_ascii_case("ALL") {
            set = 0;
        } else {
            set &= !(1 << parse_cap(d)?);
        }
    }
    for a in &spec.add {
        if a.eq_ignore_ascii_case("ALL") {
            set = all_caps_mask();
        } else {
            set |= 1 << parse_cap(a)?;
        }
    }
    set &= all_caps_mask();
    let (effective, permitted) = if uid == 0 { (set, set) } else { (0, 0) };
    Ok(CapPlan {
        bounding: set,
        effective,
        permitted,
        inheritable: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_docker_minus_net_raw() {
        let p = plan(&CapabilitiesSpec::default(), false, 0).unwrap();
        assert_eq!(p.bounding, 0xa80405fb);
        assert_eq!(p.effective, p.bounding);
        assert_eq!(p.inheritable, 0);
        assert_eq!(p.bounding & (1 << 13), 0, "NET_RAW must be off");
        assert_eq!(p.bounding & (1 << 21), 0, "SYS_ADMIN must be off");
    }

    #[test]
    fn add_drop_and_names() {
        let spec = CapabilitiesSpec {
            add: vec!["cap_net_admin".into()],
            drop: vec!["KILL".into(), "CAP_CHOWN".into()],
        };
        let p = plan(&spec, false, 0).unwrap();
        assert_ne!(p.bounding & (1 << 12), 0);
        assert_eq!(p.bounding & (1 << 5), 0);
        assert_eq!(p.bounding & 1, 0);
        let all = CapabilitiesSpec {
            add: vec!["SETUID".into()],
            drop: vec!["ALL".into()],
        };
        assert_eq!(plan(&all, false, 0).unwrap().bounding, 1 << 7);
    }

    #[test]
    fn unknown_capability_is_a_typed_error() {
        let spec = CapabilitiesSpec {
            add: vec!["CAP_FLY".into()],
            drop: vec![],
        };
        assert!(matches!(
            plan(&spec, false, 0),
            Err(RuntimeError::UnknownCapability(n)) if n == "CAP_FLY"
        ));
    }

    #[test]
    fn non_root_gets_no_effective_caps() {
        let p = plan(&CapabilitiesSpec::default(), false, 1000).unwrap();
        assert_eq!(p.effective, 0);
        assert_eq!(p.permitted, 0);
        assert_ne!(p.bounding, 0);
    }
}
