//! The few POSIX calls std does not offer (poll, pipe, kill, non-blocking mode), and the
//! registry of the parent's pipe ends that every forked child closes.
//!
//! Why the registry: after `fork()` a child holds a copy of every descriptor. A child
//! that kept a copy of a worker's task pipe would keep that pipe open after the parent
//! died, and the worker would never learn that it is orphaned. So every pipe end the
//! parent keeps is registered here, and the at-fork hook closes them all in the child.
//! Slots are atomics, not a lock: the hook runs in a child where a thread of the parent
//! may have held any lock at the moment of the fork.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

pub(crate) use libc::{pollfd, POLLIN, POLLOUT};

const FORK_SLOTS: usize = 4096;
const FREE: i32 = -1;
static FORK_CLOSE: [AtomicI32; FORK_SLOTS] = [const { AtomicI32::new(FREE) }; FORK_SLOTS];

/// Records `fd` as one of the parent's pipe ends, to be closed in forked children.
/// Registration is best effort: with every slot taken, the fd is simply not closed there.
pub(crate) fn register_for_fork(fd: RawFd) {
    for slot in &FORK_CLOSE {
        if slot
            .compare_exchange(FREE, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

pub(crate) fn unregister_for_fork(fd: RawFd) {
    for slot in &FORK_CLOSE {
        if slot
            .compare_exchange(fd, FREE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// In a child right after `fork()`: closes the parent's registered pipe ends.
pub(crate) fn close_registered_after_fork() {
    for slot in &FORK_CLOSE {
        let fd = slot.swap(FREE, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: `fd` was registered as a descriptor the parent owned; in the child
            // nothing else refers to it (the parent's threads do not exist here and the
            // objects that own it are never dropped in the child, see `PoolFd`).
            unsafe { libc::close(fd) };
        }
    }
}

/// A pipe end the parent owns: registered for closing in forked children while open,
/// unregistered before it is closed.
#[derive(Debug)]
pub(crate) struct PoolFd(File);

impl PoolFd {
    /// Takes ownership of `fd`, which the caller registered with `register_for_fork`.
    ///
    /// # Safety
    /// `fd` must be an open descriptor that nothing else owns or closes.
    pub(crate) unsafe fn adopt(fd: RawFd) -> Self {
        PoolFd(File::from(OwnedFd::from_raw_fd(fd)))
    }

    pub(crate) fn file(&self) -> &File {
        &self.0
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Drop for PoolFd {
    fn drop(&mut self) {
        unregister_for_fork(self.0.as_raw_fd());
        // The `File` closes the descriptor right after.
    }
}

/// A pipe whose both ends are close-on-exec and non-blocking, registered for fork.
pub(crate) fn nonblocking_pipe() -> io::Result<(PoolFd, PoolFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for fd in fds {
        register_for_fork(fd);
    }
    // SAFETY: both descriptors were just created by pipe(2) and are owned by no one else.
    let ends = unsafe { (PoolFd::adopt(fds[0]), PoolFd::adopt(fds[1])) };
    for end in [&ends.0, &ends.1] {
        set_cloexec(end.raw())?;
        set_nonblocking(end.raw())?;
    }
    Ok(ends)
}

pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub(crate) fn pollfd(fd: RawFd, events: libc::c_short) -> pollfd {
    pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2), retried on EINTR; `None` waits forever.
pub(crate) fn poll(fds: &mut [pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let millis = match timeout {
        None => -1,
        // Rounded up, so that a deadline is never polled for in a busy loop of zeros.
        Some(timeout) => timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    };
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ready >= 0 {
            return Ok(ready as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends `signal` to process `pid`; a process that is already gone is not an error.
pub(crate) fn kill(pid: i32, signal: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill(2) takes plain integers; a positive pid names one process.
        unsafe { libc::kill(pid, signal) };
    }
}

pub(crate) use libc::{SIGKILL, SIGTERM};

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_pipe_is_registered_until_closed_and_polls_readable() {
        let (reader, writer) = nonblocking_pipe().unwrap();
        let registered = |fd: RawFd| {
            FORK_CLOSE
                .iter()
                .any(|slot| slot.load(Ordering::Acquire) == fd)
        };
        assert!(registered(reader.raw()) && registered(writer.raw()));
        let mut fds = [pollfd(reader.raw(), POLLIN)];
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
        writer.file().write_all(b"x").unwrap();
        assert_eq!(poll(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
        let mut byte = [0u8; 4];
        assert_eq!(reader.file().read(&mut byte).unwrap(), 1);
        let err = reader.file().read(&mut byte).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let writer_fd = writer.raw();
        drop(writer);
        assert!(!registered(writer_fd));
        assert_eq!(reader.file().read(&mut byte).unwrap(), 0, "EOF once closed");
    }
}
