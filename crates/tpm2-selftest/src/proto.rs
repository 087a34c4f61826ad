//! The TPM 2.0 commands a self-test needs, and strict parsers for their
//! responses. Pure: bytes in, values out, no I/O.
//!
//! Everything on the wire is big-endian. A command or response starts with a
//! 10-byte header: tag (u16), size of the whole message (u32), then the
//! command code (commands) or response code (responses).
//!
//! Responses come from a device the container can reach, so every parser
//! treats its input as hostile: lengths are checked before they are used,
//! counts are checked against the bytes actually present before anything
//! is allocated, and nothing indexes a slice in a way that could panic.

use std::fmt;

use super::response_code::ResponseCode;

/// Size of a command or response header.
pub const HEADER_SIZE: usize = 10;
/// Largest command the Linux TPM driver accepts in one `write()`.
pub const MAX_COMMAND_SIZE: usize = 4096;
/// Largest response the Linux TPM driver hands back; also our bound for
/// other transports, so a broken peer cannot make us allocate more.
pub const MAX_RESPONSE_SIZE: usize = 4096;

/// `TPM_ST_NO_SESSIONS`: a command or response without an authorization area.
pub const TPM_ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS`: a command or response with an authorization area.
pub const TPM_ST_SESSIONS: u16 = 0x8002;
/// `TPM_ST_RSP_COMMAND`: the tag of every TPM 1.2 response. A TPM 2.0 also
/// uses it to answer a TPM 1.2 command, so seeing it means one side is
/// speaking the wrong protocol version.
const TPM12_ST_RSP_COMMAND: u16 = 0x00C4;

/// Command codes (`TPM_CC`) used by the self-test.
pub mod command_code {
    pub const SELF_TEST: u32 = 0x143;
    pub const GET_CAPABILITY: u32 = 0x17A;
    pub const GET_RANDOM: u32 = 0x17B;
    pub const GET_TEST_RESULT: u32 = 0x17C;
}

/// `TPM_CAP_TPM_PROPERTIES`: the capability holding `TPM_PT_*` values.
pub const TPM_CAP_TPM_PROPERTIES: u32 = 6;

/// Fixed TPM properties (`TPM_PT_*`) used by the self-test.
pub mod property {
    /// "2.0\0" for a TPM 2.0, as four ASCII bytes.
    pub const FAMILY_INDICATOR: u32 = 0x100;
    /// Vendor ID as four ASCII bytes, e.g. "IBM\0", "INTC", "STM ".
    pub const MANUFACTURER: u32 = 0x105;
    /// First half of the vendor-defined firmware version.
    pub const FIRMWARE_VERSION_1: u32 = 0x10B;
    /// Second half of the vendor-defined firmware version.
    pub const FIRMWARE_VERSION_2: u32 = 0x10C;
}

/// A response that is not a well-formed TPM 2.0 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// Fewer bytes than a response header.
    TooShort { len: usize },
    /// More bytes than any TPM response may have.
    TooLarge { len: usize },
    /// The header's size field disagrees with the bytes received.
    SizeMismatch { header_size: u32, received: usize },
    /// A tag that no TPM 2.0 response carries.
    BadTag { tag: u16 },
    /// A TPM 1.2-style response (tag 0x00C4).
    Tpm12Response { code: u32 },
    /// A field runs past the end of the data.
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    /// Bytes left over after the last field.
    TrailingBytes { what: &'static str, extra: usize },
    /// GetCapability answered for a different capability than asked.
    WrongCapability { expected: u32, got: u32 },
    /// A count that does not match the bytes that follow it.
    CountMismatch {
        what: &'static str,
        count: u32,
        available: usize,
    },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(
                f,
                "malformed TPM response: {len} bytes, shorter than the \
                 {HEADER_SIZE}-byte header"
            ),
            Self::TooLarge { len } => write!(
                f,
                "malformed TPM response: {len} bytes, more than the \
                 {MAX_RESPONSE_SIZE}-byte maximum"
            ),
            Self::SizeMismatch {
                header_size,
                received,
            } => write!(
                f,
                "malformed TPM response: header says {header_size} bytes but \
                 {received} were received"
            ),
            Self::BadTag { tag } => write!(
                f,
                "malformed TPM response: tag {tag:#06x} is neither 0x8001 nor \
                 0x8002"
            ),
            Self::Tpm12Response { code } => write!(
                f,
                "the device answered in TPM 1.2 format (tag 0x00c4, code \
                 {code:#x}): it is not a TPM 2.0, or it did not understand a \
                 TPM 2.0 command"
            ),
            Self::Truncated {
                what,
                needed,
                available,
            } => write!(
                f,
                "malformed TPM response: {what} needs {needed} bytes but only \
                 {available} remain"
            ),
            Self::TrailingBytes { what, extra } => write!(
                f,
                "malformed TPM response: {extra} unexpected bytes after {what}"
            ),
            Self::WrongCapability { expected, got } => write!(
                f,
                "malformed TPM response: asked for capability {expected:#x}, \
                 got {got:#x}"
            ),
            Self::CountMismatch {
                what,
                count,
                available,
            } => write!(
                f,
                "malformed TPM response: {what} count {count} does not fit \
                 the {available} bytes that follow"
            ),
        }
    }
}

impl std::error::Error for ProtoError {}

// ---------------------------------------------------------------------------
// Commands

/// Builds a command without sessions: header, then parameters.
fn command(code: u32, parameters: &[u8]) -> Vec<u8> {
    let size = HEADER_SIZE + parameters.len();
    // Only our own fixed-size commands come through here.
    debug_assert!(size <= MAX_COMMAND_SIZE);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(parameters);
    out
}

/// `TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, first, count)`: up to `count`
/// properties starting at `first`. The TPM may return fewer, and starts at
/// the next implemented property if `first` is not implemented.
pub fn get_capability_tpm_properties(first: u32, count: u32) -> Vec<u8> {
    let mut parameters = [0u8; 12];
    parameters[0..4].copy_from_slice(&TPM_CAP_TPM_PROPERTIES.to_be_bytes());
    parameters[4..8].copy_from_slice(&first.to_be_bytes());
    parameters[8..12].copy_from_slice(&count.to_be_bytes());
    command(command_code::GET_CAPABILITY, &parameters)
}

/// `TPM2_GetRandom(bytesRequested)`.
pub fn get_random(bytes_requested: u16) -> Vec<u8> {
    command(command_code::GET_RANDOM, &bytes_requested.to_be_bytes())
}

/// `TPM2_SelfTest(fullTest)`: `true` tests every function, `false` only
/// those not yet tested.
pub fn self_test(full_test: bool) -> Vec<u8> {
    command(command_code::SELF_TEST, &[u8::from(full_test)])
}

/// `TPM2_GetTestResult()`.
pub fn get_test_result() -> Vec<u8> {
    command(command_code::GET_TEST_RESULT, &[])
}

// ---------------------------------------------------------------------------
// Responses

/// A response whose header has been validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    pub tag: u16,
    pub code: ResponseCode,
    /// Everything after the header.
    body: &'a [u8],
}

/// Validates a whole response as received from a transport: at least a
/// header, at most [`MAX_RESPONSE_SIZE`], the header's size equal to the
/// bytes received, a TPM 2.0 tag.
pub fn parse_response(bytes: &[u8]) -> Result<Response<'_>, ProtoError> {
    if bytes.len() > MAX_RESPONSE_SIZE {
        return Err(ProtoError::TooLarge { len: bytes.len() });
    }
    let mut reader = Reader::new(bytes);
    let (tag, size, code) = match (reader.u16(), reader.u32(), reader.u32()) {
        (Ok(tag), Ok(size), Ok(code)) => (tag, size, code),
        _ => return Err(ProtoError::TooShort { len: bytes.len() }),
    };
    if tag == TPM12_ST_RSP_COMMAND {
        return Err(ProtoError::Tpm12Response { code });
    }
    if usize::try_from(size).ok() != Some(bytes.len()) {
        return Err(ProtoError::SizeMismatch {
            header_size: size,
            received: bytes.len(),
        });
    }
    if tag != TPM_ST_NO_SESSIONS && tag != TPM_ST_SESSIONS {
        return Err(ProtoError::BadTag { tag });
    }
    Ok(Response {
        tag,
        code: ResponseCode::from_raw(code),
        body: reader.rest(),
    })
}

impl<'a> Response<'a> {
    /// The response parameters, for commands that return no handles (all
    /// the self-test's commands). With sessions (tag 0x8002) the parameters
    /// are preceded by their size and followed by the session area, which is
    /// skipped here.
    ///
    /// Only meaningful when [`Self::code`] is success: error responses carry
    /// no parameters.
    pub fn parameters(&self) -> Result<&'a [u8], ProtoError> {
        if self.tag == TPM_ST_NO_SESSIONS {
            return Ok(self.body);
        }
        let mut reader = Reader::new(self.body);
        let size = reader.u32().map_err(|_| ProtoError::Truncated {
            what: "parameterSize",
            needed: 4,
            available: self.body.len(),
        })?;
        reader.bytes("response parameters", size as usize)
    }
}

/// One `TPMS_TAGGED_PROPERTY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaggedProperty {
    pub property: u32,
    pub value: u32,
}

/// The parameters of a GetCapability(TPM_PROPERTIES) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmProperties {
    /// The TPM has more properties past the last one returned.
    pub more_data: bool,
    pub properties: Vec<TaggedProperty>,
}

impl TpmProperties {
    /// The value of `property`, if the TPM returned it.
    pub fn get(&self, property: u32) -> Option<u32> {
        self.properties
            .iter()
            .find(|p| p.property == property)
            .map(|p| p.value)
    }
}

/// Size of one `TPMS_TAGGED_PROPERTY` on the wire.
const TAGGED_PROPERTY_SIZE: usize = 8;

/// Parses GetCapability's parameters (`moreData`, `TPMS_CAPABILITY_DATA`)
/// for `TPM_CAP_TPM_PROPERTIES`.
pub fn parse_tpm_properties(parameters: &[u8]) -> Result<TpmProperties, ProtoError> {
    let mut reader = Reader::new(parameters);
    let more_data = reader.u8().map_err(|e| e.named("moreData"))? != 0;
    let capability = reader.u32().map_err(|e| e.named("capability"))?;
    if capability != TPM_CAP_TPM_PROPERTIES {
        return Err(ProtoError::WrongCapability {
            expected: TPM_CAP_TPM_PROPERTIES,
            got: capability,
        });
    }
    let count = reader.u32().map_err(|e| e.named("property count"))?;
    let available = reader.remaining();
    // Check the count against the bytes present before allocating: a count
    // of 0xFFFFFFFF must not reserve 32 GiB.
    let fits = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(TAGGED_PROPERTY_SIZE))
        == Some(available);
    if !fits {
        return Err(ProtoError::CountMismatch {
            what: "property",
            count,
            available,
        });
    }
    let mut properties = Vec::with_capacity(available / TAGGED_PROPERTY_SIZE);
    while reader.remaining() > 0 {
        let property = reader.u32().map_err(|e| e.named("property"))?;
        let value = reader.u32().map_err(|e| e.named("property value"))?;
        properties.push(TaggedProperty { property, value });
    }
    Ok(TpmProperties {
        more_data,
        properties,
    })
}

/// Splits a `TPM2B_*` (u16 size, then that many bytes) off the front of
/// `input`: returns its contents and what follows.
pub fn split_tpm2b<'a>(
    what: &'static str,
    input: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), ProtoError> {
    let mut reader = Reader::new(input);
    let size = reader.u16().map_err(|e| e.named(what))?;
    let contents = reader.bytes(what, usize::from(size))?;
    Ok((contents, reader.rest()))
}

/// Parses GetRandom's parameters: one `TPM2B_DIGEST` with the random bytes
/// (possibly fewer than requested).
pub fn parse_get_random(parameters: &[u8]) -> Result<&[u8], ProtoError> {
    let (random, rest) = split_tpm2b("randomBytes", parameters)?;
    no_trailing_bytes("randomBytes", rest)?;
    Ok(random)
}

/// The parameters of a GetTestResult response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestResult<'a> {
    /// Vendor-specific diagnostic data.
    pub out_data: &'a [u8],
    /// The outcome of the last self-test: success, `TPM_RC_TESTING` while
    /// it runs, `TPM_RC_NEEDS_TEST` if it never ran, or the failure.
    pub test_result: ResponseCode,
}

/// Parses GetTestResult's parameters: `TPM2B_MAX_BUFFER outData`,
/// `TPM_RC testResult`.
pub fn parse_get_test_result(parameters: &[u8]) -> Result<TestResult<'_>, ProtoError> {
    let (out_data, rest) = split_tpm2b("outData", parameters)?;
    let mut reader = Reader::new(rest);
    let test_result = reader.u32().map_err(|e| e.named("testResult"))?;
    no_trailing_bytes("testResult", reader.rest())?;
    Ok(TestResult {
        out_data,
        test_result: ResponseCode::from_raw(test_result),
    })
}

fn no_trailing_bytes(what: &'static str, rest: &[u8]) -> Result<(), ProtoError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(ProtoError::TrailingBytes {
            what,
            extra: rest.len(),
        })
    }
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    fn remaining(&self) -> usize {
        self.input.len()
    }

    fn rest(self) -> &'a [u8] {
        self.input
    }

    fn bytes(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], ProtoError> {
        let Some((head, tail)) = self.input.split_at_checked(n) else {
            return Err(ProtoError::Truncated {
                what,
                needed: n,
                available: self.input.len(),
            });
        };
        self.input = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let bytes = self.bytes("field", N)?;
        // Cannot fail: `bytes` returned exactly N bytes.
        bytes.try_into().map_err(|_| ProtoError::Truncated {
            what: "field",
            needed: N,
            available: bytes.len(),
        })
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16, ProtoError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, ProtoError> {
        self.array().map(u32::from_be_bytes)
    }
}

impl ProtoError {
    /// Replaces the generic field name of a `Truncated` error.
    fn named(self, what: &'static str) -> Self {
        match self {
            Self::Truncated {
                needed, available, ..
            } => Self::Truncated {
                what,
                needed,
                available,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
