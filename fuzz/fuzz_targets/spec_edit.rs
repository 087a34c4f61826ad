//! Edits of a bundle's config.json, which the engine wrote from the image
//! and the user's flags. An edit must be idempotent (a second apply changes
//! nothing) and all-or-nothing (on error the spec is as it was), and a spec
//! it accepted must then allow the device.
//!
//! Input: 8 parameter bytes (device numbers, group, access, node name), then
//! the spec as JSON.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::core::grant::{Grant, NODE_MODE};
use oci_tpm_hook::core::hook_entry::HookEntry;
use oci_tpm_hook::core::host::HostTpm;
use oci_tpm_hook::core::policy::{NodeAccess, DEFAULT_PATH};
use oci_tpm_hook::oci::bundle::Spec;
use oci_tpm_hook::oci::spec_edit::apply;
use oci_tpm_hook_fuzz::{params_and_rest, Unstructured};
use tpm2_selftest::SelfTestLevel;

fn grant(params: &[u8]) -> Grant {
    let mut u = Unstructured::new(params);
    // Small numbers, so that specs written by hand (and the seeds) match.
    let major = u32::from(u.arbitrary::<u8>().unwrap_or(253));
    let minor = u32::from(u.arbitrary::<u16>().unwrap_or(0));
    let gid = u32::from(u.arbitrary::<u8>().unwrap_or(102));
    let flags = u.arbitrary::<u8>().unwrap_or(0);
    let index = u.arbitrary::<u16>().unwrap_or(0);
    let name = if flags & 2 == 0 {
        format!("tpmrm{index}")
    } else {
        format!("tpm{index}")
    };
    Grant {
        device: HostTpm {
            path: Path::new("/dev").join(&name),
            name: name.clone(),
            major,
            minor,
        },
        container_path: Path::new("/dev").join(&name),
        mode: NODE_MODE,
        gid,
        group_name: Some("tss".into()),
        access: if flags & 1 == 0 {
            NodeAccess::Group
        } else {
            NodeAccess::ProcessGid
        },
        self_test: SelfTestLevel::Quick,
        timeout: Duration::from_millis(5000),
        required: flags & 4 == 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let (params, json) = params_and_rest(data, 8);
    let Ok(mut spec) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let grant = grant(params);
    let hook = HookEntry::unchecked(
        Path::new("/usr/bin/oci-tpm-hook"),
        Path::new(DEFAULT_PATH),
        &grant,
    );
    let before = spec.clone();
    match apply(&mut spec, &grant, &hook) {
        Err(_) => assert_eq!(spec, before, "a failed edit changed the spec"),
        Ok(changes) => {
            if changes.is_empty() {
                assert_eq!(
                    spec, before,
                    "an edit that reported no change changed the spec"
                );
            }
            let after = spec.clone();
            let again = apply(&mut spec, &grant, &hook).expect("a second apply failed");
            assert!(again.is_empty(), "a second apply changed: {again}");
            assert_eq!(spec, after);
            let edited = Spec {
                dir: "/bundle".into(),
                json: spec,
            };
            assert!(
                edited
                    .allows_char_device(grant.device.major, grant.device.minor)
                    .expect("the edited spec's rules do not parse"),
                "the edited spec does not allow the device"
            );
        }
    }
});
