//! A child process in a test cgroup, shared by the cgroup v1 and v2 tests.

use std::ffi::CString;
use std::os::fd::AsRawFd;

use devcgroup::ContainerCgroup;
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult};

/// Forks a child, moves it into `cg` with [`ContainerCgroup::join`], calls
/// `inspect` with its pid while it sits there, then has it open `path`
/// read-write. Returns the child's `open()` result.
pub fn open_in(cg: &ContainerCgroup, path: &str, inspect: impl FnOnce(i32)) -> Result<(), Errno> {
    let cpath = CString::new(path).unwrap();
    let (rx, tx) = pipe().unwrap();
    // SAFETY: the child only makes async-signal-safe calls (read, open,
    // _exit) on data prepared before the fork.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => unsafe {
            let mut b = 0u8;
            libc::read(rx.as_raw_fd(), &mut b as *mut u8 as *mut libc::c_void, 1);
            let fd = libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            libc::_exit(if fd >= 0 {
                0
            } else {
                *libc::__errno_location()
            });
        },
        ForkResult::Parent { child } => {
            drop(rx);
            let joined = cg.join(child.as_raw());
            // Release the child before asserting anything, so a failed
            // check never leaves it blocked in the test cgroup.
            let inspected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if joined.is_ok() {
                    inspect(child.as_raw());
                }
            }));
            nix::unistd::write(&tx, b"x").unwrap();
            let status = waitpid(child, None).unwrap();
            joined.unwrap();
            if let Err(panic) = inspected {
                std::panic::resume_unwind(panic);
            }
            match status {
                WaitStatus::Exited(_, 0) => Ok(()),
                WaitStatus::Exited(_, code) => Err(Errno::from_raw(code)),
                other => panic!("child ended oddly: {other:?}"),
            }
        }
    }
}
