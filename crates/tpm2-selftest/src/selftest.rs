//! Proving that a TPM works, at one of three levels.
//!
//! - `none`: nothing is sent.
//! - `quick`: GetCapability for the family indicator (must be "2.0"), the
//!   manufacturer and the firmware version, then GetRandom. Cheap, and it
//!   exercises the whole path: device node, cgroup rule, driver, TPM.
//! - `full`: `quick`, then SelfTest(fullTest=YES) and GetTestResult.
//!
//! One deadline bounds the whole run. Responses that mean "not now"
//! (TPM_RC_TESTING, TPM_RC_RETRY, TPM_RC_YIELDED) are retried with a short
//! backoff, never past the deadline.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::proto::{self, property, ProtoError};
use super::response_code::{RcKind, ResponseCode};
use super::transport::{time_left, Transport, TransportError};
use super::SelfTestLevel;

/// How many random bytes `quick` asks for.
const RANDOM_BYTES_WANTED: u16 = 16;
/// First pause before resending a command the TPM asked us to retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause between retries: a TPM finishing its self-test should not
/// make us oversleep by much.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// What a successful self-test found. Serialized as JSON to cross the pipe
/// from the child that ran the test inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestReport {
    pub level: SelfTestLevel,
    /// `TPM_PT_FAMILY_INDICATOR` as text ("2.0"); `None` when skipped.
    pub family: Option<String>,
    /// `TPM_PT_MANUFACTURER` as text ("IBM", "INTC", "STM"); `None` when
    /// skipped.
    pub manufacturer: Option<String>,
    /// The firmware version as "a.b.c.d" (see [`firmware_version`]); `None`
    /// when skipped.
    pub firmware: Option<String>,
    /// How many random bytes the TPM produced.
    pub random_bytes: usize,
    /// The `testResult` of GetTestResult after a full self-test (0 is
    /// TPM_RC_SUCCESS); `None` unless the level is `full`.
    pub full_test_result: Option<u32>,
    /// How many times the TPM asked for a command to be sent again.
    pub retries: u32,
    pub duration_ms: u64,
}

impl SelfTestReport {
    fn skipped() -> Self {
        Self {
            level: SelfTestLevel::None,
            family: None,
            manufacturer: None,
            firmware: None,
            random_bytes: 0,
            full_test_result: None,
            retries: 0,
            duration_ms: 0,
        }
    }

    /// True when the level was `none` and the TPM was not touched.
    pub fn is_skipped(&self) -> bool {
        self.level == SelfTestLevel::None
    }
}

impl fmt::Display for SelfTestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_skipped() {
            return f.write_str("TPM self-test skipped (level none)");
        }
        let unknown = "?";
        write!(
            f,
            "TPM {} self-test passed in {} ms: family {}, manufacturer {}, \
             firmware {}, {} random bytes",
            self.level,
            self.duration_ms,
            self.family.as_deref().unwrap_or(unknown),
            self.manufacturer.as_deref().unwrap_or(unknown),
            self.firmware.as_deref().unwrap_or(unknown),
            self.random_bytes,
        )?;
        if let Some(result) = self.full_test_result {
            write!(f, ", full test result {result:#x}")?;
        }
        if self.retries > 0 {
            write!(f, ", {} retries", self.retries)?;
        }
        Ok(())
    }
}

/// The step of the self-test that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfTestStep {
    FamilyIndicator,
    Manufacturer,
    FirmwareVersion,
    GetRandom,
    SelfTest,
    GetTestResult,
}

impl fmt::Display for SelfTestStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FamilyIndicator => "GetCapability(TPM_PT_FAMILY_INDICATOR)",
            Self::Manufacturer => "GetCapability(TPM_PT_MANUFACTURER)",
            Self::FirmwareVersion => "GetCapability(TPM_PT_FIRMWARE_VERSION_1/2)",
            Self::GetRandom => "GetRandom",
            Self::SelfTest => "SelfTest(fullTest=YES)",
            Self::GetTestResult => "GetTestResult",
        })
    }
}

/// Why a step failed.
#[derive(Debug)]
pub enum SelfTestFailure {
    /// The command or its response did not get through.
    Transport(TransportError),
    /// The response was not a well-formed TPM 2.0 response.
    Malformed(ProtoError),
    /// The TPM answered with an error.
    Tpm(ResponseCode),
    /// The deadline passed while the TPM kept asking for a retry.
    StillBusy { last: ResponseCode, attempts: u32 },
    /// GetCapability did not return the property asked for.
    PropertyMissing { property: u32 },
    /// The device is not a TPM 2.0.
    NotTpm2 { family: String },
    /// GetRandom succeeded with no bytes.
    NoRandomBytes,
    /// GetRandom returned more bytes than requested.
    TooManyRandomBytes { requested: u16, returned: usize },
    /// The full self-test ran and reported a failure.
    TestFailed { test_result: ResponseCode },
}

impl fmt::Display for SelfTestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(err) => err.fmt(f),
            Self::Malformed(err) => err.fmt(f),
            Self::Tpm(rc) => rc.fmt(f),
            Self::StillBusy { last, attempts } => write!(
                f,
                "TPM still busy when the time ran out ({attempts} attempts); \
                 last answer: {last}"
            ),
            Self::PropertyMissing { property } => {
                write!(f, "the TPM did not report property {property:#x}")
            }
            Self::NotTpm2 { family } => write!(
                f,
                "the device reports TPM family {family:?}; a TPM 2.0 is required"
            ),
            Self::NoRandomBytes => f.write_str("the TPM returned no random bytes"),
            Self::TooManyRandomBytes {
                requested,
                returned,
            } => write!(
                f,
                "the TPM returned {returned} random bytes for {requested} requested"
            ),
            Self::TestFailed { test_result } => {
                write!(f, "the TPM's full self-test failed: {test_result}")
            }
        }
    }
}

/// A failed self-test: which step, why, and after how long.
#[derive(Debug)]
pub struct SelfTestError {
    pub level: SelfTestLevel,
    pub step: SelfTestStep,
    pub failure: SelfTestFailure,
    pub elapsed: Duration,
}

impl SelfTestError {
    /// The TPM response code behind the failure, if the TPM gave one.
    pub fn response_code(&self) -> Option<ResponseCode> {
        match self.failure {
            SelfTestFailure::Tpm(rc)
            | SelfTestFailure::StillBusy { last: rc, .. }
            | SelfTestFailure::TestFailed { test_result: rc } => Some(rc),
            _ => None,
        }
    }
}

impl fmt::Display for SelfTestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TPM {} self-test failed at {} after {} ms: {}",
            self.level,
            self.step,
            self.elapsed.as_millis(),
            self.failure
        )
    }
}

impl std::error::Error for SelfTestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.failure {
            SelfTestFailure::Transport(err) => Some(err),
            SelfTestFailure::Malformed(err) => Some(err),
            _ => None,
        }
    }
}

/// Runs the self-test at `level` over `transport`, all of it within
/// `timeout`.
pub fn run(
    transport: &mut dyn Transport,
    level: SelfTestLevel,
    timeout: Duration,
) -> Result<SelfTestReport, SelfTestError> {
    if level == SelfTestLevel::None {
        return Ok(SelfTestReport::skipped());
    }
    let started = Instant::now();
    // An absurd timeout (centuries) cannot overflow the clock; an hour is
    // then as good as forever.
    let deadline = started
        .checked_add(timeout)
        .unwrap_or(started + Duration::from_secs(3600));
    let mut session = Session {
        transport,
        level,
        started,
        deadline,
        retries: 0,
    };

    let family =
        session.text_property(SelfTestStep::FamilyIndicator, property::FAMILY_INDICATOR)?;
    if family != "2.0" {
        return Err(session.fail(
            SelfTestStep::FamilyIndicator,
            SelfTestFailure::NotTpm2 { family },
        ));
    }
    let manufacturer = session.text_property(SelfTestStep::Manufacturer, property::MANUFACTURER)?;
    let firmware = session.firmware_version()?;
    let random_bytes = session.random_bytes()?;
    let full_test_result = match level {
        SelfTestLevel::Full => Some(session.full_self_test()?),
        SelfTestLevel::Quick | SelfTestLevel::None => None,
    };

    Ok(SelfTestReport {
        level,
        family: Some(family),
        manufacturer: Some(manufacturer),
        firmware: Some(firmware),
        random_bytes,
        full_test_result,
        retries: session.retries,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// What a TPM_RC_TESTING answer means for a command.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnTesting {
    /// Not now: send the command again later.
    Retry,
    /// The command was accepted and the tests run in the background
    /// (SelfTest may answer this way).
    Accept,
}

/// State shared by the steps of one run.
struct Session<'t> {
    transport: &'t mut dyn Transport,
    level: SelfTestLevel,
    started: Instant,
    deadline: Instant,
    retries: u32,
}

impl Session<'_> {
    fn fail(&self, step: SelfTestStep, failure: SelfTestFailure) -> SelfTestError {
        SelfTestError {
            level: self.level,
            step,
            failure,
            elapsed: self.started.elapsed(),
        }
    }

    /// Sends `command` until the TPM gives an answer other than "not now",
    /// and returns the response parameters on success.
    fn call(
        &mut self,
        step: SelfTestStep,
        command: &[u8],
        on_testing: OnTesting,
    ) -> Result<Vec<u8>, SelfTestError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let bytes = self
                .transport
                .transact(command, self.deadline)
                .map_err(|err| self.fail(step, SelfTestFailure::Transport(err)))?;
            let response = proto::parse_response(&bytes)
                .map_err(|err| self.fail(step, SelfTestFailure::Malformed(err)))?;
            let rc = response.code;
            let accepted = rc.is_success()
                || (on_testing == OnTesting::Accept && rc.kind() == RcKind::Testing);
            if accepted {
                return response
                    .parameters()
                    .map(<[u8]>::to_vec)
                    .map_err(|err| self.fail(step, SelfTestFailure::Malformed(err)));
            }
            if !rc.is_retryable() {
                return Err(self.fail(step, SelfTestFailure::Tpm(rc)));
            }
            self.wait_before_retry(step, rc, attempts, &mut backoff)?;
        }
    }

    /// Sleeps before a retry, or fails if the deadline leaves no time for one.
    fn wait_before_retry(
        &mut self,
        step: SelfTestStep,
        last: ResponseCode,
        attempts: u32,
        backoff: &mut Duration,
    ) -> Result<(), SelfTestError> {
        let still_busy =
            |session: &Self| session.fail(step, SelfTestFailure::StillBusy { last, attempts });
        let Some(left) = time_left(self.deadline) else {
            return Err(still_busy(self));
        };
        self.retries += 1;
        tracing::debug!(%step, rc = last.raw(), attempts, "TPM asked for a retry");
        std::thread::sleep((*backoff).min(left));
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        if time_left(self.deadline).is_none() {
            return Err(still_busy(self));
        }
        Ok(())
    }

    /// GetCapability(TPM_PROPERTIES, first, count), parsed.
    fn properties(
        &mut self,
        step: SelfTestStep,
        first: u32,
        count: u32,
    ) -> Result<proto::TpmProperties, SelfTestError> {
        let command = proto::get_capability_tpm_properties(first, count);
        let parameters = self.call(step, &command, OnTesting::Retry)?;
        proto::parse_tpm_properties(&parameters)
            .map_err(|err| self.fail(step, SelfTestFailure::Malformed(err)))
    }

    /// One property's value. A TPM that lacks the property answers with the
    /// next one it has, so the property number is checked.
    fn property(&mut self, step: SelfTestStep, property: u32) -> Result<u32, SelfTestError> {
        let properties = self.properties(step, property, 1)?;
        properties
            .get(property)
            .ok_or_else(|| self.fail(step, SelfTestFailure::PropertyMissing { property }))
    }

    fn text_property(
        &mut self,
        step: SelfTestStep,
        property: u32,
    ) -> Result<String, SelfTestError> {
        self.property(step, property).map(property_text)
    }

    fn firmware_version(&mut self) -> Result<String, SelfTestError> {
        let step = SelfTestStep::FirmwareVersion;
        let properties = self.properties(step, property::FIRMWARE_VERSION_1, 2)?;
        let Some(first) = properties.get(property::FIRMWARE_VERSION_1) else {
            return Err(self.fail(
                step,
                SelfTestFailure::PropertyMissing {
                    property: property::FIRMWARE_VERSION_1,
                },
            ));
        };
        // A TPM may return fewer properties than asked for; ask again for
        // the second half rather than fail.
        let second = match properties.get(property::FIRMWARE_VERSION_2) {
            Some(value) => value,
            None => self.property(step, property::FIRMWARE_VERSION_2)?,
        };
        Ok(firmware_version(first, second))
    }

    /// GetRandom until [`RANDOM_BYTES_WANTED`] bytes arrived. A TPM may
    /// return fewer bytes than asked (at most one digest's worth); each
    /// answer must carry at least one. If the deadline comes first, the
    /// bytes already received are proof enough.
    fn random_bytes(&mut self) -> Result<usize, SelfTestError> {
        let step = SelfTestStep::GetRandom;
        let mut missing = RANDOM_BYTES_WANTED;
        while missing > 0 {
            if missing < RANDOM_BYTES_WANTED && time_left(self.deadline).is_none() {
                break;
            }
            let parameters = self.call(step, &proto::get_random(missing), OnTesting::Retry)?;
            let random = proto::parse_get_random(&parameters)
                .map_err(|err| self.fail(step, SelfTestFailure::Malformed(err)))?;
            let returned = random.len();
            let Some(count) = u16::try_from(returned)
                .ok()
                .filter(|n| (1..=missing).contains(n))
            else {
                let failure = if returned == 0 {
                    SelfTestFailure::NoRandomBytes
                } else {
                    SelfTestFailure::TooManyRandomBytes {
                        requested: missing,
                        returned,
                    }
                };
                return Err(self.fail(step, failure));
            };
            missing -= count;
        }
        Ok(usize::from(RANDOM_BYTES_WANTED - missing))
    }

    /// SelfTest(fullTest=YES), then GetTestResult until the tests are done.
    /// Returns the raw `testResult` (always 0 on success).
    fn full_self_test(&mut self) -> Result<u32, SelfTestError> {
        self.call(
            SelfTestStep::SelfTest,
            &proto::self_test(true),
            OnTesting::Accept,
        )?;
        let step = SelfTestStep::GetTestResult;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let parameters = self.call(step, &proto::get_test_result(), OnTesting::Retry)?;
            let result = proto::parse_get_test_result(&parameters)
                .map_err(|err| self.fail(step, SelfTestFailure::Malformed(err)))?;
            match result.test_result.kind() {
                RcKind::Success => return Ok(result.test_result.raw()),
                // The tests still run in the background.
                RcKind::Testing => {
                    self.wait_before_retry(step, result.test_result, attempts, &mut backoff)?
                }
                _ => {
                    return Err(self.fail(
                        step,
                        SelfTestFailure::TestFailed {
                            test_result: result.test_result,
                        },
                    ))
                }
            }
        }
    }
}

/// A four-character property (family indicator, manufacturer) as text:
/// big-endian bytes, NUL and space padding trimmed from both ends, anything
/// that is not printable ASCII escaped (the bytes come from the device).
fn property_text(value: u32) -> String {
    let bytes = value.to_be_bytes();
    let is_padding = |b: &u8| *b == 0 || *b == b' ';
    let start = bytes
        .iter()
        .position(|b| !is_padding(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_padding(b))
        .map_or(start, |i| i + 1);
    bytes
        .get(start..end)
        .unwrap_or_default()
        .escape_ascii()
        .to_string()
}

/// `TPM_PT_FIRMWARE_VERSION_1` and `_2` as "a.b.c.d": each 32-bit value
/// split into two 16-bit halves, most significant first.
///
/// The specification leaves the meaning of these values to the vendor. Most
/// vendors put a major.minor version in the first value and build numbers
/// in the second, 16 bits each, and publish their firmware lists and
/// security advisories in this dotted form (e.g. "7.85.4555.0") — which is
/// also how common TPM tools print it. Using the same form lets an operator
/// compare the log with a vendor advisory directly.
pub fn firmware_version(first: u32, second: u32) -> String {
    format!(
        "{}.{}.{}.{}",
        first >> 16,
        first & 0xFFFF,
        second >> 16,
        second & 0xFFFF
    )
}

#[cfg(test)]
mod tests;
