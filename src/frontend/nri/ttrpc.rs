//! ttrpc: the small RPC protocol NRI speaks on each multiplexed connection.
//!
//! A message is a 10-byte header — `u32 BE length` (payload only),
//! `u32 BE stream id`, `u8 type`, `u8 flags` — and a protobuf payload. A
//! unary call is one Request message on a new odd stream id (client-chosen,
//! increasing) answered by one Response message on the same id. NRI uses
//! unary calls only; a streaming call is answered with "unimplemented".
//!
//! The framing (the header and a decoder that reassembles messages) is
//! written here: the `ttrpc` crate, the only one that speaks this protocol,
//! brings rust-protobuf and its own transport, and neither fits NRI's
//! multiplexed socket. The messages inside the frames are prost's.

use std::fmt;

pub const HEADER_LEN: usize = 10;
/// The largest payload ttrpc accepts (4 MiB).
pub const MAX_MESSAGE: usize = 4 << 20;

pub const TYPE_REQUEST: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;
pub const TYPE_DATA: u8 = 3;

/// The sender closed its side: set on unary requests.
pub const FLAG_REMOTE_CLOSED: u8 = 0x1;
/// The sender opens a stream: a streaming call, which NRI never makes.
pub const FLAG_REMOTE_OPEN: u8 = 0x2;

/// gRPC status codes used here (ttrpc reuses google.rpc.Status).
pub mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub stream_id: u32,
    pub kind: u8,
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.stream_id.to_be_bytes());
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.payload);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Oversize(u32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Oversize(n) => write!(
                f,
                "ttrpc message of {n} bytes exceeds the {MAX_MESSAGE}-byte limit"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Cuts one logical connection's byte stream into ttrpc messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next message starts in `buf`. What was cut off is dropped
    /// once per push, not once per message: a push holding many small
    /// messages is cut in time linear in its size.
    start: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let rest = &self.buf[self.start..];
        if rest.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes(rest[0..4].try_into().unwrap());
        if len as usize > MAX_MESSAGE {
            return Err(FrameError::Oversize(len));
        }
        let end = HEADER_LEN + len as usize;
        if rest.len() < end {
            return Ok(None);
        }
        let msg = Message {
            stream_id: u32::from_be_bytes(rest[4..8].try_into().unwrap()),
            kind: rest[8],
            flags: rest[9],
            payload: rest[HEADER_LEN..end].to_vec(),
        };
        self.start += end;
        Ok(Some(msg))
    }

    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

mod generated {
    include!("generated/ttrpc.rs");
}

/// ttrpc's Request (which method, and its protobuf-encoded argument),
/// Response (a status, absent = OK, and the result message), KeyValue and
/// StringList,
/// generated with prost from ttrpc's `request.proto` (see
/// `generated/ttrpc.rs`).
pub use generated::*;

/// The status of a failed call: `google.rpc.Status`, which ttrpc's
/// `request.proto` imports as `proto/status.proto`. That file is not among
/// the pinned sources (only its Go bindings are), so this one message is
/// written here, with prost's derives, from the field numbers of those
/// bindings (`code` = 1, `message` = 2). Its `details` (3, a list of
/// `google.protobuf.Any`) are left out: nothing here sends or reads them,
/// and decoding skips them.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

impl Status {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}: {}", self.code, self.message)
    }
}

impl Response {
    pub fn ok(payload: Vec<u8>) -> Self {
        Self {
            status: None,
            payload,
        }
    }

    pub fn error(status: Status) -> Self {
        Self {
            status: Some(status),
            payload: Vec::new(),
        }
    }

    /// The call's result: its payload, or the error status.
    pub fn result(self) -> Result<Vec<u8>, Status> {
        match self.status {
            Some(s) if s.code != code::OK => Err(s),
            _ => Ok(self.payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn header_layout() {
        let m = Message {
            stream_id: 3,
            kind: TYPE_REQUEST,
            flags: FLAG_REMOTE_CLOSED,
            payload: b"xy".to_vec(),
        };
        assert_eq!(m.encode(), [0, 0, 0, 2, 0, 0, 0, 3, 1, 1, b'x', b'y']);
    }

    #[test]
    fn decoder_reassembles_split_and_joined_messages() {
        let a = Message {
            stream_id: 1,
            kind: TYPE_REQUEST,
            flags: 1,
            payload: vec![7; 5000],
        };
        let b = Message {
            stream_id: 3,
            kind: TYPE_RESPONSE,
            flags: 0,
            payload: vec![],
        };
        let mut wire = a.encode();
        wire.extend(b.encode());
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(777) {
            d.push(chunk);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, [a, b]);
        assert_eq!(d.pending(), 0);
    }

    /// The nri_frames fuzz target timed out (over 10 s) on one legal 4 MiB
    /// multiplexer frame full of empty messages: every message moved the
    /// rest of the buffer down.
    #[test]
    fn many_small_messages_in_one_push_are_cut_in_linear_time() {
        let n = MAX_MESSAGE / HEADER_LEN;
        let mut wire = Vec::with_capacity(n * HEADER_LEN);
        for i in 0..n as u32 {
            let m = Message {
                stream_id: 2 * i + 1,
                kind: TYPE_DATA,
                flags: 0,
                payload: vec![],
            };
            wire.extend(m.encode());
        }
        let started = std::time::Instant::now();
        let mut d = Decoder::new();
        d.push(&wire);
        let mut count = 0;
        while let Some(m) = d.next_message().unwrap() {
            assert_eq!(m.stream_id, 2 * count + 1);
            count += 1;
        }
        assert_eq!(count as usize, n);
        assert_eq!(d.pending(), 0);
        // Linear: well under a second; moving the rest per message: minutes.
        let took = started.elapsed();
        assert!(took.as_secs() < 20, "{n} messages took {took:?}");
    }

    #[test]
    fn decoder_rejects_oversize() {
        let mut d = Decoder::new();
        let mut hdr = ((MAX_MESSAGE + 1) as u32).to_be_bytes().to_vec();
        hdr.extend([0, 0, 0, 1, 1, 0]);
        d.push(&hdr);
        assert_eq!(
            d.next_message(),
            Err(FrameError::Oversize(MAX_MESSAGE as u32 + 1))
        );
    }

    #[test]
    fn request_round_trip() {
        let r = Request {
            service: "nri.pkg.api.v1alpha1.Runtime".into(),
            method: "RegisterPlugin".into(),
            payload: vec![0x0a, 0x01, b'x'],
            timeout_nano: 5_000_000_000,
            metadata: vec![KeyValue {
                key: "k".into(),
                value: "v".into(),
            }],
        };
        assert_eq!(Request::decode(r.encode_to_vec().as_slice()).unwrap(), r);
    }

    #[test]
    fn request_field_numbers_match_request_proto() {
        let r = Request {
            service: "s".into(),
            method: "m".into(),
            payload: vec![7],
            timeout_nano: 1,
            metadata: vec![KeyValue::default()],
        };
        assert_eq!(
            r.encode_to_vec(),
            [0x0a, 1, b's', 0x12, 1, b'm', 0x1a, 1, 7, 0x20, 1, 0x2a, 0],
            "service = 1, method = 2, payload = 3, timeout_nano = 4, metadata = 5"
        );
    }

    #[test]
    fn status_field_numbers_match_google_rpc_status() {
        let s = Status::new(code::FAILED_PRECONDITION, "x");
        // code = 1 (varint 9), message = 2; inside Response.status = 1.
        assert_eq!(s.encode_to_vec(), [0x08, 9, 0x12, 1, b'x']);
        assert_eq!(
            Response::error(s).encode_to_vec(),
            [0x0a, 5, 0x08, 9, 0x12, 1, b'x']
        );
        // details (3, google.protobuf.Any) from a Go peer are skipped.
        let with_details = [0x08, 9, 0x1a, 2, 0x0a, 0];
        assert_eq!(
            Status::decode(&with_details[..]).unwrap(),
            Status::new(code::FAILED_PRECONDITION, "")
        );
    }

    #[test]
    fn response_round_trip_and_result() {
        let ok = Response::ok(vec![0x10, 0x08]);
        assert_eq!(Response::decode(ok.encode_to_vec().as_slice()).unwrap(), ok);
        assert_eq!(ok.result().unwrap(), [0x10, 0x08]);

        let bad = Response::error(Status::new(code::FAILED_PRECONDITION, "no TPM"));
        let decoded = Response::decode(bad.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, bad);
        assert_eq!(decoded.result().unwrap_err().message, "no TPM");

        // A status with code 0 is success, whatever else it carries.
        let zero = Response {
            status: Some(Status::new(code::OK, "")),
            payload: vec![1],
        };
        assert_eq!(zero.result().unwrap(), [1]);
    }
}
