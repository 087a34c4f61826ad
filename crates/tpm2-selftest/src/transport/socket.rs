//! swtpm's raw command socket (`swtpm socket --server type=unixio,path=…`).
//!
//! A stream carries no message boundaries, so the response is framed by its
//! own header: read the 10-byte header, then the rest of the size it
//! announces. The socket is non-blocking and every read and write waits in
//! `poll()` for at most the time left before the deadline.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use nix::poll::PollFlags;

use super::{wait_until_ready, with_allowed_time, Transport, TransportError};
use crate::proto::{HEADER_SIZE, MAX_COMMAND_SIZE, MAX_RESPONSE_SIZE};

#[derive(Debug)]
pub struct SocketTransport {
    stream: UnixStream,
}

impl SocketTransport {
    pub fn connect(path: &Path) -> Result<Self, TransportError> {
        let stream = UnixStream::connect(path).map_err(|source| TransportError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::from_stream(stream)
    }

    /// Uses a connected stream; it is switched to non-blocking mode.
    pub fn from_stream(stream: UnixStream) -> Result<Self, TransportError> {
        stream
            .set_nonblocking(true)
            .map_err(|source| TransportError::Io {
                op: "making the TPM socket non-blocking",
                source,
            })?;
        Ok(Self { stream })
    }

    fn wait(&self, events: PollFlags, deadline: Instant) -> Result<(), TransportError> {
        // Whatever woke us (data, hang-up, error), the next read or write
        // reports it.
        wait_until_ready(
            self.stream.as_fd(),
            events,
            deadline,
            "waiting for the TPM socket",
        )
        .map(drop)
    }

    fn write_all(&mut self, mut command: &[u8], deadline: Instant) -> Result<(), TransportError> {
        let len = command.len();
        while !command.is_empty() {
            match self.stream.write(command) {
                Ok(0) => return Err(TransportError::Gone),
                Ok(n) => command = command.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(PollFlags::POLLOUT, deadline)?
                }
                Err(e) => return Err(TransportError::from_write(e, len)),
            }
        }
        Ok(())
    }

    /// Fills `buffer` completely, or fails. `received` counts the bytes of
    /// this response read before, for the error message.
    fn read_exact(
        &mut self,
        buffer: &mut [u8],
        received: usize,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let mut filled = 0;
        while let Some(rest) = buffer.get_mut(filled..).filter(|rest| !rest.is_empty()) {
            match self.stream.read(rest) {
                Ok(0) => {
                    return Err(TransportError::Closed {
                        received: received + filled,
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(PollFlags::POLLIN, deadline)?
                }
                Err(e) => return Err(TransportError::from_read(e)),
            }
        }
        Ok(())
    }

    fn exchange(&mut self, command: &[u8], deadline: Instant) -> Result<Vec<u8>, TransportError> {
        self.write_all(command, deadline)?;
        let mut header = [0u8; HEADER_SIZE];
        self.read_exact(&mut header, 0, deadline)?;
        let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let total = usize::try_from(size)
            .ok()
            .filter(|n| (HEADER_SIZE..=MAX_RESPONSE_SIZE).contains(n))
            .ok_or(TransportError::BadResponseSize { size })?;
        let mut response = vec![0u8; total];
        let (head, body) = response.split_at_mut(HEADER_SIZE);
        head.copy_from_slice(&header);
        self.read_exact(body, HEADER_SIZE, deadline)?;
        Ok(response)
    }
}

impl Transport for SocketTransport {
    fn transact(&mut self, command: &[u8], deadline: Instant) -> Result<Vec<u8>, TransportError> {
        let started = Instant::now();
        if command.len() > MAX_COMMAND_SIZE {
            return Err(TransportError::CommandTooLarge { len: command.len() });
        }
        // Same rule as for a device: do not start what we cannot finish.
        if super::time_left(deadline).is_none() {
            return Err(TransportError::Timeout {
                allowed: Default::default(),
            });
        }
        with_allowed_time(self.exchange(command, deadline), started, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fake swtpm on the other end of a socket pair: reads `expect` bytes,
    /// then writes `response` in pieces, pausing between them.
    fn fake_tpm(
        expect: usize,
        pieces: Vec<Vec<u8>>,
        pause: Duration,
    ) -> (SocketTransport, std::thread::JoinHandle<Vec<u8>>) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let handle = std::thread::spawn(move || {
            let mut command = vec![0u8; expect];
            theirs.read_exact(&mut command).unwrap();
            for piece in pieces {
                std::thread::sleep(pause);
                if theirs.write_all(&piece).is_err() {
                    break;
                }
            }
            command
        });
        (SocketTransport::from_stream(ours).unwrap(), handle)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn reassembles_a_response_sent_in_pieces() {
        let response = vec![0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xAB, 0xCD];
        let pieces = vec![
            response[..3].to_vec(),
            response[3..11].to_vec(),
            response[11..].to_vec(),
        ];
        let (mut transport, tpm) = fake_tpm(4, pieces, Duration::from_millis(5));
        assert_eq!(transport.transact(&[9, 8, 7, 6], soon()).unwrap(), response);
        assert_eq!(tpm.join().unwrap(), [9, 8, 7, 6]);
    }

    #[test]
    fn rejects_impossible_sizes_before_allocating() {
        for size in [0u32, 9, 4097, u32::MAX] {
            let mut header = vec![0x80, 0x01];
            header.extend_from_slice(&size.to_be_bytes());
            header.extend_from_slice(&[0, 0, 0, 0]);
            let (mut transport, tpm) = fake_tpm(1, vec![header], Duration::ZERO);
            let err = transport.transact(&[1], soon()).unwrap_err();
            assert!(
                matches!(err, TransportError::BadResponseSize { size: s } if s == size),
                "{err}"
            );
            tpm.join().unwrap();
        }
    }

    #[test]
    fn early_close_is_reported_with_progress() {
        let (mut transport, tpm) = fake_tpm(
            1,
            vec![vec![0x80, 0x01, 0, 0, 0, 20, 0, 0, 0, 0, 1, 2]],
            Duration::ZERO,
        );
        let err = transport.transact(&[1], soon()).unwrap_err();
        assert!(
            matches!(err, TransportError::Closed { received: 12 }),
            "{err}"
        );
        tpm.join().unwrap();
    }

    #[test]
    fn a_slow_response_times_out_at_the_deadline() {
        let (mut transport, tpm) = fake_tpm(
            1,
            vec![vec![0x80, 0x01, 0, 0, 0, 10], vec![0, 0, 0, 0]],
            Duration::from_millis(300),
        );
        let started = Instant::now();
        let err = transport
            .transact(&[1], started + Duration::from_millis(100))
            .unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("no response within"), "{err}");
        assert!(waited < Duration::from_millis(280), "{waited:?}");
        drop(transport);
        tpm.join().unwrap();
    }

    #[test]
    fn connect_failure_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = SocketTransport::connect(&dir.path().join("nothing.sock")).unwrap_err();
        assert!(err.to_string().contains("nothing.sock"), "{err}");
    }
}
