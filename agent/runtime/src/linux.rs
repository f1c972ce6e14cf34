//! [`LinuxRuntime`]: the real runtime.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::capabilities;
use crate::cgroups::{self, CgroupManager};
use crate::error::{IoContext, Result, RuntimeError};
use crate::process::channel::{self, MainChannel, SyncMsg};
use crate::process::exec::{spawn_exec, ExecContext, ExecPlan, EXEC_NAMESPACES};
use crate::process::init::{Confinement, InitPlan};
use crate::process::{spawn_supervisor, ExitRecord, SpawnRequest};
use crate::rootfs::{self, BindMount};
use crate::seccomp::{self, CompiledProfile};
use crate::spec::{
    ContainerId, ContainerSpec, ContainerState, ContainerStats, ContainerStatus, ExecProcess,
    ExecSpec, ExitStatus, Resources, SandboxId, SandboxSpec, SeccompProfile,
};
use crate::state::{self, pid_start_time, PersistedContainer, PersistedSandbox};
use crate::syscall::linux::openat2_in_root;
use crate::Runtime;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const SANDBOX_NS: [(&str, CloneFlags); 3] = [
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
];

/// Configuration of a [`LinuxRuntime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where state, overlay upper dirs and namespace bind mounts live
    /// (default `/run/kapsel/runtime`).
    pub state_dir: PathBuf,
    /// The agent-owned parent cgroup under every hierarchy (default `kapsel`).
    pub cgroup_parent: String,
    /// pids limit of a pod cgroup, and of a standalone container, when the spec sets none.
    pub default_pids_limit: Option<u64>,
    /// How long `create` waits for init to be ready.
    pub init_timeout: Duration,
    /// First host id of the user namespace mapping for `host_users: false` containers that do
    /// not choose their own (`ContainerSpec::userns_host_id`).
    pub userns_host_id: u32,
}

/// Size of a container's uid/gid mapping.
pub const USERNS_SIZE: u32 = 65536;

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/kapsel/runtime"),
            cgroup_parent: "kapsel".into(),
            default_pids_limit: Some(4096),
            init_timeout: Duration::from_secs(30),
            userns_host_id: 100_000,
        }
    }
}

/// The built-in Linux runtime (namespaces, cgroups, overlayfs + pivot_root, capabilities,
/// seccomp). Blocking; call it from `spawn_blocking`. Needs root.
#[derive(Debug)]
pub struct LinuxRuntime {
    config: RuntimeConfig,
    cgroups: Box<dyn CgroupManager>,
    seccomp: CompiledProfile,
    /// Created containers waiting for `start`: main's end of the sync socket.
    pending: Mutex<HashMap<ContainerId, MainChannel>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn invalid(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidSpec(msg.into())
}

/// Absolute, no `..`, no NUL.
fn check_container_path(what: &str, p: &Path) -> Result<()> {
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(format!(
            "{what} {} must be absolute and must not contain ..",
            p.display()
        )));
    }
    if p.as_os_str().as_bytes().contains(&0) {
        return Err(invalid(format!("{what} contains NUL")));
    }
    Ok(())
}

fn overlay_safe(p: &Path) -> Result<()> {
    let s = p.as_os_str().as_bytes();
    if !p.is_absolute() || s.iter().any(|b| matches!(b, b',' | b':' | b'=' | 0)) {
        return Err(invalid(format!(
            "layer path {} must be absolute without , : or =",
            p.display()
        )));
    }
    Ok(())
}

/// Read `etc/<name>` of an image layer, resolved inside the layer (no symlink escape).
fn read_image_file(layers_bottom_first: &[PathBuf], name: &str) -> Option<String> {
    let rel = CString::new(format!("etc/{name}")).ok()?;
    for layer in layers_bottom_first.iter().rev() {
        let dir = File::open(layer).ok()?;
        if let Ok(fd) = openat2_in_root(dir.as_raw_fd(), &rel, libc::O_RDONLY) {
            // SAFETY: openat2 just returned this fd and nobody else owns it.
            let f = unsafe { File::from_raw_fd(fd) };
            return std::io::read_to_string(f).ok();
        }
    }
    None
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then(|| {
                Some(PasswdEntry {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })?
        })
        .collect()
}

/// (uid, gid, supplementary groups) from the spec and the image's /etc/passwd and /etc/group.
fn resolve_user(spec: &ContainerSpec) -> Result<(u32, u32, Vec<u32>)> {
    let mut uid = None;
    let mut gid = None;
    let mut name = None;
    if let Some(u) = spec.image_user.as_deref().filter(|u| !u.is_empty()) {
        let (user, group) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u, None),
        };
        let passwd = read_image_file(&spec.lower_dirs, "passwd").unwrap_or_default();
        let entries = parse_passwd(&passwd);
        if let Ok(n) = user.parse::<u32>() {
            uid = Some(n);
            if let Some(e) = entries.iter().find(|e| e.uid == n) {
                gid = Some(e.gid);
                name = Some(e.name.clone());
            }
        } else {
            let e = entries.iter().find(|e| e.name == user).ok_or_else(|| {
                RuntimeError::UnknownUser {
                    user: user.to_string(),
                }
            })?;
            uid = Some(e.uid);
            gid = Some(e.gid);
            name = Some(e.name.clone());
        }
        if let Some(g) = group {
            gid = Some(match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    let groups = read_image_file(&spec.lower_dirs, "group").unwrap_or_default();
                    groups
                        .lines()
                        .map(|l| l.split(':').collect::<Vec<_>>())
                        .find(|f| f.len() >= 3 && f[0] == g)
                        .and_then(|f| f[2].parse().ok())
                        .ok_or_else(|| RuntimeError::UnknownGroup {
                            group: g.to_string(),
                        })?
                }
            });
        }
    }
    let uid = spec.run_as_user.or(uid).unwrap_or(0);
    let gid = spec.run_as_group.or(gid).unwrap_or(0);
    let mut groups = spec.supplemental_groups.clone();
    if let (Some(n), None) = (&name, spec.run_as_user) {
        let text = read_image_file(&spec.lower_dirs, "group").unwrap_or_default();
        for l in text.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == n) {
                if let Ok(g) = f[2].parse() {
                    groups.push(g);
                }
            }
        }
    }
    groups.sort_unstable();
    groups.dedup();
    if spec.run_as_non_root && uid == 0 {
        return Err(RuntimeError::RunAsNonRoot);
    }
    Ok((uid, gid, groups))
}

/// Validate everything that can be checked without side effects.
fn validate(spec: &ContainerSpec) -> Result<()> {
    let cmd = spec
        .command
        .first()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("missing command"))?;
    if cmd.contains('/') {
        check_container_path("command", Path::new(cmd))?;
    }
    if cmd == "/proc" || cmd.starts_with("/proc/") {
        return Err(invalid(format!("refusing command under /proc: {cmd}")));
    }
    if spec
        .command
        .iter()
        .chain(&spec.args)
        .chain(&spec.env)
        .any(|s| s.contains('\0'))
    {
        return Err(invalid("NUL byte in command, args or env"));
    }
    if let Some(e) = spec.env.iter().find(|e| !e.contains('=')) {
        return Err(invalid(format!("env entry {e:?} is not KEY=VALUE")));
    }
    if spec.lower_dirs.is_empty() {
        return Err(invalid("no image layers (lower_dirs)"));
    }
    for l in &spec.lower_dirs {
        overlay_safe(l)?;
        if !l.is_dir() {
            return Err(invalid(format!(
                "image layer {} is not a directory",
                l.display()
            )));
        }
    }
    if let Some(cwd) = &spec.cwd {
        check_container_path("working directory", cwd)?;
    }
    for m in &spec.mounts {
        check_container_path("volume destination", &m.destination)?;
        if m.destination == Path::new("/") || m.destination.starts_with("/proc") {
            return Err(invalid(format!(
                "volume destination {} is not allowed",
                m.destination.display()
            )));
        }
        if !m.source.exists() {
            return Err(RuntimeError::VolumeSourceMissing(m.source.clone()));
        }
    }
    if let Some(h) = &spec.hostname {
        if h.is_empty() || h.len() > 64 || h.contains('\0') {
            return Err(invalid(format!("bad hostname {h:?}")));
        }
    }
    if spec.share_process_namespace && spec.sandbox.is_none() {
        return Err(invalid("shareProcessNamespace needs a sandbox"));
    }
    Ok(())
}

fn open_cloexec(path: &Path, write: bool) -> Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .ctx(|| format!("open {}", path.display()))?;
    Ok(f.into())
}

fn open_log(path: Option<&Path>) -> Result<OwnedFd> {
    match path {
        None => open_cloexec(Path::new("/dev/null"), true),
        Some(p) => Ok(OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(p)
            .ctx(|| format!("open log {}", p.display()))?
            .into()),
    }
}

fn pidfd_open(pid: i32, start: u64) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // The pidfd pins the pid: if the start time still matches, it is the same process.
    (pid_start_time(pid) == Some(start)).then_some(fd)
}

/// Wait until a pidfd is readable (the process exited); `false` on timeout.
fn poll_pidfd(fd: &OwnedFd, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            return true;
        }
        if rc == 0 || (rc < 0 && Errno::last() != Errno::EINTR) {
            return false;
        }
    }
}

fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: WNOHANG waitpid; ECHILD when it is not our child (re-adopted) is fine.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Signals whose default action terminates the process (pid 1 ignores them without a handler).
const DEFAULT_FATAL: [i32; 13] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGPWR,
];

/// Does `pid` catch or ignore `sig`? From /proc/pid/status SigCgt / SigIgn.
fn handles_signal(pid: i32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let bit = 1u64 << (sig - 1);
    (mask("SigCgt:") | mask("SigIgn:")) & bit != 0
}

/// Bring `lo` up in the current thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket syscall.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just created.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *b as libc::c_char;
    }
    // SAFETY: valid socket and ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: writing the flags member of the union we just read.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: valid socket and ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Start the pod pid namespace's pid 1: a reaper that only waits for SIGCHLD and reaps. Double
/// fork, so it is not our child; non-dumpable, no fds, every signal blocked (it dies only by
/// SIGKILL from the host). Returns its host pid.
fn spawn_pid_holder() -> Result<i32> {
    let (rd, wr) = channel::pair()?;
    // SAFETY: the children only make raw syscalls and leave with _exit.
    let a = unsafe { libc::fork() };
    if a < 0 {
        return Err(RuntimeError::Io {
            context: "fork pid holder".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if a == 0 {
        // SAFETY: raw syscalls in the forked child, ending in _exit.
        unsafe {
            libc::setsid();
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                libc::_exit(1);
            }
            let b = libc::fork();
            if b == 0 {
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                let mut chld: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut chld);
                libc::sigaddset(&mut chld, libc::SIGCHLD);
                loop {
                    libc::sigwaitinfo(&chld, std::ptr::null_mut());
                    while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
                }
            }
            let pid = b.to_ne_bytes();
            libc::send(
                wr.as_raw_fd(),
                pid.as_ptr().cast(),
                pid.len(),
                libc::MSG_NOSIGNAL,
            );
            libc::_exit(if b > 0 { 0 } else { 1 });
        }
    }
    drop(wr);
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(a, &mut st, 0) };
    let mut buf = [0u8; 4];
    // SAFETY: valid buffer.
    let n = unsafe { libc::recv(rd.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 0) };
    let pid = i32::from_ne_bytes(buf);
    if n != 4 || pid <= 0 {
        return Err(RuntimeError::Channel("pid holder did not start".into()));
    }
    Ok(pid)
}

/// Is `pid` the init (pid 1) of its own pid namespace? (last NSpid field)
fn is_ns_init(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last().map(|x| x == "1"))
        })
        .unwrap_or(false)
}

/// Create a user namespace mapping `0..USERNS_SIZE` to `host_id..`, return an fd for it.
/// unshare(CLONE_NEWUSER) is refused in a multi-threaded process, so a forked child creates it
/// and main (host root) writes the maps.
fn create_userns(host_id: u32) -> Result<OwnedFd> {
    let mut pipe = [0; 2];
    // SAFETY: valid out array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(RuntimeError::Io {
            context: "pipe".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: both fds were just created.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    // SAFETY: the child only makes raw syscalls and leaves with _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(RuntimeError::Io {
            context: "fork userns helper".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if child == 0 {
        // SAFETY: raw syscalls only, then _exit.
        unsafe {
            libc::close(wr.as_raw_fd());
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let mut b = [0u8; 1];
            // Block until main has written the maps and opened the namespace (EOF).
            libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    drop(rd);
    let result = (|| -> Result<OwnedFd> {
        let own = std::fs::read_link("/proc/self/ns/user").ctx(|| "read own userns".into())?;
        let ns = format!("/proc/{child}/ns/user");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&ns).ok().as_ref() == Some(&own) {
            if Instant::now() > deadline {
                return Err(RuntimeError::Timeout("user namespace helper"));
            }
            std::thread::yield_now();
        }
        let map = format!("0 {host_id} {USERNS_SIZE}\n");
        for f in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{child}/{f}"), &map).ctx(|| format!("write {f}"))?;
        }
        open_cloexec(Path::new(&ns), false)
    })();
    drop(wr);
    let mut st = 0;
    // SAFETY: reaping our own helper child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    result
}

/// Undo a half-made container on any error path of `create`.
struct CreateGuard<'a> {
    rt: &'a LinuxRuntime,
    dir: PathBuf,
    cgroup: Option<String>,
    supervisor: Option<i32>,
    init: Option<i32>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.init {
            // SAFETY: kill(2) on a pid we forked (still unreaped through the supervisor).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(sup) = self.supervisor {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(sup, libc::SIGKILL) };
            let mut st = 0;
            // SAFETY: blocking waitpid on our own child.
            unsafe { libc::waitpid(sup, &mut st, 0) };
        }
        if let Some(cg) = &self.cgroup {
            if let Err(err) = self.rt.cgroups.destroy(cg) {
                tracing::error!(?err, cgroup = cg, "cleanup of a failed create");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl LinuxRuntime {
    /// Detect the cgroup layout, compile the seccomp profile, create the state dir.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        let cgroups = cgroups::detect()?;
        Self::with_cgroups(config, cgroups)
    }

    /// Like [`LinuxRuntime::new`] with an explicit cgroup manager.
    pub fn with_cgroups(config: RuntimeConfig, cgroups: Box<dyn CgroupManager>) -> Result<Self> {
        cgroups::check_rel(&config.cgroup_parent)?;
        overlay_safe(&config.state_dir)?;
        let (c, s) = state::dirs(&config.state_dir);
        for d in [&c, &s] {
            std::fs::create_dir_all(d).ctx(|| format!("create {}", d.display()))?;
        }
        Ok(Self {
            config,
            cgroups,
            seccomp: seccomp::compile_default()?,
            pending: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The cgroup manager in use ("v1" or "v2" via `version()`).
    pub fn cgroup_manager(&self) -> &dyn CgroupManager {
        self.cgroups.as_ref()
    }

    fn container_dir(&self, id: &ContainerId) -> PathBuf {
        state::dirs(&self.config.state_dir).0.join(id.as_str())
    }

    fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        state::dirs(&self.config.state_dir).1.join(id.as_str())
    }

    fn pod_cgroup(&self, id: &SandboxId) -> String {
        format!("{}/pod-{}", self.config.cgroup_parent, id)
    }

    /// Undo whatever part of `create_sandbox` happened (a failed create, or one an agent crash
    /// interrupted before `sandbox.json` was written): namespace bind mounts, the dir, and the
    /// pod cgroup (destroying it kills a pid holder that was already started).
    fn discard_half_made_sandbox(&self, id: &SandboxId) -> Result<()> {
        let dir = self.sandbox_dir(id);
        for (name, _) in SANDBOX_NS {
            match nix::mount::umount2(&dir.join(name), MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e).ctx(|| format!("umount {name} namespace")),
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx(|| format!("remove {}", dir.display())),
        }
        self.cgroups.destroy(&self.pod_cgroup(id))?;
        Ok(())
    }

    fn load(&self, id: &ContainerId) -> Result<PersistedContainer> {
        state::read_json(&self.container_dir(id).join("state.json"))?
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    fn save(&self, st: &PersistedContainer) -> Result<()> {
        state::write_json(&self.container_dir(&st.id).join("state.json"), st)
    }

    fn exit_status(&self, st: &PersistedContainer) -> Result<Option<ExitStatus>> {
        let rec: Option<ExitRecord> =
            state::read_json(&self.container_dir(&st.id).join("exit.json"))?;
        Ok(rec.map(|r| {
            let (code, signal) = match (r.signal, st.emulated_signal) {
                (Some(libc::SIGKILL), Some(s)) => (128 + s, Some(s)),
                _ => (r.code, r.signal),
            };
            ExitStatus {
                code,
                signal,
                oom_killed: self.cgroups.oom_kills(&st.cgroup).unwrap_or(0) > 0,
            }
        }))
    }

    fn status_of(&self, st: &PersistedContainer) -> Result<ContainerStatus> {
        if let Some(s) = self.exit_status(st)? {
            reap(st.supervisor_pid);
            return Ok(ContainerStatus::Exited(s));
        }
        if pid_start_time(st.supervisor_pid) == Some(st.supervisor_start) {
            // a zombie supervisor has exited: look again for its record
            if let Some(s) = self.exit_status(st)? {
                return Ok(ContainerStatus::Exited(s));
            }
            return Ok(if st.started {
                ContainerStatus::Running
            } else {
                ContainerStatus::Created
            });
        }
        Ok(ContainerStatus::Unknown)
    }

    fn build_plan(
        &self,
        spec: &ContainerSpec,
        dir: &Path,
        fds: &CreateFds,
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
    ) -> Result<InitPlan> {
        let caps = capabilities::plan(&spec.capabilities, spec.privileged, uid)?;
        let mut mounts = Vec::new();
        let mut etc = |name: &str, content: Option<&str>| -> Result<()> {
            if let Some(c) = content {
                let src = dir.join(format!("etc-{name}"));
                std::fs::write(&src, c).ctx(|| format!("write {}", src.display()))?;
                mounts.push(BindMount {
                    source: src,
                    destination: PathBuf::from(format!("/etc/{name}")),
                    read_only: false,
                    is_file: true,
                });
            }
            Ok(())
        };
        let hostname = match &spec.sandbox {
            Some(_) => None,
            None => Some(
                spec.hostname
                    .clone()
                    .unwrap_or_else(|| spec.id.as_str().chars().take(63).collect()),
            ),
        };
        let etc_hostname = match (&hostname, &fds.sandbox_hostname) {
            (Some(h), _) | (None, Some(h)) => Some(format!("{h}\n")),
            _ => None,
        };
        etc("hostname", etc_hostname.as_deref())?;
        etc("hosts", spec.etc_hosts.as_deref())?;
        etc("resolv.conf", spec.resolv_conf.as_deref())?;
        for m in &spec.mounts {
            mounts.push(BindMount {
                source: m.source.clone(),
                destination: m.destination.clone(),
                read_only: m.read_only,
                is_file: !m.source.is_dir(),
            });
        }
        let mut env = spec.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        let cmd = &spec.command[0];
        let exec_candidates = if cmd.contains('/') {
            vec![PathBuf::from(cmd)]
        } else {
            path_var
                .split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| Path::new(d).join(cmd))
                .collect()
        };
        let cstrings = |v: &mut dyn Iterator<Item = &String>| -> Result<Vec<CString>> {
            v.map(|s| CString::new(s.as_bytes()).map_err(|_| invalid("NUL byte")))
                .collect()
        };
        let mut unshare = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP;
        if spec.sandbox.is_none() {
            unshare |=
                CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
        }
        let rlimits = spec
            .rlimits
            .iter()
            .map(|r| {
                let mut cur = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: valid out pointer.
                unsafe { libc::getrlimit(r.resource.raw(), &mut cur) };
                let hard = r.hard.min(cur.rlim_max);
                (r.resource.raw(), r.soft.min(hard), hard)
            })
            .collect();
        let (masked_paths, readonly_paths) = if spec.privileged {
            (vec![], vec![])
        } else {
            (
                rootfs::DEFAULT_MASKED_PATHS
                    .iter()
                    .map(PathBuf::from)
                    .collect(),
                rootfs::DEFAULT_READONLY_PATHS
                    .iter()
                    .map(PathBuf::from)
                    .collect(),
            )
        };
        let seccomp = match (spec.seccomp, spec.privileged) {
            (SeccompProfile::RuntimeDefault, false) => self.seccomp.filters.clone(),
            _ => Vec::new(),
        };
        Ok(InitPlan {
            cgroup_procs_fds: fds.procs.iter().map(|f| f.as_raw_fd()).collect(),
            join_ns: fds.ns.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect(),
            unshare,
            hostname,
            rootfs: dir.join("rootfs"),
            overlay_data: rootfs::overlay_data(
                &spec.lower_dirs,
                &dir.join("upper"),
                &dir.join("work"),
            ),
            mounts,
            masked_paths,
            readonly_paths,
            readonly_root: spec.read_only_rootfs,
            rlimits,
            argv: cstrings(&mut spec.command.iter().chain(&spec.args))?,
            env: cstrings(&mut env.iter())?,
            confinement: Confinement {
                sync_fd: fds.sync_child.as_raw_fd(),
                userns_fd: fds.userns.as_ref().map(|f| f.as_raw_fd()),
                landlock: spec.landlock.clone(),
                no_new_privs: spec.no_new_privs,
                seccomp,
                caps,
                uid,
                gid,
                groups,
                cwd: spec.cwd.clone().unwrap_or_else(|| PathBuf::from("/")),
                stdio: [
                    fds.devnull.as_raw_fd(),
                    fds.stdout.as_raw_fd(),
                    fds.stderr.as_raw_fd(),
                ],
                exec_candidates,
            },
        })
    }
}

/// Fds main opens before the fork (all `O_CLOEXEC`).
struct CreateFds {
    sync_child: OwnedFd,
    procs: Vec<OwnedFd>,
    ns: Vec<(OwnedFd, CloneFlags)>,
    devnull: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    sandbox_hostname: Option<String>,
    userns: Option<OwnedFd>,
}

impl Runtime for LinuxRuntime {
    fn create_sandbox(&self, spec: &SandboxSpec) -> Result<()> {
        let dir = self.sandbox_dir(&spec.id);
        if dir.join("sandbox.json").exists() {
            return Err(RuntimeError::AlreadyExists {
                kind: "sandbox",
                id: spec.id.to_string(),
            });
        }
        if dir.exists() {
            // `sandbox.json` is written last: a dir without it is what an agent killed during
            // an earlier create left. It would block this pod forever; discard it and start over.
            tracing::warn!(sandbox = %spec.id, "discarding a half-made sandbox from an interrupted create");
            self.discard_half_made_sandbox(&spec.id)?;
        }
        if spec.hostname.is_empty() || spec.hostname.len() > 64 {
            return Err(invalid(format!("bad hostname {:?}", spec.hostname)));
        }
        std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let cgroup = self.pod_cgroup(&spec.id);
        let mut res = spec.resources.clone();
        res.pids_limit = res.pids_limit.or(self.config.default_pids_limit);
        let holder = Mutex::new(None::<i32>);
        let result = (|| -> Result<()> {
            self.cgroups.create(&cgroup, &res)?;
            for (name, _) in SANDBOX_NS {
                File::create(dir.join(name)).ctx(|| format!("create ns file {name}"))?;
            }
            // A short-lived thread creates the namespaces and pins them with bind mounts (like
            // `ip netns add`): no pause process.
            let hostname = spec.hostname.clone();
            let d = dir.clone();
            let host_network = spec.host_network;
            std::thread::spawn(move || -> Result<()> {
                // hostNetwork: the bind mount below pins the caller's (the node's) netns.
                let net = if host_network {
                    CloneFlags::empty()
                } else {
                    CloneFlags::CLONE_NEWNET
                };
                nix::sched::unshare(net | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
                    .ctx(|| "unshare sandbox namespaces".into())?;
                nix::unistd::sethostname(&hostname).ctx(|| "sethostname".into())?;
                if !host_network {
                    loopback_up().ctx(|| "bring up lo".into())?;
                }
                for (name, _) in SANDBOX_NS {
                    let src = PathBuf::from(format!("/proc/thread-self/ns/{name}"));
                    nix::mount::mount(
                        Some(&src),
                        &d.join(name),
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .ctx(|| format!("bind mount {name} namespace"))?;
                }
                Ok(())
            })
            .join()
            .map_err(|_| RuntimeError::Channel("sandbox thread panicked".into()))??;
            let pid_holder = if spec.share_pid {
                let pid = spawn_pid_holder()?;
                *holder.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
                // in the pod cgroup, so removing the pod kills it too
                for f in self.cgroups.procs_files(&cgroup) {
                    std::fs::write(&f, pid.to_string()).ctx(|| format!("write {}", f.display()))?;
                }
                Some((pid, pid_start_time(pid).unwrap_or_default()))
            } else {
                None
            };
            state::write_json(
                &dir.join("sandbox.json"),
                &PersistedSandbox {
                    id: spec.id.clone(),
                    hostname: spec.hostname.clone(),
                    cgroup: cgroup.clone(),
                    pid_holder,
                },
            )
        })();
        if let Err(err) = result {
            tracing::error!(?err, sandbox = %spec.id, "create_sandbox failed; cleaning up");
            if let Some(pid) = *holder.lock().unwrap_or_else(|p| p.into_inner()) {
                // SAFETY: kill(2) on the holder we just started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.discard_half_made_sandbox(&spec.id);
            return Err(err);
        }
        Ok(())
    }

    fn remove_sandbox(&self, id: &SandboxId) -> Result<()> {
        let dir = self.sandbox_dir(id);
        let Some(sb) = state::read_json::<PersistedSandbox>(&dir.join("sandbox.json"))? else {
            if dir.exists() {
                // Left by a create that an agent crash interrupted: nothing ran in it.
                return self.discard_half_made_sandbox(id);
            }
            return Err(RuntimeError::SandboxNotFound(id.to_string()));
        };
        for c in self.list()? {
            if c.sandbox.as_ref() == Some(id) {
                self.delete(&c.id)?;
            }
        }
        if let Some(fd) = sb
            .pid_holder
            .and_then(|(pid, start)| pidfd_open(pid, start))
        {
            // SAFETY: pidfd_send_signal with a valid pidfd.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            poll_pidfd(&fd, Some(Duration::from_secs(5)));
        }
        for (name, _) in SANDBOX_NS {
            match nix::mount::umount2(&dir.join(name), MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e).ctx(|| format!("umount {name} namespace")),
            }
        }
        std::fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))?;
        self.cgroups.destroy(&sb.cgroup)?;
        Ok(())
    }

    fn create(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        validate(spec)?;
        let (uid, gid, groups) = resolve_user(spec)?;
        if !spec.host_users
            && (uid >= USERNS_SIZE
                || gid >= USERNS_SIZE
                || groups.iter().any(|g| *g >= USERNS_SIZE))
        {
            return Err(invalid(format!(
                "with hostUsers: false, uid/gid/groups must be below {USERNS_SIZE}"
            )));
        }
        capabilities::plan(&spec.capabilities, spec.privileged, uid)?;
        if let Some(ll) = &spec.landlock {
            crate::landlock::check(ll, crate::landlock::kernel_abi())?;
        }
        let sandbox = match &spec.sandbox {
            Some(sid) => Some(
                state::read_json::<PersistedSandbox>(&self.sandbox_dir(sid).join("sandbox.json"))?
                    .ok_or_else(|| RuntimeError::SandboxNotFound(sid.to_string()))?,
            ),
            None => None,
        };
        let dir = self.container_dir(&spec.id);
        if let Err(e) = std::fs::create_dir(&dir) {
            return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                RuntimeError::AlreadyExists {
                    kind: "container",
                    id: spec.id.to_string(),
                }
            } else {
                RuntimeError::Io {
                    context: format!("create {}", dir.display()),
                    source: e,
                }
            });
        }
        let mut guard = CreateGuard {
            rt: self,
            dir: dir.clone(),
            cgroup: None,
            supervisor: None,
            init: None,
            armed: true,
        };
        for d in ["rootfs", "upper", "work"] {
            std::fs::create_dir(dir.join(d)).ctx(|| format!("create {d}"))?;
        }
        let cgroup = match &sandbox {
            Some(sb) => format!("{}/{}", sb.cgroup, spec.id),
            None => format!("{}/{}", self.config.cgroup_parent, spec.id),
        };
        let mut res: Resources = spec.resources.clone();
        if sandbox.is_none() {
            res.pids_limit = res.pids_limit.or(self.config.default_pids_limit);
        }
        guard.cgroup = Some(cgroup.clone());
        self.cgroups.create(&cgroup, &res)?;
        let (sync_main, sync_child) = channel::pair()?;
        let mut ns = Vec::new();
        if let Some(sb) = &sandbox {
            for (name, flag) in SANDBOX_NS {
                ns.push((
                    open_cloexec(&self.sandbox_dir(&sb.id).join(name), false)?,
                    flag,
                ));
            }
        }
        let fds = CreateFds {
            sync_child,
            procs: self
                .cgroups
                .procs_files(&cgroup)
                .iter()
                .map(|p| open_cloexec(p, true))
                .collect::<Result<_>>()?,
            ns,
            devnull: open_cloexec(Path::new("/dev/null"), true)?,
            stdout: open_log(spec.stdout_path.as_deref())?,
            stderr: open_log(spec.stderr_path.as_deref())?,
            sandbox_hostname: sandbox.as_ref().map(|s| s.hostname.clone()),
            userns: if spec.host_users {
                None
            } else {
                Some(create_userns(
                    spec.userns_host_id.unwrap_or(self.config.userns_host_id),
                )?)
            },
        };
        let pidns = match (&sandbox, spec.share_process_namespace) {
            (Some(sb), true) => {
                let (pid, start) = sb.pid_holder.ok_or_else(|| {
                    invalid("shareProcessNamespace needs a sandbox created with share_pid")
                })?;
                let _pin = pidfd_open(pid, start)
                    .ok_or_else(|| RuntimeError::Channel("pod pid namespace is gone".into()))?;
                Some(open_cloexec(
                    Path::new(&format!("/proc/{pid}/ns/pid")),
                    false,
                )?)
            }
            _ => None,
        };
        let plan = self.build_plan(spec, &dir, &fds, uid, gid, groups)?;
        state::write_json(
            &dir.join("exec.json"),
            &ExecContext {
                caps: plan.confinement.caps,
                uid: plan.confinement.uid,
                gid: plan.confinement.gid,
                groups: plan.confinement.groups.clone(),
                no_new_privs: plan.confinement.no_new_privs,
                seccomp: !plan.confinement.seccomp.is_empty(),
                landlock: plan.confinement.landlock.clone(),
                env: plan
                    .env
                    .iter()
                    .map(|e| e.to_string_lossy().into_owned())
                    .collect(),
                cwd: plan.confinement.cwd.clone(),
                rlimits: plan.rlimits.clone(),
                host_users: spec.host_users,
            },
        )?;
        let supervisor = spawn_supervisor(&SpawnRequest {
            plan: &plan,
            join_pidns: pidns.as_ref().map(|f| f.as_raw_fd()),
            devnull: fds.devnull.as_raw_fd(),
            exit_file: dir.join("exit.json"),
        })?;
        guard.supervisor = Some(supervisor);
        drop(fds);
        drop(pidns);
        let chan = MainChannel { fd: sync_main };
        let deadline = Instant::now() + self.config.init_timeout;
        let mut init_pid = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match chan.recv_timeout(left)? {
                Some(SyncMsg::SupervisorReady { init_pid: p }) => {
                    init_pid = Some(p);
                    guard.init = Some(p);
                }
                Some(SyncMsg::InitReady) if init_pid.is_some() => break,
                Some(SyncMsg::InitReady) => {
                    // init can be faster than the supervisor's report
                    match chan.recv_timeout(left)? {
                        Some(SyncMsg::SupervisorReady { init_pid: p }) => {
                            init_pid = Some(p);
                            guard.init = Some(p);
                            break;
                        }
                        other => return Err(channel::unexpected("SupervisorReady", other)),
                    }
                }
                other => return Err(channel::unexpected("InitReady", other)),
            }
        }
        let pid = init_pid.unwrap_or_default();
        let st = PersistedContainer {
            id: spec.id.clone(),
            sandbox: spec.sandbox.clone(),
            pid,
            pid_start: pid_start_time(pid).unwrap_or_default(),
            supervisor_pid: supervisor,
            supervisor_start: pid_start_time(supervisor).unwrap_or_default(),
            cgroup,
            started: false,
            emulated_signal: None,
            created_unix_ms: now_ms(),
            labels: spec.labels.clone(),
        };
        self.save(&st)?;
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.id.clone(), chan);
        guard.armed = false;
        Ok(spec.id.clone())
    }

    fn start(&self, id: &ContainerId) -> Result<()> {
        let mut st = self.load(id)?;
        let chan = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let Some(chan) = chan else {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state: if st.started {
                    "started".into()
                } else {
                    "created by an earlier runtime instance".into()
                },
                needed: "created by this instance",
            });
        };
        chan.send(&SyncMsg::Start)?;
        // EOF: the O_CLOEXEC sync socket closed in execve, the command runs.
        match chan.recv_timeout(self.config.init_timeout)? {
            None => {}
            other => return Err(channel::unexpected("EOF after exec", other)),
        }
        st.started = true;
        self.save(&st)
    }

    fn signal(&self, id: &ContainerId, signal: i32) -> Result<()> {
        let mut st = self.load(id)?;
        let Some(pidfd) = pidfd_open(st.pid, st.pid_start) else {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state: "exited".into(),
                needed: "running",
            });
        };
        let mut sig = signal;
        // The command is pid 1: the kernel drops default-action signals sent to it. Emulate
        // the default action (terminate) so kill/SIGTERM behaves like outside a container.
        if DEFAULT_FATAL.contains(&signal) && is_ns_init(st.pid) && !handles_signal(st.pid, signal)
        {
            sig = libc::SIGKILL;
            st.emulated_signal = Some(signal);
            self.save(&st)?;
        }
        // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(RuntimeError::Io {
                context: format!("signal {signal} to container {id}"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn wait(&self, id: &ContainerId, timeout: Option<Duration>) -> Result<ExitStatus> {
        let st = self.load(id)?;
        if let Some(s) = self.exit_status(&st)? {
            reap(st.supervisor_pid);
            return Ok(s);
        }
        if let Some(fd) = pidfd_open(st.supervisor_pid, st.supervisor_start) {
            if !poll_pidfd(&fd, timeout) {
                return Err(RuntimeError::Timeout("container exit"));
            }
            reap(st.supervisor_pid);
        }
        self.exit_status(&st)?.ok_or_else(|| RuntimeError::State {
            path: self.container_dir(id).join("exit.json"),
            message: "the supervisor died without recording an exit status".into(),
        })
    }

    fn try_wait(&self, id: &ContainerId) -> Result<Option<ExitStatus>> {
        let st = self.load(id)?;
        let s = self.exit_status(&st)?;
        if s.is_some() {
            reap(st.supervisor_pid);
        }
        Ok(s)
    }

    fn delete(&self, id: &ContainerId) -> Result<()> {
        let st = self.load(id)?;
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(fd) = pidfd_open(st.pid, st.pid_start) {
            // SAFETY: pidfd_send_signal with a valid pidfd.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
        self.cgroups
            .kill_all(&st.cgroup, Duration::from_secs(10))
            .or_else(|e| match e {
                cgroups::CgroupError::Io { ref source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(())
                }
                e => Err(e),
            })?;
        if let Some(fd) = pidfd_open(st.supervisor_pid, st.supervisor_start) {
            if !poll_pidfd(&fd, Some(Duration::from_secs(10))) {
                return Err(RuntimeError::Timeout("supervisor exit"));
            }
        }
        reap(st.supervisor_pid);
        self.cgroups.destroy(&st.cgroup)?;
        let dir = self.container_dir(id);
        std::fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<ContainerState>> {
        let (cdir, _) = state::dirs(&self.config.state_dir);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&cdir).ctx(|| format!("list {}", cdir.display()))? {
            let e = e.ctx(|| "read dir entry".into())?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(id) = ContainerId::new(name) else {
                continue;
            };
            match self.state(&id) {
                Ok(s) => out.push(s),
                // a create in progress or a half-deleted dir
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn state(&self, id: &ContainerId) -> Result<ContainerState> {
        let st = self.load(id)?;
        Ok(ContainerState {
            id: st.id.clone(),
            sandbox: st.sandbox.clone(),
            pid: st.pid,
            status: self.status_of(&st)?,
            created_unix_ms: st.created_unix_ms,
            labels: st.labels.clone(),
        })
    }

    fn sandbox_netns(&self, id: &SandboxId) -> Option<PathBuf> {
        Some(self.sandbox_dir(id).join("net"))
    }

    /// Sandboxes whose creation completed (`sandbox.json` is written last; a failed create
    /// removes its dir).
    fn list_sandboxes(&self) -> Result<Vec<SandboxId>> {
        let (_, sdir) = state::dirs(&self.config.state_dir);
        let rd = match std::fs::read_dir(&sdir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx(|| format!("list {}", sdir.display())),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.ctx(|| "read dir entry".into())?;
            let Some(id) = e.file_name().to_str().and_then(|n| SandboxId::new(n).ok()) else {
                continue;
            };
            if e.path().join("sandbox.json").is_file() {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    fn sandbox_exists(&self, id: &SandboxId) -> Result<bool> {
        Ok(self.sandbox_dir(id).join("sandbox.json").is_file())
    }

    fn exec(&self, id: &ContainerId, spec: ExecSpec) -> Result<ExecProcess> {
        let st = self.load(id)?;
        if spec.command.is_empty() || spec.command[0].is_empty() {
            return Err(invalid("exec needs a command"));
        }
        let not_running = |state: &str| RuntimeError::InvalidState {
            id: id.to_string(),
            state: state.into(),
            needed: "running",
        };
        if !st.started {
            return Err(not_running("created"));
        }
        let dir = self.container_dir(id);
        let ctx: ExecContext = state::read_json(&dir.join("exec.json"))?
            .ok_or_else(|| not_running("created by a runtime without exec support"))?;
        // Pin init: the namespace files are opened while it is known to be the container's.
        let _pin = pidfd_open(st.pid, st.pid_start).ok_or_else(|| not_running("exited"))?;
        let proc_ns =
            |name: &str| open_cloexec(Path::new(&format!("/proc/{}/ns/{name}", st.pid)), false);
        let mut ns = Vec::new();
        for (name, flag) in EXEC_NAMESPACES {
            ns.push((proc_ns(name)?, flag));
        }
        let userns = if ctx.host_users {
            None
        } else {
            Some(proc_ns("user")?)
        };
        if pid_start_time(st.pid) != Some(st.pid_start) {
            return Err(not_running("exited"));
        }
        let procs = self
            .cgroups
            .procs_files(&st.cgroup)
            .iter()
            .map(|p| open_cloexec(p, true))
            .collect::<Result<Vec<_>>>()?;
        let devnull = open_cloexec(Path::new("/dev/null"), true)?;
        let (sync_main, sync_child) = channel::pair()?;
        let path_var = ctx
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let cmd = &spec.command[0];
        let exec_candidates = if cmd.contains('/') {
            check_container_path("exec command", Path::new(cmd))?;
            vec![PathBuf::from(cmd)]
        } else {
            path_var
                .split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| Path::new(d).join(cmd))
                .collect()
        };
        let cstrings = |v: &[String]| -> Result<Vec<CString>> {
            v.iter()
                .map(|s| CString::new(s.as_bytes()).map_err(|_| invalid("NUL byte")))
                .collect()
        };
        let stdin = spec.stdin.as_ref().map(|f| f.as_raw_fd());
        let plan = ExecPlan {
            cgroup_procs_fds: procs.iter().map(|f| f.as_raw_fd()).collect(),
            join_ns: ns.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect(),
            rlimits: ctx.rlimits.clone(),
            argv: cstrings(&spec.command)?,
            env: cstrings(&ctx.env)?,
            confinement: Confinement {
                sync_fd: sync_child.as_raw_fd(),
                userns_fd: userns.as_ref().map(|f| f.as_raw_fd()),
                landlock: ctx.landlock.clone(),
                no_new_privs: ctx.no_new_privs,
                seccomp: if ctx.seccomp {
                    self.seccomp.filters.clone()
                } else {
                    Vec::new()
                },
                caps: ctx.caps,
                uid: ctx.uid,
                gid: ctx.gid,
                groups: ctx.groups.clone(),
                cwd: ctx.cwd.clone(),
                stdio: [
                    stdin.unwrap_or(devnull.as_raw_fd()),
                    spec.stdout.as_raw_fd(),
                    spec.stderr.as_raw_fd(),
                ],
                exec_candidates,
            },
        };
        let pid = spawn_exec(&plan, devnull.as_raw_fd())?;
        let pidfd = pidfd_open(pid, pid_start_time(pid).unwrap_or_default());
        // The children hold their copies now; main keeps only its end of the sync socket.
        drop((sync_child, procs, ns, userns, devnull, spec));
        let chan = MainChannel { fd: sync_main };
        match chan.recv_timeout(self.config.init_timeout) {
            // EOF: the command was exec'd
            Ok(None) => Ok(ExecProcess::running(pid, pidfd)),
            other => {
                let mut p = ExecProcess::running(pid, pidfd);
                if other.is_err() {
                    p.killer().kill();
                }
                let _ = p.wait();
                Err(match other {
                    Ok(msg) => channel::unexpected("exec", msg),
                    Err(e) => e,
                })
            }
        }
    }

    fn stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        let st = self.load(id)?;
        Ok(self.cgroups.stats(&st.cgroup)?)
    }
}
