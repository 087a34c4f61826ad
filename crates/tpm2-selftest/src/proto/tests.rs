//! Tests of the parent module, kept apart so that module reads as code.

use super::*;
use crate::response_code::RcKind;

/// Parses a space-separated hex string as written in the documentation.
fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

use crate::scripted_transport::response;

#[test]
fn commands_match_the_documented_bytes() {
    assert_eq!(
        get_capability_tpm_properties(property::FAMILY_INDICATOR, 1),
        hex("80 01 00 00 00 16 00 00 01 7a 00 00 00 06 00 00 01 00 00 00 00 01")
    );
    assert_eq!(
        get_capability_tpm_properties(property::MANUFACTURER, 1),
        hex("80 01 00 00 00 16 00 00 01 7a 00 00 00 06 00 00 01 05 00 00 00 01")
    );
    assert_eq!(
        get_capability_tpm_properties(property::FIRMWARE_VERSION_1, 2),
        hex("80 01 00 00 00 16 00 00 01 7a 00 00 00 06 00 00 01 0b 00 00 00 02")
    );
    assert_eq!(get_random(16), hex("80 01 00 00 00 0c 00 00 01 7b 00 10"));
    assert_eq!(self_test(true), hex("80 01 00 00 00 0b 00 00 01 43 01"));
    assert_eq!(self_test(false), hex("80 01 00 00 00 0b 00 00 01 43 00"));
    assert_eq!(get_test_result(), hex("80 01 00 00 00 0a 00 00 01 7c"));
}

#[test]
fn parses_a_good_capability_response() {
    // moreData=1, TPM_CAP_TPM_PROPERTIES, one property: family "2.0\0".
    let bytes = hex("80 01 00 00 00 1b 00 00 00 00 01 00 00 00 06 00 00 00 01 \
         00 00 01 00 32 2e 30 00");
    let response = parse_response(&bytes).unwrap();
    assert_eq!(response.code.kind(), RcKind::Success);
    let props = parse_tpm_properties(response.parameters().unwrap()).unwrap();
    assert!(props.more_data);
    assert_eq!(props.get(property::FAMILY_INDICATOR), Some(0x322E_3000));
    assert_eq!(props.get(property::MANUFACTURER), None);
}

#[test]
fn parses_an_error_response() {
    let failure = hex("80 01 00 00 00 0a 00 00 01 01");
    let response = parse_response(&failure).unwrap();
    assert_eq!(response.code, ResponseCode::FAILURE);
    let unsupported = hex("80 01 00 00 00 0a 00 0b 01 43");
    let response = parse_response(&unsupported).unwrap();
    assert_eq!(response.code.kind(), RcKind::CommandUnsupported);
    assert_eq!(response.code.layer(), 11);
}

#[test]
fn rejects_bad_headers() {
    assert_eq!(parse_response(&[]), Err(ProtoError::TooShort { len: 0 }));
    assert_eq!(
        parse_response(&hex("80 01 00 00 00 0a 00 00 01")),
        Err(ProtoError::TooShort { len: 9 })
    );
    // Size field larger, then smaller, than the bytes received.
    assert_eq!(
        parse_response(&hex("80 01 00 00 00 0b 00 00 00 00")),
        Err(ProtoError::SizeMismatch {
            header_size: 11,
            received: 10
        })
    );
    assert_eq!(
        parse_response(&hex("80 01 00 00 00 0a 00 00 00 00 00")),
        Err(ProtoError::SizeMismatch {
            header_size: 10,
            received: 11
        })
    );
    assert_eq!(
        parse_response(&hex("80 01 ff ff ff ff 00 00 00 00")),
        Err(ProtoError::SizeMismatch {
            header_size: u32::MAX,
            received: 10
        })
    );
    // Oversize, even with a consistent size field.
    let mut big = response(0, &vec![0; MAX_RESPONSE_SIZE]);
    assert_eq!(
        parse_response(&big),
        Err(ProtoError::TooLarge {
            len: MAX_RESPONSE_SIZE + 10
        })
    );
    big.truncate(MAX_RESPONSE_SIZE);
    big[2..6].copy_from_slice(&(MAX_RESPONSE_SIZE as u32).to_be_bytes());
    assert!(parse_response(&big).is_ok(), "exactly the maximum is fine");
    // Tags.
    assert_eq!(
        parse_response(&hex("80 03 00 00 00 0a 00 00 00 00")),
        Err(ProtoError::BadTag { tag: 0x8003 })
    );
    assert_eq!(
        parse_response(&hex("00 c4 00 00 00 0a 00 00 00 1e")),
        Err(ProtoError::Tpm12Response { code: 0x1e })
    );
}

#[test]
fn sessions_tag_has_sized_parameters() {
    // parameterSize 3, parameters "abc", then a session area.
    let mut body = vec![0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 1, 0];
    let mut bytes = response(0, &body);
    bytes[1] = 0x02;
    let response_ = parse_response(&bytes).unwrap();
    assert_eq!(response_.parameters().unwrap(), b"abc");
    // A parameterSize past the end is rejected.
    body[3] = 200;
    let mut bytes = response(0, &body);
    bytes[1] = 0x02;
    assert!(matches!(
        parse_response(&bytes).unwrap().parameters(),
        Err(ProtoError::Truncated { .. })
    ));
    let mut bytes = response(0, &[0, 0]);
    bytes[1] = 0x02;
    assert!(parse_response(&bytes).unwrap().parameters().is_err());
}

#[test]
fn rejects_bad_capability_data() {
    let props = |count: u32, pairs: usize| {
        let mut out = vec![0];
        out.extend_from_slice(&TPM_CAP_TPM_PROPERTIES.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend(vec![0xAB; pairs * 8]);
        out
    };
    assert_eq!(
        parse_tpm_properties(&props(2, 2)).unwrap().properties.len(),
        2
    );
    assert_eq!(
        parse_tpm_properties(&props(0, 0)).unwrap().properties.len(),
        0
    );
    for (count, pairs) in [(3, 2), (1, 2), (u32::MAX, 1), (0x2000_0000, 0)] {
        assert!(
            matches!(
                parse_tpm_properties(&props(count, pairs)),
                Err(ProtoError::CountMismatch { .. })
            ),
            "count {count}, {pairs} pairs"
        );
    }
    // A half property at the end.
    let mut odd = props(1, 1);
    odd.pop();
    assert!(parse_tpm_properties(&odd).is_err());
    // Every truncation of a valid body is an error, never a panic.
    let good = props(2, 2);
    for len in 0..good.len() {
        assert!(parse_tpm_properties(&good[..len]).is_err(), "len {len}");
    }
    // Another capability (TPM_CAP_ALGS).
    let mut algs = props(0, 0);
    algs[1..5].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(
        parse_tpm_properties(&algs),
        Err(ProtoError::WrongCapability {
            expected: 6,
            got: 0
        })
    );
}

#[test]
fn parses_tpm2b_and_get_random() {
    assert_eq!(parse_get_random(&[0, 3, 1, 2, 3]).unwrap(), &[1, 2, 3]);
    assert_eq!(parse_get_random(&[0, 0]).unwrap(), &[] as &[u8]);
    assert!(matches!(
        parse_get_random(&[0, 4, 1, 2, 3]),
        Err(ProtoError::Truncated {
            what: "randomBytes",
            ..
        })
    ));
    assert!(matches!(
        parse_get_random(&[0, 1, 1, 2]),
        Err(ProtoError::TrailingBytes { .. })
    ));
    assert!(parse_get_random(&[0]).is_err());
    assert!(parse_get_random(&[0xFF, 0xFF]).is_err());
    assert_eq!(
        split_tpm2b("x", &[0, 1, 9, 7]).unwrap(),
        (&[9u8][..], &[7u8][..])
    );
}

#[test]
fn parses_get_test_result() {
    let ok = parse_get_test_result(&[0, 2, 0xAA, 0xBB, 0, 0, 0, 0]).unwrap();
    assert_eq!(ok.out_data, &[0xAA, 0xBB]);
    assert!(ok.test_result.is_success());
    let failed = parse_get_test_result(&[0, 0, 0, 0, 1, 1]).unwrap();
    assert_eq!(failed.test_result, ResponseCode::FAILURE);
    assert!(parse_get_test_result(&[0, 0, 0, 0, 1]).is_err());
    assert!(parse_get_test_result(&[0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(parse_get_test_result(&[0, 9, 0, 0, 0, 0]).is_err());
}

#[test]
fn never_panics_on_arbitrary_bytes() {
    // A cheap deterministic fuzz: every parser over many short inputs
    // built from a small LCG, plus every prefix of a valid response.
    let mut state = 0x1234_5678u32;
    let mut next = || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (state >> 16) as u8
    };
    for len in 0..64 {
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| next()).collect();
            if let Ok(response) = parse_response(&bytes) {
                let _ = response.parameters();
            }
            let _ = parse_tpm_properties(&bytes);
            let _ = parse_get_random(&bytes);
            let _ = parse_get_test_result(&bytes);
        }
    }
}
