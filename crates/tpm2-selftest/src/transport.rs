//! Moving one TPM command to the TPM and its response back, within a
//! deadline.
//!
//! - [`DeviceTransport`]: a TPM character device (`/dev/tpmrm0`, `/dev/tpm0`),
//!   the way the Linux driver wants it used: one `write()` per command,
//!   `poll()`, one `read()` per response.
//! - [`SocketTransport`]: swtpm's raw command socket (`--server type=unixio`),
//!   for tests and for software TPMs.
//!
//! A transport only frames bytes; [`super::proto`] validates what comes back.

mod device;
mod error;
mod socket;

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

pub use device::DeviceTransport;
pub use error::TransportError;
pub use socket::SocketTransport;

/// Sends one command and returns the one response to it.
pub trait Transport {
    /// Sends `command` (a whole TPM command, header included) and returns the
    /// whole response, or an error once `deadline` has passed.
    ///
    /// After an error — a timeout in particular — the TPM may still answer
    /// later; drop the transport rather than reuse it.
    fn transact(&mut self, command: &[u8], deadline: Instant) -> Result<Vec<u8>, TransportError>;
}

/// Time left until `deadline`, or `None` if it has passed.
pub(crate) fn time_left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

/// Waits until `fd` is ready for `events` or `deadline` passes, and returns
/// the events that occurred. `poll()` is used rather than socket timeouts
/// because its timer is precise to the millisecond, so the deadline holds.
fn wait_until_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Instant,
    op: &'static str,
) -> Result<PollFlags, TransportError> {
    loop {
        let Some(left) = time_left(deadline) else {
            return Err(TransportError::Timeout {
                allowed: Duration::ZERO,
            });
        };
        // Round up so a sub-millisecond remainder still waits instead of
        // spinning with a zero timeout.
        let millis = left.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, events)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(fds[0].revents().unwrap_or(PollFlags::empty())),
            Err(errno) => {
                return Err(TransportError::Io {
                    op,
                    source: errno.into(),
                })
            }
        }
    }
}

/// Rewrites a timeout from deep inside a transaction so it says how long the
/// caller allowed, measured from the start of the transaction.
fn with_allowed_time<T>(
    result: Result<T, TransportError>,
    started: Instant,
    deadline: Instant,
) -> Result<T, TransportError> {
    result.map_err(|err| match err {
        TransportError::Timeout { .. } => TransportError::Timeout {
            allowed: deadline.saturating_duration_since(started),
        },
        other => other,
    })
}
