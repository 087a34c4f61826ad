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

use std::time::{Duration, Instant};

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
