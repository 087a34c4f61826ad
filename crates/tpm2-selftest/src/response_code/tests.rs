//! Tests of the parent module, kept apart so that module reads as code.

use super::*;

fn kind(raw: u32) -> RcKind {
    ResponseCode::from_raw(raw).kind()
}

#[test]
fn decodes_the_codes_the_self_test_distinguishes() {
    let table = [
        (0x000, RcKind::Success),
        (0x100, RcKind::Initialize),
        (0x101, RcKind::Failure),
        (0x153, RcKind::NeedsTest),
        (0x143, RcKind::CommandUnsupported),
        (0x90A, RcKind::Testing),
        (0x922, RcKind::Retry),
        (0x908, RcKind::Yielded),
        (0x921, RcKind::OtherWarning(0x21)),
        (0x142, RcKind::OtherError(0x42)),
        (0x01E, RcKind::Tpm12(0x01E)),
        (0x50F, RcKind::Vendor(0x50F)),
        (0x0000_1101, RcKind::Unknown),
        (0x0100_0101, RcKind::Unknown),
        (0x000B_0000, RcKind::Unknown),
    ];
    for (raw, want) in table {
        assert_eq!(kind(raw), want, "{raw:#x}");
    }
}

#[test]
fn resource_manager_layer_keeps_the_meaning() {
    let rc = ResponseCode::from_raw(0x000B_0143);
    assert_eq!(rc.layer(), KERNEL_RESOURCE_MANAGER_LAYER);
    assert_eq!(rc.code(), 0x143);
    assert_eq!(rc.kind(), RcKind::CommandUnsupported);
    assert!(!rc.is_success());
    let msg = rc.to_string();
    assert!(msg.contains("TPM_RC_COMMAND_CODE"), "{msg}");
    assert!(msg.contains("0x000B0143"), "{msg}");
    assert!(msg.contains("resource manager"), "{msg}");
}

#[test]
fn format1_subjects() {
    // TPM_RC_VALUE on parameter 1: 0x080 + 0x004 + P (0x040) + 0x100.
    assert_eq!(
        kind(0x1C4),
        RcKind::Format1 {
            error: 0x04,
            subject: Format1Subject::Parameter(1)
        }
    );
    // Parameter numbers use four bits.
    assert_eq!(
        kind(0xFC4),
        RcKind::Format1 {
            error: 0x04,
            subject: Format1Subject::Parameter(15)
        }
    );
    // TPM_RC_HANDLE on handle 2.
    assert_eq!(
        kind(0x28B),
        RcKind::Format1 {
            error: 0x0B,
            subject: Format1Subject::Handle(2)
        }
    );
    // TPM_RC_BAD_AUTH on session 1: bit 11 selects sessions.
    assert_eq!(
        kind(0x9A2),
        RcKind::Format1 {
            error: 0x22,
            subject: Format1Subject::Session(1)
        }
    );
    assert_eq!(
        kind(0x084),
        RcKind::Format1 {
            error: 0x04,
            subject: Format1Subject::Unspecified
        }
    );
    let msg = ResponseCode::from_raw(0x1C4).to_string();
    assert!(msg.contains("TPM_RC_VALUE"), "{msg}");
    assert!(msg.contains("parameter 1"), "{msg}");
}

#[test]
fn only_testing_retry_and_yielded_are_retryable() {
    for raw in [0x90A, 0x922, 0x908, 0x000B_090A] {
        assert!(ResponseCode::from_raw(raw).is_retryable(), "{raw:#x}");
    }
    for raw in [0x000, 0x100, 0x101, 0x153, 0x143, 0x921, 0x1C4] {
        assert!(!ResponseCode::from_raw(raw).is_retryable(), "{raw:#x}");
    }
}

#[test]
fn messages_say_what_to_do() {
    let failure = ResponseCode::FAILURE.to_string();
    assert_eq!(
        failure,
        "TPM is in failure mode (TPM_RC_FAILURE 0x101): only \
         GetCapability/GetTestResult work; reset the TPM or check the \
         host's dmesg"
    );
    assert!(ResponseCode::INITIALIZE
        .to_string()
        .contains("TPM2_Startup"));
    assert!(ResponseCode::NEEDS_TEST.to_string().contains("full"));
    assert!(ResponseCode::TESTING.to_string().contains("0x90A"));
    assert!(ResponseCode::from_raw(0x01E)
        .to_string()
        .contains("does not speak TPM 2.0"));
    assert!(ResponseCode::from_raw(0x000A_0001)
        .to_string()
        .contains("software layer 10"));
}

#[test]
fn every_code_has_a_message() {
    // Exhaustive over the TPM's 16-bit space: decoding and Display
    // must never panic, and always say something.
    for raw in 0..=0xFFFFu32 {
        let rc = ResponseCode::from_raw(raw);
        assert!(!rc.to_string().is_empty());
    }
}
