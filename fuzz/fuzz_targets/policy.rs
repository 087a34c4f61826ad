//! The policy file (TOML). Root writes it, but a malformed one must be an
//! error, never a crash, and what it accepts must hold its own rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::core::policy::{glob_match, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::parse(text) {
        assert!(!policy.devices.allow.is_empty());
        assert!(policy.hook.path.is_absolute());
        let timeout = policy.self_test_timeout();
        assert!(timeout.as_millis() >= 1 && timeout.as_millis() <= 120_000);
        for name in ["tpmrm0", "tpm0", "tpmrm10", ""] {
            let _ = policy.check_device(name);
        }
    }
    // The matcher alone, with the text split into a pattern and a name.
    if let Some((pattern, name)) = text.split_once('\n') {
        let matched = glob_match(pattern, name);
        if !pattern.contains('*') {
            assert_eq!(matched, pattern == name);
        }
        if pattern == "*" {
            assert!(matched);
        }
    }
});
