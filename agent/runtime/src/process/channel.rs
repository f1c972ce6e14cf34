//! Typed sync messages between main, supervisor and init over a `SOCK_SEQPACKET` socketpair
//! (one message per packet, JSON encoded, youki's `channel.rs` shape).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMsg {
    /// supervisor → main: init was forked, this is its host pid.
    SupervisorReady { init_pid: i32 },
    /// init → main: namespaces, rootfs and mounts are done; waiting for `Start`.
    InitReady,
    /// main → init: go on and exec.
    Start,
    /// supervisor or init → main: a setup step failed.
    Error { step: String, message: String },
    /// init → main: execve failed (the socket is `O_CLOEXEC`, so EOF means exec succeeded).
    ExecFailed(String),
}

const MAX_MSG: usize = 4096;

pub(crate) fn send_raw(fd: RawFd, msg: &SyncMsg) -> std::result::Result<(), Errno> {
    let buf = serde_json::to_vec(msg).map_err(|_| Errno::EINVAL)?;
    loop {
        // SAFETY: valid buffer; MSG_NOSIGNAL so a dead peer gives EPIPE, not SIGPIPE.
        let rc = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if rc >= 0 {
            return Ok(());
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    }
}

/// Receive one message; EOF is `ECONNRESET`.
pub(crate) fn recv_raw(fd: RawFd) -> std::result::Result<SyncMsg, Errno> {
    let mut buf = [0u8; MAX_MSG];
    loop {
        // SAFETY: valid buffer of MAX_MSG bytes.
        let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if rc > 0 {
            return serde_json::from_slice(&buf[..rc as usize]).map_err(|_| Errno::EBADMSG);
        }
        if rc == 0 {
            return Err(Errno::ECONNRESET);
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    }
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: (main end, child end).
pub(crate) fn pair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out array of two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(RuntimeError::Io {
            context: "socketpair".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Main's end of the channel.
#[derive(Debug)]
pub(crate) struct MainChannel {
    pub(crate) fd: OwnedFd,
}

impl MainChannel {
    /// Receive with a timeout; `Ok(None)` on EOF.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<Option<SyncMsg>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RuntimeError::Timeout("container init"));
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc =
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if rc < 0 {
                if Errno::last() == Errno::EINTR {
                    continue;
                }
                return Err(RuntimeError::Channel(format!("poll: {}", Errno::last())));
            }
            if rc == 0 {
                continue;
            }
            return match recv_raw(self.fd.as_raw_fd()) {
                Ok(m) => Ok(Some(m)),
                Err(Errno::ECONNRESET) => Ok(None),
                Err(e) => Err(RuntimeError::Channel(format!("recv: {e}"))),
            };
        }
    }

    pub(crate) fn send(&self, msg: &SyncMsg) -> Result<()> {
        send_raw(self.fd.as_raw_fd(), msg).map_err(|e| RuntimeError::Channel(format!("send: {e}")))
    }
}

/// Turn an unexpected message into an error.
pub(crate) fn unexpected(expected: &str, got: Option<SyncMsg>) -> RuntimeError {
    match got {
        Some(SyncMsg::Error { step, message }) => RuntimeError::InitFailed { step, message },
        Some(SyncMsg::ExecFailed(m)) => RuntimeError::ExecFailed(m),
        Some(other) => RuntimeError::Channel(format!("expected {expected}, got {other:?}")),
        None => RuntimeError::Channel(format!("expected {expected}, got EOF (child died)")),
    }
}
