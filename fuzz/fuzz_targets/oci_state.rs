//! The OCI state a runtime writes on the hook's stdin, from whoever started
//! the container: its id and annotations are theirs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::oci::state::{self, ContainerState};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = ContainerState::parse(data) {
        assert!(!s.id.is_empty());
        assert!(s.pid > 0);
        assert!(s.bundle.is_absolute());
    }
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = state::annotations(&doc);
    }
});
