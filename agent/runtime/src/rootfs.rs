//! The container's filesystem: overlayfs over the image layers, the special filesystems, volume
//! bind mounts resolved inside the rootfs, pivot_root with the old root detached, then /dev,
//! read-only and masked paths. Called in order from [`crate::process::init::container_init`].

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::process::init::{InitError, InitPlan};
use crate::syscall::{Create, DevNode, Syscall};

/// runc's default masked paths (`libcontainer/specconv/example.go`).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Character devices created in the container's /dev tmpfs.
pub const DEVICES: [(&str, DevNode); 6] = [
    (
        "/dev/null",
        DevNode {
            major: 1,
            minor: 3,
            mode: 0o666,
        },
    ),
    (
        "/dev/zero",
        DevNode {
            major: 1,
            minor: 5,
            mode: 0o666,
        },
    ),
    (
        "/dev/full",
        DevNode {
            major: 1,
            minor: 7,
            mode: 0o666,
        },
    ),
    (
        "/dev/random",
        DevNode {
            major: 1,
            minor: 8,
            mode: 0o666,
        },
    ),
    (
        "/dev/urandom",
        DevNode {
            major: 1,
            minor: 9,
            mode: 0o666,
        },
    ),
    (
        "/dev/tty",
        DevNode {
            major: 5,
            minor: 0,
            mode: 0o666,
        },
    ),
];

pub const DEV_SYMLINKS: [(&str, &str); 6] = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
    ("/proc/kcore", "/dev/core"),
];

/// A bind mount into the container (volumes and the /etc files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    pub read_only: bool,
    pub is_file: bool,
}

/// overlayfs mount data: `lowerdir` lists the top layer first.
pub fn overlay_data(lower_dirs_bottom_first: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lowers: Vec<String> = lower_dirs_bottom_first
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    )
}

fn step(name: &'static str) -> impl Fn(Errno) -> InitError {
    move |errno| InitError { step: name, errno }
}

fn fd_path(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// Mount `fstype` (or bind `source`) on `dest`, resolved inside `root`.
#[allow(clippy::too_many_arguments)]
fn mount_in_root(
    sys: &dyn Syscall,
    root: RawFd,
    dest: &Path,
    create: Create,
    source: Option<&Path>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &'static str,
) -> Result<(), InitError> {
    let fd = sys.open_in_root(root, dest, create).map_err(step(what))?;
    let res = sys.mount(source, &fd_path(fd), fstype, flags, data);
    sys.close(fd);
    res.map_err(step(what))?;
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        // A bind mount ignores MS_RDONLY until it is remounted; reopen the path so the fd is
        // the new mount's root, not the directory underneath.
        let fd = sys
            .open_in_root(root, dest, Create::Nothing)
            .map_err(step(what))?;
        let res = sys.mount(
            None,
            &fd_path(fd),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        );
        sys.close(fd);
        res.map_err(step(what))?;
    }
    Ok(())
}

/// Before pivot_root: overlay, /proc, /dev, /sys, volumes and /etc files, the cwd.
pub fn prepare_rootfs(sys: &dyn Syscall, plan: &InitPlan) -> Result<(), InitError> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Nothing we mount may propagate back to the host.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(step("make / rprivate"))?;
    sys.mount(
        Some(Path::new("overlay")),
        &plan.rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(&plan.overlay_data),
    )
    .map_err(step("mount overlay rootfs"))?;
    let root = sys.open_dir(&plan.rootfs).map_err(step("open rootfs"))?;
    let res = (|| {
        mount_in_root(
            sys,
            root,
            Path::new("/proc"),
            Create::Dir,
            Some(Path::new("proc")),
            Some("proc"),
            nosuid_nodev_noexec,
            None,
            "mount /proc",
        )?;
        mount_in_root(
            sys,
            root,
            Path::new("/dev"),
            Create::Dir,
            Some(Path::new("tmpfs")),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
            "mount /dev",
        )?;
        mount_in_root(
            sys,
            root,
            Path::new("/sys"),
            Create::Dir,
            Some(Path::new("sysfs")),
            Some("sysfs"),
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None,
            "mount /sys",
        )?;
        for m in &plan.mounts {
            let mut flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            if m.read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            mount_in_root(
                sys,
                root,
                &m.destination,
                if m.is_file { Create::File } else { Create::Dir },
                Some(&m.source),
                None,
                flags,
                None,
                "bind mount",
            )?;
        }
        // The working directory exists (created inside the rootfs like runc does).
        let cwd = sys
            .open_in_root(root, &plan.confinement.cwd, Create::Dir)
            .map_err(step("create cwd"))?;
        sys.close(cwd);
        Ok(())
    })();
    sys.close(root);
    res
}

/// pivot_root into the rootfs and detach the old root (runc's `pivotRoot`).
pub fn pivot_root(sys: &dyn Syscall, rootfs: &Path) -> Result<(), InitError> {
    sys.chdir(rootfs).map_err(step("chdir rootfs"))?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(step("pivot_root"))?;
    // The old root is now stacked on "."; make it private so the detach cannot propagate, then
    // detach it.
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(step("make old root private"))?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(step("detach old root"))?;
    sys.chdir(Path::new("/")).map_err(step("chdir /"))
}

/// After pivot_root: /dev contents, read-only and masked paths, read-only root.
pub fn finish_rootfs(sys: &dyn Syscall, plan: &InitPlan) -> Result<(), InitError> {
    for (path, dev) in DEVICES {
        sys.mknod_char(Path::new(path), dev)
            .map_err(step("mknod"))?;
    }
    for (target, link) in DEV_SYMLINKS {
        sys.symlink(Path::new(target), Path::new(link))
            .map_err(step("dev symlink"))?;
    }
    sys.mkdir(Path::new("/dev/pts"), 0o755)
        .map_err(step("mkdir /dev/pts"))?;
    sys.mount(
        Some(Path::new("devpts")),
        Path::new("/dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .map_err(step("mount /dev/pts"))?;
    sys.mkdir(Path::new("/dev/shm"), 0o1777)
        .map_err(step("mkdir /dev/shm"))?;
    sys.mount(
        Some(Path::new("shm")),
        Path::new("/dev/shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(step("mount /dev/shm"))?;
    sys.mkdir(Path::new("/dev/mqueue"), 0o755)
        .map_err(step("mkdir /dev/mqueue"))?;
    sys.mount(
        Some(Path::new("mqueue")),
        Path::new("/dev/mqueue"),
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(step("mount /dev/mqueue"))?;
    for p in &plan.readonly_paths {
        match sys.mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None) {
            Err(Errno::ENOENT) => continue,
            r => r.map_err(step("readonly path bind"))?,
        }
        sys.mount(
            Some(p),
            p,
            None,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_REC,
            None,
        )
        .map_err(step("readonly path remount"))?;
    }
    for p in &plan.masked_paths {
        match sys.mount(
            Some(Path::new("/dev/null")),
            p,
            None,
            MsFlags::MS_BIND,
            None,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR) | Err(Errno::EINVAL) => sys
                .mount(
                    Some(Path::new("tmpfs")),
                    p,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None,
                )
                .map_err(step("mask directory"))?,
            Err(e) => return Err(step("mask path")(e)),
        }
    }
    if plan.readonly_root {
        sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )
        .map_err(step("read-only root"))?;
    }
    Ok(())
}
