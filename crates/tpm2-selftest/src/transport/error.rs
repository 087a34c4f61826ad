//! What can go wrong between us and the TPM, worded for the person who has
//! to fix it.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::proto::{HEADER_SIZE, MAX_COMMAND_SIZE, MAX_RESPONSE_SIZE};

#[derive(Debug)]
pub enum TransportError {
    /// The device node or socket could not be opened.
    Open { path: PathBuf, source: io::Error },
    /// The path opened is not a character device, so it is not a TPM.
    NotCharDevice { path: PathBuf },
    /// A command larger than the driver accepts (E2BIG).
    CommandTooLarge { len: usize },
    /// The driver refused the command (EINVAL): its size field does not
    /// match the bytes written.
    CommandRejected { len: usize },
    /// EBUSY: a response on this descriptor is still unread, or the device
    /// is held by someone else.
    Busy,
    /// EPIPE / connection reset: the TPM (or its driver, or swtpm) is gone.
    Gone,
    /// The deadline passed before the whole response arrived.
    Timeout { allowed: Duration },
    /// `write()` accepted only part of the command.
    ShortWrite { written: usize, len: usize },
    /// The device signalled a response but `read()` returned nothing.
    NoResponse,
    /// The peer closed the connection before sending a whole response.
    Closed { received: usize },
    /// A response header whose size field cannot be a TPM response.
    BadResponseSize { size: u32 },
    /// Any other system-call failure.
    Io { op: &'static str, source: io::Error },
}

impl TransportError {
    /// Maps an errno from writing a command to the error that explains it.
    pub(super) fn from_write(source: io::Error, len: usize) -> Self {
        match source.raw_os_error() {
            Some(libc::E2BIG) => Self::CommandTooLarge { len },
            Some(libc::EINVAL) => Self::CommandRejected { len },
            Some(libc::EBUSY) => Self::Busy,
            Some(libc::EPIPE | libc::ECONNRESET) => Self::Gone,
            _ => Self::Io {
                op: "sending the command to the TPM",
                source,
            },
        }
    }

    /// Maps an errno from reading a response.
    pub(super) fn from_read(source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPIPE | libc::ECONNRESET) => Self::Gone,
            _ => Self::Io {
                op: "reading the TPM's response",
                source,
            },
        }
    }

    /// The errno behind this error, when there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Open { source, .. } | Self::Io { source, .. } => source.raw_os_error(),
            Self::CommandTooLarge { .. } => Some(libc::E2BIG),
            Self::CommandRejected { .. } => Some(libc::EINVAL),
            Self::Busy => Some(libc::EBUSY),
            Self::Gone => Some(libc::EPIPE),
            Self::Timeout { .. } => Some(libc::ETIMEDOUT),
            _ => None,
        }
    }
}

/// What to check when opening a TPM node fails, by errno.
fn open_hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::ENOENT) => "no such device node",
        Some(libc::EACCES) => {
            "the node must be readable and writable by this user: is the user \
             in the node's group (usually tss)?"
        }
        Some(libc::EPERM) => "the device cgroup (or an LSM) does not allow this device",
        Some(libc::EBUSY) => {
            "another process holds it; /dev/tpm0 allows one user at a time, \
             /dev/tpmrm0 many"
        }
        Some(libc::ENXIO | libc::ENODEV) => "no TPM driver is bound to this device number",
        _ => "",
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { path, source } => {
                write!(f, "cannot open {}: {source}", path.display())?;
                match open_hint(source) {
                    "" => Ok(()),
                    hint => write!(f, " ({hint})"),
                }
            }
            Self::NotCharDevice { path } => write!(
                f,
                "{} is not a character device, so it is not a TPM",
                path.display()
            ),
            Self::CommandTooLarge { len } => write!(
                f,
                "command of {len} bytes is larger than the {MAX_COMMAND_SIZE}-byte \
                 maximum (E2BIG)"
            ),
            Self::CommandRejected { len } => write!(
                f,
                "the TPM driver rejected the {len}-byte command (EINVAL): its \
                 size field does not match the bytes written"
            ),
            Self::Busy => f.write_str(
                "TPM device busy (EBUSY): a previous response on this file \
                 descriptor is unread, or another process holds the device",
            ),
            Self::Gone => f.write_str(
                "TPM went away (EPIPE): the chip, its driver or the emulator \
                 is gone; check the host's dmesg",
            ),
            // Rounded up: a deadline 299.6 ms away reads as "300 ms".
            Self::Timeout { allowed } => write!(
                f,
                "no response within {} ms",
                allowed.as_micros().div_ceil(1000)
            ),
            Self::ShortWrite { written, len } => write!(
                f,
                "the TPM driver took only {written} of the command's {len} bytes"
            ),
            Self::NoResponse => {
                f.write_str("the TPM driver signalled a response but returned no bytes")
            }
            Self::Closed { received } => write!(
                f,
                "the TPM closed the connection after {received} bytes of the \
                 response"
            ),
            Self::BadResponseSize { size } => write!(
                f,
                "the response header announces {size} bytes; a TPM response \
                 has {HEADER_SIZE} to {MAX_RESPONSE_SIZE}"
            ),
            Self::Io { op, source } => write!(f, "{op}: {source}"),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open { source, .. } | Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_errnos_map_to_named_errors() {
        let err = |errno| TransportError::from_write(io::Error::from_raw_os_error(errno), 20);
        assert!(matches!(err(libc::EBUSY), TransportError::Busy));
        assert!(matches!(err(libc::EPIPE), TransportError::Gone));
        assert!(matches!(
            err(libc::E2BIG),
            TransportError::CommandTooLarge { len: 20 }
        ));
        assert!(matches!(
            err(libc::EINVAL),
            TransportError::CommandRejected { len: 20 }
        ));
        assert!(matches!(err(libc::EIO), TransportError::Io { .. }));
        assert!(err(libc::EPIPE).to_string().contains("TPM went away"));
        assert!(err(libc::EBUSY).to_string().contains("EBUSY"));
    }

    #[test]
    fn timeout_says_how_long() {
        let err = TransportError::Timeout {
            allowed: Duration::from_millis(1500),
        };
        assert_eq!(err.to_string(), "no response within 1500 ms");
    }

    #[test]
    fn open_errors_carry_path_and_hint() {
        let err = TransportError::Open {
            path: "/dev/tpmrm0".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let msg = err.to_string();
        assert!(msg.starts_with("cannot open /dev/tpmrm0: "), "{msg}");
        assert!(msg.contains("device cgroup"), "{msg}");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }
}
