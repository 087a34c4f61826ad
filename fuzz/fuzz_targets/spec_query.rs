//! Queries of a bundle's config.json (rootfs, user namespace, the hook's own
//! timeout, device rules) and the container process's identity from it.
//! Input: 4 parameter bytes (the device asked about), then the spec as JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::core::identity::ProcessIdentity;
use oci_tpm_hook::oci::bundle::Spec;
use oci_tpm_hook_fuzz::{params_and_rest, Unstructured};

fuzz_target!(|data: &[u8]| {
    let (params, json) = params_and_rest(data, 4);
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let mut u = Unstructured::new(params);
    let major = u32::from(u.arbitrary::<u8>().unwrap_or(253));
    let minor = u32::from(u.arbitrary::<u16>().unwrap_or(0));

    if let Ok(id) = ProcessIdentity::from_spec(&json) {
        let groups = id.groups();
        assert_eq!(groups.first(), Some(&id.gid));
        let _ = id.to_string();
    }
    let spec = Spec {
        dir: "/bundle".into(),
        json,
    };
    if let Ok(root) = spec.rootfs() {
        let _ = root;
    }
    let _ = spec.has_user_namespace();
    let _ = spec.own_hook_timeout();
    let _ = spec.allows_char_device(major, minor);
});
