//! The minimal TPM 2.0 wire protocol needed to prove a TPM works, and the
//! transports that carry it.
//!
//! A library of its own: it knows nothing of containers, so a health probe,
//! a device plugin or any other tool can prove a TPM with it.
//!
//! - [`proto`]: command marshaling and response parsing (pure, no I/O).
//! - [`response_code`]: decoding of `TPM_RC` values into something a person
//!   can act on.
//! - [`transport`]: one command in, one response out, bounded by a deadline —
//!   over a TPM character device or a swtpm unix socket.
//! - [`selftest`]: the `quick` / `full` self-test built on the above.
//!
//! [`SelfTestLevel`] lives here because it is also the vocabulary of the
//! `oci-tpm-hook/self-test` annotation and of the policy file.

pub mod proto;
pub mod response_code;
pub mod selftest;
pub mod transport;

#[cfg(test)]
mod scripted_transport;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use response_code::{RcKind, ResponseCode};
pub use selftest::{
    run as run_self_test, SelfTestError, SelfTestFailure, SelfTestReport, SelfTestStep,
};
pub use transport::{DeviceTransport, SocketTransport, Transport, TransportError};

/// Why [`self_test_device`] failed: the device could not be opened, or the
/// self-test over it failed. Shows and chains as the error inside.
#[derive(Debug)]
pub enum DeviceSelfTestError {
    Open(TransportError),
    SelfTest(SelfTestError),
}

impl fmt::Display for DeviceSelfTestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open(e) => e.fmt(f),
            Self::SelfTest(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DeviceSelfTestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open(e) => e.source(),
            Self::SelfTest(e) => e.source(),
        }
    }
}

/// Opens the TPM character device at `path` and runs the self-test at
/// `level` over it within `timeout`: what a probe of a TPM node needs.
pub fn self_test_device(
    path: &Path,
    level: SelfTestLevel,
    timeout: Duration,
) -> Result<SelfTestReport, DeviceSelfTestError> {
    let mut transport = DeviceTransport::open(path).map_err(DeviceSelfTestError::Open)?;
    selftest::run(&mut transport, level, timeout).map_err(DeviceSelfTestError::SelfTest)
}

/// How much to prove about a TPM before a container may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfTestLevel {
    /// Do not talk to the TPM at all.
    None,
    /// Identify the TPM (family, manufacturer, firmware) and draw random
    /// bytes: cheap, and proves the device node, the cgroup rule and the
    /// TPM itself all work.
    #[default]
    Quick,
    /// `quick`, then ask the TPM to test all of its functions and check the
    /// result. Can take seconds on real hardware.
    Full,
}

impl SelfTestLevel {
    /// Every level, in increasing order of effort.
    pub const ALL: [SelfTestLevel; 3] = [Self::None, Self::Quick, Self::Full];

    /// The spelling used in annotations, the policy file and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Quick => "quick",
            Self::Full => "full",
        }
    }
}

impl fmt::Display for SelfTestLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A self-test level that is not one of `none`, `quick`, `full`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSelfTestLevelError {
    /// The rejected value, as given.
    pub value: String,
}

impl fmt::Display for ParseSelfTestLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid self-test level {:?}: allowed values are none, quick, full",
            self.value
        )
    }
}

impl std::error::Error for ParseSelfTestLevelError {}

impl FromStr for SelfTestLevel {
    type Err = ParseSelfTestLevelError;

    /// Exact, lowercase match only: the same spelling must mean the same
    /// thing in an annotation, the policy file and JSON.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| ParseSelfTestLevelError {
                value: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_round_trips_through_str_display_and_json() {
        for level in SelfTestLevel::ALL {
            let text = level.to_string();
            assert_eq!(text.parse::<SelfTestLevel>().unwrap(), level);
            let json = serde_json::to_string(&level).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<SelfTestLevel>(&json).unwrap(), level);
        }
    }

    #[test]
    fn level_default_is_quick() {
        assert_eq!(SelfTestLevel::default(), SelfTestLevel::Quick);
    }

    #[test]
    fn bad_level_names_value_and_allowed_values() {
        for bad in ["", "Quick", "fast", " full", "none "] {
            let err = bad.parse::<SelfTestLevel>().unwrap_err();
            assert_eq!(err.value, bad);
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("none, quick, full"), "{msg}");
        }
    }

    #[test]
    fn a_device_that_cannot_be_opened_is_an_open_error_naming_it() {
        let path = Path::new("/nonexistent/tpmrm9");
        let err = self_test_device(path, SelfTestLevel::Quick, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, DeviceSelfTestError::Open(_)), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/tpmrm9"), "{err}");
        // Shown as the transport's own error.
        let DeviceSelfTestError::Open(inner) = &err else {
            unreachable!()
        };
        assert_eq!(err.to_string(), inner.to_string());
    }

    #[test]
    fn bad_level_in_json_is_an_error() {
        assert!(serde_json::from_str::<SelfTestLevel>("\"Full\"").is_err());
    }
}
