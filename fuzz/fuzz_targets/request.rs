//! Annotations to a TPM request: the keys and values are the container
//! author's. Input: one `key=value` per line; a first line starting with
//! `#name=` gives the container name a front-end passes (NRI).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::core::request::{self, Requester};
use oci_tpm_hook_fuzz::annotations;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, text) = match text.strip_prefix("#name=") {
        Some(rest) => match rest.split_once('\n') {
            Some((name, rest)) => (Some(name), rest),
            None => (Some(rest), ""),
        },
        None => (None, text),
    };
    let map = annotations(text);
    let mentioned = request::mentions_us(&map);
    assert_eq!(
        mentioned,
        map.keys().any(|k| k.starts_with(request::PREFIX)),
        "the fast path disagrees with a scan of every key"
    );
    let _ = Requester::from_annotations(&map);
    match request::parse(&map, name) {
        // Without one of our keys there is nothing to parse and nothing to refuse.
        Ok(Some(_)) | Err(_) => assert!(mentioned),
        Ok(None) => {}
    }
    if let Err(e) = request::parse(&map, name) {
        assert!(e.key.starts_with(request::PREFIX));
        let _ = e.to_string();
    }
});
