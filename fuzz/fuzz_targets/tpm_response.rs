//! TPM 2.0 responses as a device (or whatever sits behind the node) sends
//! them, and response codes decoded for people.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpm2_selftest::proto;
use tpm2_selftest::ResponseCode;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = proto::parse_response(data) {
        assert!(data.len() >= proto::HEADER_SIZE && data.len() <= proto::MAX_RESPONSE_SIZE);
        let _ = response.code.to_string();
        if let Ok(parameters) = response.parameters() {
            parse_parameters(parameters);
        }
    }
    // The same bytes as bare parameters, the way the self-test reads them.
    parse_parameters(data);

    // Every 32-bit word as a response code.
    for word in data.chunks_exact(4) {
        let rc = ResponseCode::from_raw(u32::from_be_bytes(word.try_into().unwrap()));
        let _ = (
            rc.kind(),
            rc.name(),
            rc.layer(),
            rc.code(),
            rc.is_retryable(),
        );
        let text = rc.to_string();
        assert!(!text.is_empty());
        if rc.is_success() {
            assert!(!rc.is_retryable());
        }
    }
});

fn parse_parameters(parameters: &[u8]) {
    if let Ok(props) = proto::parse_tpm_properties(parameters) {
        assert_eq!(9 + 8 * props.properties.len(), parameters.len());
        if let Some(first) = props.properties.first() {
            assert!(props.get(first.property).is_some());
        }
    }
    if let Ok(random) = proto::parse_get_random(parameters) {
        assert_eq!(random.len() + 2, parameters.len());
    }
    if let Ok(result) = proto::parse_get_test_result(parameters) {
        assert_eq!(result.out_data.len() + 6, parameters.len());
    }
    let _ = proto::split_tpm2b("fuzz", parameters);
}
