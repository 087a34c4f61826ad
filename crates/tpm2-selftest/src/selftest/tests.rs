//! Tests of the parent module, kept apart so that module reads as code.

use super::*;
use crate::scripted_transport::{
    properties, random, rc, response, test_result, Reply, ScriptedTransport,
};

const FAMILY_2_0: u32 = 0x322E_3000; // "2.0\0"
const IBM: u32 = 0x4942_4D00; // "IBM\0"
const FW1: u32 = 0x2019_1023;
const FW2: u32 = 0x0016_3636;

fn quick_script() -> Vec<Reply> {
    vec![
        Reply::Bytes(properties(
            true,
            &[(property::FAMILY_INDICATOR, FAMILY_2_0)],
        )),
        Reply::Bytes(properties(true, &[(property::MANUFACTURER, IBM)])),
        Reply::Bytes(properties(
            true,
            &[
                (property::FIRMWARE_VERSION_1, FW1),
                (property::FIRMWARE_VERSION_2, FW2),
            ],
        )),
        Reply::Bytes(random(16)),
    ]
}

fn run_script(
    script: Vec<Reply>,
    level: SelfTestLevel,
    timeout: Duration,
) -> (Result<SelfTestReport, SelfTestError>, Vec<Vec<u8>>) {
    let mut transport = ScriptedTransport::new(script);
    let result = run(&mut transport, level, timeout);
    (result, transport.sent)
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn quick_happy_path_sends_the_documented_commands() {
    let (result, sent) = run_script(quick_script(), SelfTestLevel::Quick, SECOND);
    let report = result.unwrap();
    assert_eq!(
        sent,
        [
            proto::get_capability_tpm_properties(0x100, 1),
            proto::get_capability_tpm_properties(0x105, 1),
            proto::get_capability_tpm_properties(0x10B, 2),
            proto::get_random(16),
        ]
    );
    assert_eq!(report.level, SelfTestLevel::Quick);
    assert_eq!(report.family.as_deref(), Some("2.0"));
    assert_eq!(report.manufacturer.as_deref(), Some("IBM"));
    assert_eq!(report.firmware.as_deref(), Some("8217.4131.22.13878"));
    assert_eq!(report.random_bytes, 16);
    assert_eq!(report.full_test_result, None);
    assert_eq!(report.retries, 0);
    let line = report.to_string();
    assert!(line.starts_with("TPM quick self-test passed"), "{line}");
}

#[test]
fn full_happy_path() {
    let mut script = quick_script();
    script.push(Reply::Bytes(rc(0)));
    script.push(Reply::Bytes(test_result(0)));
    let (result, sent) = run_script(script, SelfTestLevel::Full, SECOND);
    let report = result.unwrap();
    assert_eq!(report.full_test_result, Some(0));
    assert_eq!(sent[4], proto::self_test(true));
    assert_eq!(sent[5], proto::get_test_result());
    assert_eq!(sent.len(), 6);
}

#[test]
fn none_touches_nothing() {
    // An empty script panics on any command.
    let (result, sent) = run_script(vec![], SelfTestLevel::None, SECOND);
    let report = result.unwrap();
    assert!(report.is_skipped());
    assert!(sent.is_empty());
    assert_eq!(report.to_string(), "TPM self-test skipped (level none)");
}

#[test]
fn retries_testing_retry_and_yielded_then_succeeds() {
    let mut script = vec![
        Reply::Bytes(rc(0x90A)),
        Reply::Bytes(rc(0x922)),
        Reply::Bytes(rc(0x908)),
    ];
    script.extend(quick_script());
    let (result, sent) = run_script(script, SelfTestLevel::Quick, SECOND);
    let report = result.unwrap();
    assert_eq!(report.retries, 3);
    assert_eq!(sent.len(), 7);
    assert!(
        sent[..4].iter().all(|c| *c == sent[0]),
        "same command resent"
    );
}

#[test]
fn failure_mode_is_reported_at_the_first_step() {
    let (result, sent) = run_script(vec![Reply::Bytes(rc(0x101))], SelfTestLevel::Quick, SECOND);
    let err = result.unwrap_err();
    assert_eq!(sent.len(), 1, "no retry in failure mode");
    assert_eq!(err.step, SelfTestStep::FamilyIndicator);
    assert_eq!(err.response_code(), Some(ResponseCode::FAILURE));
    let msg = err.to_string();
    assert!(
        msg.contains("GetCapability(TPM_PT_FAMILY_INDICATOR)"),
        "{msg}"
    );
    assert!(msg.contains("failure mode (TPM_RC_FAILURE 0x101)"), "{msg}");
}

#[test]
fn gives_up_at_the_deadline_while_the_tpm_keeps_testing() {
    let timeout = Duration::from_millis(80);
    let started = Instant::now();
    let (result, sent) = run_script(
        vec![Reply::Always(rc(0x90A))],
        SelfTestLevel::Quick,
        timeout,
    );
    let waited = started.elapsed();
    let err = result.unwrap_err();
    assert!(
        matches!(err.failure, SelfTestFailure::StillBusy { last, .. } if last == ResponseCode::TESTING),
        "{err}"
    );
    assert!(waited >= timeout, "{waited:?}");
    assert!(waited < timeout + Duration::from_millis(50), "{waited:?}");
    assert!(
        sent.len() > 2,
        "retried with backoff: {} attempts",
        sent.len()
    );
    assert!(err.to_string().contains("TPM_RC_TESTING"), "{err}");
}

#[test]
fn transport_timeout_is_a_failure_of_the_step() {
    let script = vec![Reply::Fail(TransportError::Timeout {
        allowed: Duration::from_millis(250),
    })];
    let (result, _) = run_script(script, SelfTestLevel::Quick, SECOND);
    let err = result.unwrap_err();
    assert!(
        matches!(err.failure, SelfTestFailure::Transport(_)),
        "{err}"
    );
    assert!(
        err.to_string().contains("no response within 250 ms"),
        "{err}"
    );
}

#[test]
fn zero_timeout_fails_without_hanging() {
    let mut transport = ScriptedTransport::new(quick_script());
    let err = run(&mut transport, SelfTestLevel::Quick, Duration::ZERO).unwrap_err();
    assert!(matches!(
        err.failure,
        SelfTestFailure::Transport(TransportError::Timeout { .. })
    ));
}

#[test]
fn wrong_family_is_refused() {
    let script = vec![Reply::Bytes(properties(
        false,
        &[(property::FAMILY_INDICATOR, 0x312E_3200)], // "1.2\0"
    ))];
    let (result, _) = run_script(script, SelfTestLevel::Quick, SECOND);
    let err = result.unwrap_err();
    assert!(matches!(&err.failure, SelfTestFailure::NotTpm2 { family } if family == "1.2"));
    assert!(err.to_string().contains("a TPM 2.0 is required"), "{err}");
}

#[test]
fn missing_property_is_refused() {
    // The TPM answers with the next property it has.
    let script = vec![Reply::Bytes(properties(true, &[(0x101, 0)]))];
    let (result, _) = run_script(script, SelfTestLevel::Quick, SECOND);
    let err = result.unwrap_err();
    assert!(matches!(
        err.failure,
        SelfTestFailure::PropertyMissing { property: 0x100 }
    ));
}

#[test]
fn resource_manager_unsupported_command_is_named() {
    let mut script = quick_script();
    script.push(Reply::Bytes(rc(0x000B_0143)));
    let (result, _) = run_script(script, SelfTestLevel::Full, SECOND);
    let err = result.unwrap_err();
    assert_eq!(err.step, SelfTestStep::SelfTest);
    assert_eq!(
        err.response_code().map(ResponseCode::kind),
        Some(RcKind::CommandUnsupported)
    );
    let msg = err.to_string();
    assert!(msg.contains("0x000B0143"), "{msg}");
    assert!(msg.contains("kernel resource manager"), "{msg}");
}

#[test]
fn malformed_response_is_reported() {
    let mut bad = properties(true, &[(property::FAMILY_INDICATOR, FAMILY_2_0)]);
    bad[5] += 1; // size field one larger than the bytes
    let (result, _) = run_script(vec![Reply::Bytes(bad)], SelfTestLevel::Quick, SECOND);
    let err = result.unwrap_err();
    assert!(matches!(
        err.failure,
        SelfTestFailure::Malformed(ProtoError::SizeMismatch { .. })
    ));
}

#[test]
fn random_bytes_are_collected_across_short_answers() {
    let mut script = quick_script();
    script.pop();
    script.push(Reply::Bytes(random(10)));
    script.push(Reply::Bytes(random(6)));
    let (result, sent) = run_script(script, SelfTestLevel::Quick, SECOND);
    assert_eq!(result.unwrap().random_bytes, 16);
    assert_eq!(sent[3], proto::get_random(16));
    assert_eq!(sent[4], proto::get_random(6));
}

#[test]
fn random_answers_must_have_one_to_requested_bytes() {
    for (reply, expect_none) in [(random(0), true), (random(17), false)] {
        let mut script = quick_script();
        script.pop();
        script.push(Reply::Bytes(reply));
        let (result, _) = run_script(script, SelfTestLevel::Quick, SECOND);
        let err = result.unwrap_err();
        assert_eq!(err.step, SelfTestStep::GetRandom);
        if expect_none {
            assert!(
                matches!(err.failure, SelfTestFailure::NoRandomBytes),
                "{err}"
            );
        } else {
            assert!(
                matches!(
                    err.failure,
                    SelfTestFailure::TooManyRandomBytes {
                        requested: 16,
                        returned: 17
                    }
                ),
                "{err}"
            );
        }
    }
}

#[test]
fn firmware_second_half_is_fetched_if_missing() {
    let mut script = quick_script();
    script[2] = Reply::Bytes(properties(true, &[(property::FIRMWARE_VERSION_1, FW1)]));
    script.insert(
        3,
        Reply::Bytes(properties(true, &[(property::FIRMWARE_VERSION_2, FW2)])),
    );
    let (result, sent) = run_script(script, SelfTestLevel::Quick, SECOND);
    assert_eq!(
        result.unwrap().firmware.as_deref(),
        Some("8217.4131.22.13878")
    );
    assert_eq!(sent[3], proto::get_capability_tpm_properties(0x10C, 1));
}

#[test]
fn full_test_waits_while_testing_in_the_background() {
    let mut script = quick_script();
    script.push(Reply::Bytes(rc(0x90A))); // SelfTest: started, running
    script.push(Reply::Bytes(test_result(0x90A)));
    script.push(Reply::Bytes(test_result(0)));
    let (result, sent) = run_script(script, SelfTestLevel::Full, SECOND);
    let report = result.unwrap();
    assert_eq!(report.full_test_result, Some(0));
    assert_eq!(report.retries, 1);
    assert_eq!(sent.len(), 7, "SelfTest is not resent on TPM_RC_TESTING");
}

#[test]
fn full_test_failure_is_reported() {
    let mut script = quick_script();
    script.push(Reply::Bytes(rc(0)));
    script.push(Reply::Bytes(test_result(0x101)));
    let (result, _) = run_script(script, SelfTestLevel::Full, SECOND);
    let err = result.unwrap_err();
    assert_eq!(err.step, SelfTestStep::GetTestResult);
    assert_eq!(err.response_code(), Some(ResponseCode::FAILURE));
    assert!(err.to_string().contains("full self-test failed"), "{err}");
}

#[test]
fn full_test_error_response_after_success_fails_cleanly() {
    let mut script = quick_script();
    script.push(Reply::Bytes(rc(0)));
    script.push(Reply::Bytes(response(0, &[0, 0]))); // testResult missing
    let (result, _) = run_script(script, SelfTestLevel::Full, SECOND);
    assert!(matches!(
        result.unwrap_err().failure,
        SelfTestFailure::Malformed(_)
    ));
}

#[test]
fn report_round_trips_as_json() {
    let (result, _) = run_script(quick_script(), SelfTestLevel::Quick, SECOND);
    let report = result.unwrap();
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"level\":\"quick\""), "{json}");
    assert_eq!(
        serde_json::from_str::<SelfTestReport>(&json).unwrap(),
        report
    );
}

#[test]
fn property_text_trims_and_escapes() {
    assert_eq!(property_text(0x4942_4D00), "IBM");
    assert_eq!(property_text(0x5354_4D20), "STM");
    assert_eq!(property_text(0x494E_5443), "INTC");
    assert_eq!(property_text(0x0000_0000), "");
    assert_eq!(property_text(0x0041_0000), "A");
    assert_eq!(property_text(0x41FF_0A42), "A\\xff\\nB");
}

#[test]
fn firmware_version_is_four_dotted_halves() {
    assert_eq!(firmware_version(0x0007_0055, 0x11CB_0000), "7.85.4555.0");
    assert_eq!(firmware_version(u32::MAX, 0), "65535.65535.0.0");
}
