//! Descriptors inherited from the caller. A deploy script may start safe-reload holding a
//! listening socket or a pipe without close-on-exec; every child (`nginx -t`, the shadow nginx,
//! the reload command) would inherit it. The shadow could then hold a socket of the caller's,
//! and a pipe kept open by a child makes the caller's `$(safe-reload ...)` wait for that child.
//! [`close_inherited_on_exec`] runs first thing in `main`: every descriptor above stderr is
//! marked close-on-exec, so safe-reload itself may still use them but no child gets them.

use std::os::fd::RawFd;

/// The first descriptor past stdin, stdout and stderr.
const FIRST: RawFd = 3;

/// Mark every open descriptor above 2 close-on-exec: `close_range(CLOSE_RANGE_CLOEXEC)` where
/// the kernel has it (Linux 5.11), else each descriptor `/proc/self/fd` lists. Best effort: a
/// descriptor that cannot be marked is left as it is.
pub fn close_inherited_on_exec() {
    if !close_range_cloexec() {
        for fd in listed() {
            mark(fd);
        }
    }
}

/// One system call for the whole range; false where the kernel does not know it.
fn close_range_cloexec() -> bool {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing; it only sets a flag on
    // descriptors of this process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            FIRST as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    r == 0
}

/// The descriptors above 2 that `/proc/self/fd` lists (the directory's own among them, which
/// is harmless to mark).
fn listed() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= FIRST)
        .collect()
}

/// Set `FD_CLOEXEC` on `fd`, keeping its other descriptor flags.
fn mark(fd: RawFd) {
    // SAFETY: F_GETFD/F_SETFD only read and set the descriptor flags; a closed or invalid
    // descriptor makes them fail with EBADF, which is ignored.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: reading the flags of a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    /// A pipe without close-on-exec, as a careless parent leaves one.
    fn leaky_pipe() -> [RawFd; 2] {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        fds
    }

    fn close(fds: [RawFd; 2]) {
        // SAFETY: closing the descriptors this test opened.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }

    #[test]
    fn the_proc_listing_fallback_marks_a_leaked_pipe() {
        let fds = leaky_pipe();
        assert!(!cloexec(fds[1]));
        for fd in listed() {
            mark(fd);
        }
        assert!(cloexec(fds[0]) && cloexec(fds[1]));
        close(fds);
    }

    #[test]
    fn close_range_or_the_fallback_marks_a_leaked_pipe_and_keeps_it_open() {
        let fds = leaky_pipe();
        close_inherited_on_exec();
        assert!(cloexec(fds[0]) && cloexec(fds[1]));
        // SAFETY: writing one byte to the pipe this test opened.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        close(fds);
    }
}
