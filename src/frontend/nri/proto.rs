//! A tiny protobuf (proto3) codec: just what the NRI and ttrpc messages need.
//!
//! NRI has no Rust bindings and its messages are few, so they are written by
//! hand from the field numbers ([`super::api`]). This module knows only the
//! wire format: varints, length-delimited fields and skipping what it does
//! not know (newer runtimes add fields; proto3 says to ignore them).

use std::fmt;

/// Wire types used on the wire (groups, 3 and 4, are long deprecated and
/// never produced by the Go encoder NRI uses).
const WT_VARINT: u8 = 0;
const WT_FIXED64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_FIXED32: u8 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed protobuf message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn err<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(what.into()))
}

/// Builds one message. Scalars at their default value are left out, as
/// proto3 encoders do; sub-messages are always written, because for the
/// `Optional*` wrappers presence is the meaning (a uid of 0 is not "unset").
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    pub fn uint64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, WT_VARINT);
            self.varint(v);
        }
    }

    pub fn uint32(&mut self, field: u32, v: u32) {
        self.uint64(field, u64::from(v));
    }

    /// int64 and int32 are plain two's-complement varints (negative values
    /// take ten bytes), not zigzag.
    pub fn int64(&mut self, field: u32, v: i64) {
        self.uint64(field, v as u64);
    }

    pub fn int32(&mut self, field: u32, v: i32) {
        self.int64(field, i64::from(v));
    }

    pub fn bool(&mut self, field: u32, v: bool) {
        self.uint64(field, u64::from(v));
    }

    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        if !v.is_empty() {
            self.len_delimited(field, v);
        }
    }

    pub fn string(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }

    /// A repeated string: every element is written, empty ones included.
    pub fn strings<S: AsRef<str>>(&mut self, field: u32, items: &[S]) {
        for s in items {
            self.len_delimited(field, s.as_ref().as_bytes());
        }
    }

    pub fn message(&mut self, field: u32, body: &[u8]) {
        self.len_delimited(field, body);
    }

    /// A `map<string, string>` field: one entry message (key = 1, value = 2)
    /// per pair.
    pub fn string_map<'a>(
        &mut self,
        field: u32,
        pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) {
        for (k, v) in pairs {
            let mut entry = Writer::new();
            entry.string(1, k);
            entry.string(2, v);
            self.message(field, &entry.finish());
        }
    }

    fn len_delimited(&mut self, field: u32, v: &[u8]) {
        self.key(field, WT_LEN);
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
}

/// One field as read off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    pub fn as_u64(self, field: u32) -> Result<u64, DecodeError> {
        match self {
            Value::Varint(v) => Ok(v),
            other => err(format!("field {field}: expected a varint, got {other:?}")),
        }
    }

    pub fn as_u32(self, field: u32) -> Result<u32, DecodeError> {
        // Go truncates oversized varints for 32-bit fields; so do we.
        Ok(self.as_u64(field)? as u32)
    }

    pub fn as_i64(self, field: u32) -> Result<i64, DecodeError> {
        Ok(self.as_u64(field)? as i64)
    }

    pub fn as_i32(self, field: u32) -> Result<i32, DecodeError> {
        Ok(self.as_u64(field)? as i32)
    }

    pub fn as_bool(self, field: u32) -> Result<bool, DecodeError> {
        Ok(self.as_u64(field)? != 0)
    }

    pub fn as_bytes(self, field: u32) -> Result<&'a [u8], DecodeError> {
        match self {
            Value::Bytes(b) => Ok(b),
            other => err(format!(
                "field {field}: expected length-delimited data, got {other:?}"
            )),
        }
    }

    pub fn as_string(self, field: u32) -> Result<String, DecodeError> {
        let b = self.as_bytes(field)?;
        String::from_utf8(b.to_vec())
            .or_else(|_| err(format!("field {field}: string is not valid UTF-8")))
    }
}

/// Iterates over the fields of one message.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some((&b, rest)) = self.rest.split_first() else {
                return err("truncated varint");
            };
            self.rest = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        err("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return err(format!(
                "field needs {n} bytes, only {} left",
                self.rest.len()
            ));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, DecodeError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).or_else(|_| err("field number out of range"))?;
        if field == 0 {
            return err("field number 0");
        }
        let value = match (key & 7) as u8 {
            WT_VARINT => Value::Varint(self.varint()?),
            WT_FIXED64 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            WT_FIXED32 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            WT_LEN => {
                let n = self.varint()?;
                let n = usize::try_from(n).or_else(|_| err("length out of range"))?;
                Value::Bytes(self.take(n)?)
            }
            other => return err(format!("field {field}: unsupported wire type {other}")),
        };
        Ok(Some((field, value)))
    }
}

/// Decodes one `map<string, string>` entry.
pub fn map_entry(buf: &[u8]) -> Result<(String, String), DecodeError> {
    let mut r = Reader::new(buf);
    let (mut k, mut v) = (String::new(), String::new());
    while let Some((field, value)) = r.next_field()? {
        match field {
            1 => k = value.as_string(field)?,
            2 => v = value.as_string(field)?,
            _ => {}
        }
    }
    Ok((k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_reference_encoding() {
        // 150 in field 1 is the example from the protobuf encoding guide.
        let mut w = Writer::new();
        w.uint64(1, 150);
        assert_eq!(w.finish(), [0x08, 0x96, 0x01]);

        let mut w = Writer::new();
        w.int32(2, -1);
        let b = w.finish();
        assert_eq!(b.len(), 11, "negative int32 is a 10-byte varint");
        let mut r = Reader::new(&b);
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, v.as_i32(f).unwrap()), (2, -1));
    }

    #[test]
    fn defaults_are_left_out_but_messages_are_not() {
        let mut w = Writer::new();
        w.uint64(1, 0);
        w.string(2, "");
        w.bool(3, false);
        assert!(w.clone().finish().is_empty());
        w.message(4, &[]);
        assert_eq!(w.finish(), [0x22, 0x00]);
    }

    #[test]
    fn round_trip_all_wire_types_and_skip_unknown() {
        let mut w = Writer::new();
        w.string(1, "héllo");
        w.int64(2, -5);
        w.strings(3, &["a", ""]);
        let mut sub = Writer::new();
        sub.uint32(1, 7);
        w.message(4, &sub.finish());
        let mut b = w.finish();
        // A fixed32 and a fixed64 field a newer peer might send.
        b.extend_from_slice(&[0x2d, 1, 0, 0, 0, 0x31, 2, 0, 0, 0, 0, 0, 0, 0]);

        let mut r = Reader::new(&b);
        let mut seen = Vec::new();
        while let Some((f, v)) = r.next_field().unwrap() {
            seen.push(match f {
                1 => v.as_string(f).unwrap(),
                2 => v.as_i64(f).unwrap().to_string(),
                3 => v.as_string(f).unwrap(),
                4 => {
                    let mut r = Reader::new(v.as_bytes(f).unwrap());
                    let (g, x) = r.next_field().unwrap().unwrap();
                    format!("sub {g}={}", x.as_u32(g).unwrap())
                }
                5 => format!("{v:?}"),
                6 => format!("{v:?}"),
                _ => unreachable!(),
            });
        }
        assert_eq!(
            seen,
            [
                "héllo",
                "-5",
                "a",
                "",
                "sub 1=7",
                "Fixed32(1)",
                "Fixed64(2)"
            ]
        );
    }

    #[test]
    fn truncated_and_malformed_input_is_an_error() {
        for bad in [
            &[0x08][..],         // key without value
            &[0x08, 0x80],       // unterminated varint
            &[0x12, 0x05, b'a'], // length past the end
            &[0x0b],             // group start (wire type 3)
            &[0x00, 0x00],       // field 0
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ] {
            let mut r = Reader::new(bad);
            let result = (|| {
                while r.next_field()?.is_some() {}
                Ok::<_, DecodeError>(())
            })();
            assert!(result.is_err(), "accepted {bad:02x?}");
        }
        let mut r = Reader::new(&[0x08, 0x01]);
        let (f, v) = r.next_field().unwrap().unwrap();
        assert!(v.as_bytes(f).is_err(), "type confusion must be an error");
    }

    #[test]
    fn map_entries() {
        let mut w = Writer::new();
        let (k, v) = ("oci-tpm-hook/device".to_string(), "auto".to_string());
        w.string_map(6, [(&k, &v)]);
        let b = w.finish();
        let mut r = Reader::new(&b);
        let (f, val) = r.next_field().unwrap().unwrap();
        assert_eq!(f, 6);
        assert_eq!(map_entry(val.as_bytes(f).unwrap()).unwrap(), (k, v));
    }
}
