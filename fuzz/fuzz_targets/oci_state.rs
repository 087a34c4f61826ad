//! The OCI state a runtime writes on the hook's stdin, from whoever started
//! the container: its id and annotations are theirs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::oci::bundle::BundleFile;
use oci_tpm_hook::oci::state::{self, ContainerState};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = ContainerState::parse(data) {
        assert!(!s.id.is_empty());
        assert!(s.pid > 0);
        assert!(s.bundle.is_absolute());
    }
    let full = serde_json::from_slice::<serde_json::Value>(data);
    if let Ok(doc) = &full {
        let _ = state::annotations(doc);
    }
    // The docker wrapper's fast path (annotations only) never answers
    // differently from the whole document. It may answer where the whole
    // document is refused: it skips the other fields without checking
    // their strings' UTF-8 (such a bundle asks for nothing and goes to the
    // runtime as it is).
    if let (Ok(fast), Ok(doc)) = (BundleFile::annotations_only(data), &full) {
        assert!(doc.is_object());
        assert_eq!(state::annotations(doc).expect("annotations"), fast);
    }
});
