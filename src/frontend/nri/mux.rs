//! NRI's connection multiplexer.
//!
//! One socket carries two logical connections. Every frame is
//! `u32 BE conn_id, u32 BE length, payload`; conn 1 carries the Plugin
//! service (the runtime calls us), conn 2 the Runtime service (we call the
//! runtime). Each logical connection is a plain byte stream: one ttrpc
//! message may arrive in several frames, and one frame may end in the middle
//! of a message, so framing here knows nothing about ttrpc.

use std::fmt;

/// The Plugin service: the runtime is the ttrpc client, we serve.
pub const PLUGIN_CONN: u32 = 1;
/// The Runtime service: we are the ttrpc client.
pub const RUNTIME_CONN: u32 = 2;

pub const HEADER_LEN: usize = 8;

/// The largest payload a peer may send in one frame: one whole ttrpc message
/// (10-byte header + 4 MiB), the same bound the runtime enforces.
pub const MAX_PAYLOAD: usize = super::ttrpc::HEADER_LEN + super::ttrpc::MAX_MESSAGE;

/// The largest frame we send. The runtime's reader hands each frame to a
/// buffered reader with a 4 KiB buffer and rejects a frame that does not fit
/// in the space it offers, so anything bigger is split.
pub const MAX_SEND_FRAME: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxError {
    /// A frame header announced more than [`MAX_PAYLOAD`] bytes: the stream is
    /// corrupt or not NRI; nothing after it can be trusted.
    Oversize { conn: u32, len: u32 },
}

impl fmt::Display for MuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Oversize { conn, len } => write!(
                f,
                "multiplexer frame for connection {conn} announces {len} bytes (limit {MAX_PAYLOAD}): not an NRI stream or corrupt"
            ),
        }
    }
}

impl std::error::Error for MuxError {}

/// Appends `payload` for `conn` to `out` as one or more frames.
pub fn encode(conn: u32, payload: &[u8], out: &mut Vec<u8>) {
    let max = MAX_SEND_FRAME - HEADER_LEN;
    // An empty payload still makes one (empty) frame; the peer ignores it.
    let mut chunks = payload.chunks(max).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&conn.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        return;
    }
    for chunk in chunks {
        out.extend_from_slice(&conn.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// One frame: which logical connection, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub conn: u32,
    pub payload: Vec<u8>,
}

/// Reassembles frames from whatever pieces the socket delivers.
#[derive(Debug, Default)]
pub struct Demux {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`. What was cut off is dropped
    /// once per push, not once per frame: a read holding many small frames
    /// is cut in time linear in its size.
    start: usize,
}

impl Demux {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, MuxError> {
        let rest = &self.buf[self.start..];
        if rest.len() < HEADER_LEN {
            return Ok(None);
        }
        let conn = u32::from_be_bytes(rest[0..4].try_into().unwrap());
        let len = u32::from_be_bytes(rest[4..8].try_into().unwrap());
        // Checked before waiting for the payload, so a bogus length cannot
        // make us buffer gigabytes.
        if len as usize > MAX_PAYLOAD {
            return Err(MuxError::Oversize { conn, len });
        }
        let end = HEADER_LEN + len as usize;
        if rest.len() < end {
            return Ok(None);
        }
        let payload = rest[HEADER_LEN..end].to_vec();
        self.start += end;
        Ok(Some(Frame { conn, payload }))
    }

    /// Bytes received but not yet part of a complete frame: non-zero at
    /// end of stream means the peer went away mid-frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(d: &mut Demux) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn header_layout() {
        let mut out = Vec::new();
        encode(2, b"abc", &mut out);
        assert_eq!(out, [0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn joined_frames_for_several_channels() {
        let mut wire = Vec::new();
        encode(PLUGIN_CONN, b"one", &mut wire);
        encode(RUNTIME_CONN, b"two", &mut wire);
        encode(PLUGIN_CONN, b"", &mut wire);
        encode(7, b"unknown", &mut wire);
        let mut d = Demux::new();
        d.push(&wire);
        let got = frames(&mut d);
        let ids: Vec<_> = got.iter().map(|f| (f.conn, f.payload.as_slice())).collect();
        assert_eq!(
            ids,
            [
                (1, &b"one"[..]),
                (2, &b"two"[..]),
                (1, &b""[..]),
                (7, &b"unknown"[..])
            ]
        );
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn split_frames_byte_by_byte() {
        let mut wire = Vec::new();
        encode(PLUGIN_CONN, b"hello", &mut wire);
        encode(RUNTIME_CONN, b"world", &mut wire);
        let mut d = Demux::new();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            got.extend(frames(&mut d));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].payload, b"world");
    }

    #[test]
    fn truncated_input_waits_and_reports_pending() {
        let mut wire = Vec::new();
        encode(PLUGIN_CONN, b"hello", &mut wire);
        let mut d = Demux::new();
        d.push(&wire[..wire.len() - 1]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.pending(), wire.len() - 1);
        d.push(&wire[wire.len() - 1..]);
        assert_eq!(d.next_frame().unwrap().unwrap().payload, b"hello");

        // A short header alone is not a frame either.
        let mut d = Demux::new();
        d.push(&wire[..3]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.pending(), 3);
    }

    /// The same shape as the ttrpc decoder's timeout: many empty frames in
    /// one push, each of which moved the rest of the buffer down.
    #[test]
    fn many_small_frames_in_one_push_are_cut_in_linear_time() {
        let n = MAX_PAYLOAD / HEADER_LEN;
        let mut wire = Vec::with_capacity(n * HEADER_LEN);
        for _ in 0..n {
            encode(PLUGIN_CONN, b"", &mut wire);
        }
        let started = std::time::Instant::now();
        let mut d = Demux::new();
        d.push(&wire);
        assert_eq!(frames(&mut d).len(), n);
        assert_eq!(d.pending(), 0);
        let took = started.elapsed();
        assert!(took.as_secs() < 20, "{n} frames took {took:?}");
    }

    #[test]
    fn oversize_length_is_rejected_before_buffering() {
        let mut d = Demux::new();
        d.push(&[0, 0, 0, 1]);
        d.push(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(MuxError::Oversize {
                conn: 1,
                len: MAX_PAYLOAD as u32 + 1
            })
        );
        // The largest legal frame is accepted (once complete).
        let mut d = Demux::new();
        d.push(&[0, 0, 0, 1]);
        d.push(&(MAX_PAYLOAD as u32).to_be_bytes());
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn large_payloads_are_split_into_small_frames() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        encode(RUNTIME_CONN, &payload, &mut wire);
        let mut d = Demux::new();
        d.push(&wire);
        let got = frames(&mut d);
        assert_eq!(got.len(), 3);
        assert!(got
            .iter()
            .all(|f| f.payload.len() + HEADER_LEN <= MAX_SEND_FRAME));
        let joined: Vec<u8> = got.into_iter().flat_map(|f| f.payload).collect();
        assert_eq!(joined, payload);
    }
}
