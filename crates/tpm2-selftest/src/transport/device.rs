//! A TPM character device (`/dev/tpmrmN` or `/dev/tpmN`).
//!
//! The Linux driver's contract: one whole command per `write()`, one whole
//! response per `read()`, and at most one command in flight per open file.
//! The descriptor is non-blocking so that the deadline holds: `write()`
//! only queues the command, `poll(POLLIN)` waits for the response for as
//! long as the deadline allows, and `read()` fetches it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::PollFlags;

use super::{time_left, wait_until_ready, with_allowed_time, Transport, TransportError};
use crate::proto::{MAX_COMMAND_SIZE, MAX_RESPONSE_SIZE};

#[derive(Debug)]
pub struct DeviceTransport {
    fd: OwnedFd,
}

impl DeviceTransport {
    /// Opens a TPM device node read-write, non-blocking, close-on-exec and
    /// without making it a controlling terminal, and checks that it is a
    /// character device (checked on the open descriptor, so the answer is
    /// about the file actually opened).
    pub fn open(path: &Path) -> Result<Self, TransportError> {
        let open_error = |source| TransportError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)
            .map_err(open_error)?;
        let file_type = file.metadata().map_err(open_error)?.file_type();
        if !file_type.is_char_device() {
            return Err(TransportError::NotCharDevice {
                path: path.to_owned(),
            });
        }
        Ok(Self { fd: file.into() })
    }

    /// Uses an already open TPM descriptor (an `OwnedFd` or a `File`, e.g.
    /// one opened inside a container's mount namespace). The descriptor is
    /// switched to non-blocking mode: with a blocking one, `write()` would
    /// run the whole command and no deadline could be kept.
    pub fn from_fd(fd: impl Into<OwnedFd>) -> Result<Self, TransportError> {
        let fd = fd.into();
        let io_error = |op, errno: Errno| TransportError::Io {
            op,
            source: io::Error::from(errno),
        };
        let flags = fcntl(&fd, FcntlArg::F_GETFL)
            .map_err(|e| io_error("reading the TPM descriptor's flags", e))?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags))
            .map_err(|e| io_error("making the TPM descriptor non-blocking", e))?;
        Ok(Self { fd })
    }

    fn write_command(&self, command: &[u8]) -> Result<(), TransportError> {
        loop {
            match nix::unistd::write(&self.fd, command) {
                Ok(n) if n == command.len() => return Ok(()),
                Ok(written) => {
                    return Err(TransportError::ShortWrite {
                        written,
                        len: command.len(),
                    })
                }
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(TransportError::from_write(errno.into(), command.len())),
            }
        }
    }

    /// Waits for the response until `deadline`, then reads it in one go.
    fn read_response(&self, deadline: Instant) -> Result<Vec<u8>, TransportError> {
        const WAITING: &str = "waiting for the TPM's response";
        let mut buffer = vec![0u8; MAX_RESPONSE_SIZE];
        loop {
            let revents = wait_until_ready(self.fd.as_fd(), PollFlags::POLLIN, deadline, WAITING)?;
            if !revents.contains(PollFlags::POLLIN) {
                if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                    return Err(TransportError::Gone);
                }
                if revents.contains(PollFlags::POLLNVAL) {
                    return Err(TransportError::Io {
                        op: WAITING,
                        source: io::Error::from_raw_os_error(libc::EBADF),
                    });
                }
                continue;
            }
            match nix::unistd::read(&self.fd, &mut buffer) {
                Ok(0) => return Err(TransportError::NoResponse),
                Ok(n) => {
                    buffer.truncate(n);
                    return Ok(buffer);
                }
                // Woken without a response after all: wait again.
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                Err(errno) => return Err(TransportError::from_read(errno.into())),
            }
        }
    }
}

impl Transport for DeviceTransport {
    fn transact(&mut self, command: &[u8], deadline: Instant) -> Result<Vec<u8>, TransportError> {
        let started = Instant::now();
        if command.len() > MAX_COMMAND_SIZE {
            return Err(TransportError::CommandTooLarge { len: command.len() });
        }
        // Do not start a command we cannot wait for: its response would be
        // left pending and make the next write fail with EBUSY.
        if time_left(deadline).is_none() {
            return Err(TransportError::Timeout {
                allowed: Default::default(),
            });
        }
        self.write_command(command)?;
        with_allowed_time(self.read_response(deadline), started, deadline)
    }
}

#[cfg(test)]
mod tests {
    //! The driver's one-write-one-read framing is what a SOCK_SEQPACKET
    //! socket pair gives, so a thread on the other end stands in for the TPM.

    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use std::os::fd::FromRawFd;

    fn pair() -> (DeviceTransport, OwnedFd) {
        let mut fds = [-1; 2];
        // SAFETY: socketpair writes two descriptors into the array we own;
        // on success each is open and owned by nobody else.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
        // SAFETY: both descriptors were just made by socketpair (checked
        // above) and are owned by nothing else.
        let [ours, theirs] = fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        (DeviceTransport::from_fd(ours).unwrap(), theirs)
    }

    /// The fake TPM: reads one command and answers after `delay`.
    fn answer(fd: OwnedFd, delay: Duration, response: Vec<u8>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let socket = UnixDatagram::from(fd);
            let mut command = vec![0u8; 4096];
            let n = socket.recv(&mut command).unwrap();
            command.truncate(n);
            std::thread::sleep(delay);
            let _ = socket.send(&response);
            command
        })
    }

    #[test]
    fn one_write_one_read() {
        let (mut transport, tpm) = pair();
        let fake = answer(
            tpm,
            Duration::from_millis(20),
            vec![0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0],
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let response = transport.transact(&[1, 2, 3], deadline).unwrap();
        assert_eq!(response, [0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0]);
        assert_eq!(fake.join().unwrap(), [1, 2, 3]);
    }

    #[test]
    fn times_out_at_the_deadline() {
        let (mut transport, tpm) = pair();
        let fake = answer(tpm, Duration::from_millis(500), vec![0; 10]);
        let started = Instant::now();
        let err = transport
            .transact(&[1, 2, 3], started + Duration::from_millis(50))
            .unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
        assert!(err.to_string().starts_with("no response within"), "{err}");
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_millis(400), "{waited:?}");
        drop(transport);
        fake.join().unwrap();
    }

    #[test]
    fn a_past_deadline_sends_nothing() {
        let (mut transport, tpm) = pair();
        let err = transport.transact(&[1], Instant::now()).unwrap_err();
        assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
        drop(transport);
        let mut buf = [0u8; 8];
        assert_eq!(UnixDatagram::from(tpm).recv(&mut buf).unwrap(), 0);
    }

    #[test]
    fn refuses_oversize_commands_before_writing() {
        let (mut transport, _tpm) = pair();
        let deadline = Instant::now() + Duration::from_secs(1);
        let err = transport
            .transact(&[0; MAX_COMMAND_SIZE + 1], deadline)
            .unwrap_err();
        assert!(
            matches!(err, TransportError::CommandTooLarge { len: 4097 }),
            "{err}"
        );
    }

    #[test]
    fn peer_gone_is_reported() {
        let (mut transport, tpm) = pair();
        drop(tpm);
        let deadline = Instant::now() + Duration::from_secs(1);
        let err = transport.transact(&[1, 2, 3], deadline).unwrap_err();
        assert!(matches!(err, TransportError::Gone), "{err}");
    }

    #[test]
    fn open_checks_the_file_type() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("tpmrm0");
        std::fs::write(&regular, b"").unwrap();
        let err = DeviceTransport::open(&regular).unwrap_err();
        assert!(matches!(err, TransportError::NotCharDevice { .. }), "{err}");

        let err = DeviceTransport::open(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert!(err.to_string().contains("missing"), "{err}");

        // A character device opens (it is not a TPM, but the type is right).
        assert!(DeviceTransport::open(Path::new("/dev/null")).is_ok());
    }
}
