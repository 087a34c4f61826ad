//! TPM 2.0 response codes (`TPM_RC`), decoded into what they mean for the
//! person reading the log.
//!
//! Layout of a response code, from TPM 2.0 Part 2 ("TPM_RC") and the TSS
//! convention for software layers:
//!
//! ```text
//!  bits 31..24  reserved (0)
//!  bits 23..16  layer: 0 = the TPM itself, otherwise the software that
//!               answered instead (the Linux resource manager uses 11)
//!  bits 15..12  reserved (0) in TPM codes
//!  bit  7 = 1   format 1: bits 5..0 error number, bit 6 = parameter,
//!               bits 11..8 parameter number (bit 6 set) or handle/session
//!               number (bit 6 clear; bit 11 = session, bits 10..8 = number)
//!  bit  7 = 0   format 0: bit 8 = TPM 2.0 code (clear: a TPM 1.2 code),
//!               bit 10 = vendor defined, bit 11 = warning, bits 6..0 number
//! ```

use std::fmt;

/// Bit 7: a format-1 code, tied to a parameter, handle or session.
const RC_FMT1: u16 = 0x080;
/// Format 1, bit 6: the number in bits 8..11 is a parameter number.
const RC_FMT1_PARAMETER: u16 = 0x040;
/// Format 1 without bit 6, bit 11: the number in bits 8..10 is a session.
const RC_FMT1_SESSION: u16 = 0x800;
/// Format 0, bit 8: a TPM 2.0 code (clear means a TPM 1.2 code).
const RC_VER1: u16 = 0x100;
/// Format 0, bit 10: defined by the TPM vendor, not by the specification.
const RC_VENDOR: u16 = 0x400;
/// Format 0, bit 11: a warning — the command did not run, and may work later.
const RC_WARN: u16 = 0x800;
/// Bits 12..15 are always zero in a code from a TPM.
const RC_RESERVED: u16 = 0xF000;

/// Layer number the Linux kernel resource manager (`/dev/tpmrm*`) puts in
/// bits 16..23 of codes it generates itself instead of the TPM.
pub const KERNEL_RESOURCE_MANAGER_LAYER: u8 = 11;

/// A raw response code as found in a response header, with decoding helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseCode(u32);

/// What a response code means, independent of the layer that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcKind {
    /// `TPM_RC_SUCCESS`.
    Success,
    /// `TPM_RC_INITIALIZE` (0x100): no `TPM2_Startup` since reset.
    Initialize,
    /// `TPM_RC_FAILURE` (0x101): failure mode; only GetCapability and
    /// GetTestResult still work.
    Failure,
    /// `TPM_RC_NEEDS_TEST` (0x153): a function must be self-tested first.
    NeedsTest,
    /// `TPM_RC_COMMAND_CODE` (0x143): the command is not implemented.
    CommandUnsupported,
    /// `TPM_RC_TESTING` (0x90A): self-test in progress; retry later.
    Testing,
    /// `TPM_RC_RETRY` (0x922): the TPM asks for the command again.
    Retry,
    /// `TPM_RC_YIELDED` (0x908): the TPM stopped a long command; resend it.
    Yielded,
    /// A format-1 error about one parameter, handle or session.
    Format1 {
        /// The error number, bits 0..5 (`TPM_RC_VALUE` is 0x04, …).
        error: u8,
        /// What the error is about.
        subject: Format1Subject,
    },
    /// Another format-0 TPM 2.0 error; the error number (bits 0..6).
    OtherError(u8),
    /// Another format-0 TPM 2.0 warning; the warning number (bits 0..6).
    OtherWarning(u8),
    /// A vendor-defined code (bit 10); the low 12 bits.
    Vendor(u16),
    /// A TPM 1.2 code (format 0 without bit 8): the device does not speak
    /// TPM 2.0.
    Tpm12(u16),
    /// Reserved bits set, or a zero code from a software layer: not a code
    /// any TPM or resource manager should produce.
    Unknown,
}

/// The part of a command a format-1 error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format1Subject {
    /// The n-th parameter (1..=15).
    Parameter(u8),
    /// The n-th handle (1..=7).
    Handle(u8),
    /// The n-th session (1..=7).
    Session(u8),
    /// The TPM did not say which.
    Unspecified,
}

impl ResponseCode {
    pub const SUCCESS: Self = Self(0x000);
    pub const INITIALIZE: Self = Self(0x100);
    pub const FAILURE: Self = Self(0x101);
    pub const COMMAND_CODE: Self = Self(0x143);
    pub const NEEDS_TEST: Self = Self(0x153);
    pub const YIELDED: Self = Self(0x908);
    pub const TESTING: Self = Self(0x90A);
    pub const RETRY: Self = Self(0x922);

    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Which layer answered: 0 is the TPM, anything else is software in
    /// between (see [`KERNEL_RESOURCE_MANAGER_LAYER`]).
    pub const fn layer(self) -> u8 {
        (self.0 >> 16) as u8
    }

    /// The TPM-format code in the low 16 bits, without the layer.
    pub const fn code(self) -> u16 {
        self.0 as u16
    }

    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// Codes that mean "not now": the same command may succeed if sent
    /// again after a short wait.
    pub fn is_retryable(self) -> bool {
        matches!(
            self.kind(),
            RcKind::Testing | RcKind::Retry | RcKind::Yielded
        )
    }

    /// Decode the low 16 bits; the layer does not change the meaning (the
    /// resource manager reuses TPM codes, e.g. 0x000B0143).
    pub fn kind(self) -> RcKind {
        if self.0 == 0 {
            return RcKind::Success;
        }
        // Bits 24..31 are reserved; a code with them set came from no layer
        // we know how to read.
        let code = self.code();
        if self.0 >> 24 != 0 || code & RC_RESERVED != 0 || code == 0 {
            return RcKind::Unknown;
        }
        if code & RC_FMT1 != 0 {
            return RcKind::Format1 {
                error: (code & 0x3F) as u8,
                subject: format1_subject(code),
            };
        }
        if code & RC_VER1 == 0 {
            return RcKind::Tpm12(code);
        }
        if code & RC_VENDOR != 0 {
            return RcKind::Vendor(code & 0x0FFF);
        }
        let number = (code & 0x7F) as u8;
        if code & RC_WARN != 0 {
            match number {
                0x08 => RcKind::Yielded,
                0x0A => RcKind::Testing,
                0x22 => RcKind::Retry,
                n => RcKind::OtherWarning(n),
            }
        } else {
            match number {
                0x00 => RcKind::Initialize,
                0x01 => RcKind::Failure,
                0x43 => RcKind::CommandUnsupported,
                0x53 => RcKind::NeedsTest,
                n => RcKind::OtherError(n),
            }
        }
    }

    /// The specification's name for the code, when it has one we know.
    pub fn name(self) -> Option<&'static str> {
        match self.kind() {
            RcKind::Success => Some("TPM_RC_SUCCESS"),
            RcKind::Initialize => Some("TPM_RC_INITIALIZE"),
            RcKind::Failure => Some("TPM_RC_FAILURE"),
            RcKind::NeedsTest => Some("TPM_RC_NEEDS_TEST"),
            RcKind::CommandUnsupported => Some("TPM_RC_COMMAND_CODE"),
            RcKind::Testing => Some("TPM_RC_TESTING"),
            RcKind::Retry => Some("TPM_RC_RETRY"),
            RcKind::Yielded => Some("TPM_RC_YIELDED"),
            RcKind::Format1 { error, .. } => format1_name(error),
            RcKind::OtherError(n) => format0_error_name(n),
            RcKind::OtherWarning(n) => warning_name(n),
            RcKind::Vendor(_) | RcKind::Tpm12(_) | RcKind::Unknown => None,
        }
    }

    /// The code as printed in messages: three hex digits for the TPM's own
    /// codes (as in the specification), all eight when a layer is set so
    /// the value matches what other tools print.
    fn hex(self) -> String {
        if self.layer() == 0 {
            format!("0x{:03X}", self.0)
        } else {
            format!("0x{:08X}", self.0)
        }
    }
}

fn format1_subject(code: u16) -> Format1Subject {
    if code & RC_FMT1_PARAMETER != 0 {
        match ((code >> 8) & 0xF) as u8 {
            0 => Format1Subject::Unspecified,
            n => Format1Subject::Parameter(n),
        }
    } else {
        match ((code >> 8) & 0x7) as u8 {
            0 => Format1Subject::Unspecified,
            n if code & RC_FMT1_SESSION != 0 => Format1Subject::Session(n),
            n => Format1Subject::Handle(n),
        }
    }
}

fn format1_name(error: u8) -> Option<&'static str> {
    Some(match error {
        0x01 => "TPM_RC_ASYMMETRIC",
        0x02 => "TPM_RC_ATTRIBUTES",
        0x03 => "TPM_RC_HASH",
        0x04 => "TPM_RC_VALUE",
        0x05 => "TPM_RC_HIERARCHY",
        0x07 => "TPM_RC_KEY_SIZE",
        0x08 => "TPM_RC_MGF",
        0x09 => "TPM_RC_MODE",
        0x0A => "TPM_RC_TYPE",
        0x0B => "TPM_RC_HANDLE",
        0x0C => "TPM_RC_KDF",
        0x0D => "TPM_RC_RANGE",
        0x0E => "TPM_RC_AUTH_FAIL",
        0x0F => "TPM_RC_NONCE",
        0x10 => "TPM_RC_PP",
        0x12 => "TPM_RC_SCHEME",
        0x15 => "TPM_RC_SIZE",
        0x16 => "TPM_RC_SYMMETRIC",
        0x17 => "TPM_RC_TAG",
        0x18 => "TPM_RC_SELECTOR",
        0x1A => "TPM_RC_INSUFFICIENT",
        0x1B => "TPM_RC_SIGNATURE",
        0x1C => "TPM_RC_KEY",
        0x1D => "TPM_RC_POLICY_FAIL",
        0x1F => "TPM_RC_INTEGRITY",
        0x20 => "TPM_RC_TICKET",
        0x21 => "TPM_RC_RESERVED_BITS",
        0x22 => "TPM_RC_BAD_AUTH",
        0x23 => "TPM_RC_EXPIRED",
        0x24 => "TPM_RC_POLICY_CC",
        0x25 => "TPM_RC_BINDING",
        0x26 => "TPM_RC_CURVE",
        0x27 => "TPM_RC_ECC_POINT",
        _ => return None,
    })
}

fn format0_error_name(number: u8) -> Option<&'static str> {
    Some(match number {
        0x03 => "TPM_RC_SEQUENCE",
        0x0B => "TPM_RC_PRIVATE",
        0x19 => "TPM_RC_HMAC",
        0x20 => "TPM_RC_DISABLED",
        0x21 => "TPM_RC_EXCLUSIVE",
        0x24 => "TPM_RC_AUTH_TYPE",
        0x25 => "TPM_RC_AUTH_MISSING",
        0x26 => "TPM_RC_POLICY",
        0x27 => "TPM_RC_PCR",
        0x28 => "TPM_RC_PCR_CHANGED",
        0x2D => "TPM_RC_UPGRADE",
        0x2E => "TPM_RC_TOO_MANY_CONTEXTS",
        0x2F => "TPM_RC_AUTH_UNAVAILABLE",
        0x30 => "TPM_RC_REBOOT",
        0x31 => "TPM_RC_UNBALANCED",
        0x42 => "TPM_RC_COMMAND_SIZE",
        0x44 => "TPM_RC_AUTHSIZE",
        0x45 => "TPM_RC_AUTH_CONTEXT",
        0x46 => "TPM_RC_NV_RANGE",
        0x47 => "TPM_RC_NV_SIZE",
        0x48 => "TPM_RC_NV_LOCKED",
        0x49 => "TPM_RC_NV_AUTHORIZATION",
        0x4A => "TPM_RC_NV_UNINITIALIZED",
        0x4B => "TPM_RC_NV_SPACE",
        0x4C => "TPM_RC_NV_DEFINED",
        0x50 => "TPM_RC_BAD_CONTEXT",
        0x51 => "TPM_RC_CPHASH",
        0x52 => "TPM_RC_PARENT",
        0x54 => "TPM_RC_NO_RESULT",
        0x55 => "TPM_RC_SENSITIVE",
        _ => return None,
    })
}

fn warning_name(number: u8) -> Option<&'static str> {
    Some(match number {
        0x01 => "TPM_RC_CONTEXT_GAP",
        0x02 => "TPM_RC_OBJECT_MEMORY",
        0x03 => "TPM_RC_SESSION_MEMORY",
        0x04 => "TPM_RC_MEMORY",
        0x05 => "TPM_RC_SESSION_HANDLES",
        0x06 => "TPM_RC_OBJECT_HANDLES",
        0x07 => "TPM_RC_LOCALITY",
        0x09 => "TPM_RC_CANCELED",
        0x10..=0x16 => "TPM_RC_REFERENCE_H*",
        0x18..=0x1E => "TPM_RC_REFERENCE_S*",
        0x20 => "TPM_RC_NV_RATE",
        0x21 => "TPM_RC_LOCKOUT",
        0x23 => "TPM_RC_NV_UNAVAILABLE",
        _ => return None,
    })
}

impl fmt::Display for Format1Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parameter(n) => write!(f, "parameter {n}"),
            Self::Handle(n) => write!(f, "handle {n}"),
            Self::Session(n) => write!(f, "session {n}"),
            Self::Unspecified => f.write_str("the command"),
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        let name = self.name().unwrap_or("unnamed code");
        match self.kind() {
            RcKind::Success => write!(f, "success ({name})")?,
            RcKind::Initialize => write!(
                f,
                "TPM has not been started ({name} {hex}): it never received \
                 TPM2_Startup, which the kernel sends at boot; check the host's \
                 dmesg for TPM errors"
            )?,
            RcKind::Failure => write!(
                f,
                "TPM is in failure mode ({name} {hex}): only \
                 GetCapability/GetTestResult work; reset the TPM or check the \
                 host's dmesg"
            )?,
            RcKind::NeedsTest => write!(
                f,
                "TPM must self-test a function before running this command \
                 ({name} {hex}): run a full self-test (self-test level `full`, \
                 or `tpm2_selftest --fulltest`)"
            )?,
            RcKind::CommandUnsupported => {
                write!(f, "TPM does not implement this command ({name} {hex})")?
            }
            RcKind::Testing => write!(
                f,
                "TPM is busy with its self-test ({name} {hex}): try again in a \
                 moment"
            )?,
            RcKind::Retry => write!(f, "TPM asks for the command again ({name} {hex})")?,
            RcKind::Yielded => write!(
                f,
                "TPM stopped the command before it finished ({name} {hex}): \
                 send it again"
            )?,
            RcKind::Format1 { error, subject } => write!(
                f,
                "TPM rejected {subject}: {name} (format-1 error {error:#04x}, \
                 code {hex})"
            )?,
            RcKind::OtherError(_) => write!(f, "TPM error {name} ({hex})")?,
            RcKind::OtherWarning(_) => write!(
                f,
                "TPM warning {name} ({hex}): the command did not run; it may \
                 succeed later"
            )?,
            RcKind::Vendor(_) => write!(
                f,
                "vendor-specific TPM error {hex}: see the TPM vendor's \
                 documentation"
            )?,
            RcKind::Tpm12(_) => write!(
                f,
                "TPM 1.2 error code {hex}: the device does not speak TPM 2.0"
            )?,
            RcKind::Unknown => write!(f, "unrecognised response code {hex}")?,
        }
        match self.layer() {
            0 => Ok(()),
            KERNEL_RESOURCE_MANAGER_LAYER => write!(
                f,
                " [answered by the kernel resource manager (layer 11), not \
                 the TPM]"
            ),
            layer => write!(f, " [answered by software layer {layer}, not the TPM]"),
        }
    }
}

#[cfg(test)]
mod tests;
