//! The NRI messages (package `nri.pkg.api.v1alpha1`, as spoken by
//! containerd 1.7 and later and CRI-O), generated with prost from NRI's own
//! `api.proto` (see `generated/nri_api.rs` for the source and the command).
//!
//! The generated code is checked in, so a build needs neither the `.proto`
//! file nor a protobuf compiler; `make proto-check` proves it is what the
//! generator writes. Decoding skips fields it does not know, so newer
//! runtimes, which add fields, are understood.

mod generated {
    include!("generated/nri_api.rs");
}

pub use generated::*;
pub use prost::Message;

pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";

/// The subscription bit for an event: event N is bit N-1.
pub const fn event_mask(event: Event) -> i32 {
    1 << (event as i32 - 1)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn device() -> LinuxDevice {
        LinuxDevice {
            path: "/dev/tpmrm0".into(),
            r#type: "c".into(),
            major: 253,
            minor: 65536,
            file_mode: Some(OptionalFileMode { value: 0o660 }),
            uid: Some(OptionalUInt32 { value: 0 }),
            gid: Some(OptionalUInt32 { value: 102 }),
        }
    }

    fn hooks() -> Hooks {
        Hooks {
            create_runtime: vec![Hook {
                path: "/usr/bin/oci-tpm-hook".into(),
                args: vec!["oci-tpm-hook".into()],
                env: vec!["OCI_TPM_HOOK_CONFIG=/etc/tpm/policy.toml".into()],
                timeout: Some(OptionalInt { value: 10 }),
            }],
            poststop: vec![Hook {
                path: "/bin/true".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// An adjustment like the plugin's grant: every part it fills in.
    fn adjustment() -> ContainerAdjustment {
        ContainerAdjustment {
            annotations: annotations(&[
                ("oci-tpm-hook/device", "tpmrm0"),
                ("oci-tpm-hook/required", "true"),
            ]),
            env: vec![KeyValue {
                key: "TSS2_TCTI".into(),
                value: "device:/dev/tpmrm0".into(),
            }],
            hooks: Some(hooks()),
            linux: Some(LinuxContainerAdjustment {
                devices: vec![device()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn event_mask_for_create_container_is_bit_3() {
        assert_eq!(event_mask(Event::CreateContainer), 8);
        assert_eq!(Event::CreateContainer as i32, 4, "NRI's Event enum");
    }

    #[test]
    fn container_adjustment_round_trips() {
        let a = adjustment();
        let bytes = a.encode_to_vec();
        let back = ContainerAdjustment::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, a, "bytes {bytes:02x?}");
        // The parts the runtime acts on survive as themselves.
        let dev = &back.linux.as_ref().unwrap().devices[0];
        assert_eq!(dev.file_mode, Some(OptionalFileMode { value: 0o660 }));
        assert_eq!(dev.uid, Some(OptionalUInt32 { value: 0 }));
        assert_eq!(
            back.hooks.unwrap().create_runtime[0].timeout.unwrap().value,
            10
        );

        // And inside the response, as the plugin sends it.
        let resp = CreateContainerResponse {
            adjust: Some(a.clone()),
            ..Default::default()
        };
        let back = CreateContainerResponse::decode(resp.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.adjust, Some(a));
        assert!(back.update.is_empty() && back.evict.is_empty());
    }

    /// Field numbers of `api.proto` as read there, checked on the wire: a
    /// wrong regeneration (or a wrong message) fails here even where the
    /// tarball, and so `make proto-check`, is not at hand.
    #[test]
    fn field_numbers_match_nri_api_proto() {
        /// The first byte of a length-delimited field's key.
        fn len_key(field: u8) -> u8 {
            (field << 3) | 2
        }
        fn first_key(m: &impl Message) -> u8 {
            m.encode_to_vec()[0]
        }
        let only_linux = ContainerAdjustment {
            linux: Some(LinuxContainerAdjustment::default()),
            ..Default::default()
        };
        assert_eq!(
            first_key(&only_linux),
            len_key(6),
            "ContainerAdjustment.linux = 6"
        );
        let only_env = ContainerAdjustment {
            env: vec![KeyValue::default()],
            ..Default::default()
        };
        assert_eq!(
            first_key(&only_env),
            len_key(4),
            "ContainerAdjustment.env = 4"
        );
        let only_hooks = ContainerAdjustment {
            hooks: Some(Hooks::default()),
            ..Default::default()
        };
        assert_eq!(
            first_key(&only_hooks),
            len_key(5),
            "ContainerAdjustment.hooks = 5"
        );
        let only_annotations = ContainerAdjustment {
            annotations: annotations(&[("k", "v")]),
            ..Default::default()
        };
        assert_eq!(
            first_key(&only_annotations),
            len_key(2),
            "ContainerAdjustment.annotations = 2"
        );
        let only_devices = LinuxContainerAdjustment {
            devices: vec![LinuxDevice::default()],
            ..Default::default()
        };
        assert_eq!(
            first_key(&only_devices),
            len_key(1),
            "LinuxContainerAdjustment.devices = 1"
        );

        let dev = |file_mode, uid, gid| LinuxDevice {
            file_mode,
            uid,
            gid,
            ..Default::default()
        };
        let some = |value| Some(OptionalUInt32 { value });
        // An Optional* of value 0 is an empty message: key, length 0.
        assert_eq!(
            dev(Some(OptionalFileMode { value: 0 }), None, None).encode_to_vec(),
            [len_key(5), 0],
            "LinuxDevice.file_mode = 5"
        );
        assert_eq!(
            dev(None, some(0), None).encode_to_vec(),
            [len_key(6), 0],
            "LinuxDevice.uid = 6"
        );
        assert_eq!(
            dev(None, None, some(0)).encode_to_vec(),
            [len_key(7), 0],
            "LinuxDevice.gid = 7"
        );
        assert_eq!(
            OptionalUInt32 { value: 102 }.encode_to_vec(),
            [0x08, 102],
            "Optional*.value = 1, a varint"
        );
        let hook = Hook {
            timeout: Some(OptionalInt { value: 0 }),
            ..Default::default()
        };
        assert_eq!(hook.encode_to_vec(), [len_key(4), 0], "Hook.timeout = 4");
        let hooks = Hooks {
            create_runtime: vec![Hook::default()],
            ..Default::default()
        };
        assert_eq!(
            hooks.encode_to_vec(),
            [len_key(2), 0],
            "Hooks.create_runtime = 2"
        );

        // What the plugin reads.
        let req = CreateContainerRequest {
            container: Some(Container::default()),
            ..Default::default()
        };
        assert_eq!(
            req.encode_to_vec(),
            [len_key(2), 0],
            "CreateContainerRequest.container = 2"
        );
        let pod = PodSandbox {
            annotations: annotations(&[("", "")]),
            ..Default::default()
        };
        assert_eq!(
            pod.encode_to_vec(),
            [len_key(6), 0],
            "PodSandbox.annotations = 6"
        );
        let resp = CreateContainerResponse {
            adjust: Some(ContainerAdjustment::default()),
            ..Default::default()
        };
        assert_eq!(
            resp.encode_to_vec(),
            [len_key(1), 0],
            "CreateContainerResponse.adjust = 1"
        );
    }

    #[test]
    fn uid_zero_is_present_not_unset() {
        let bytes = device().encode_to_vec();
        // field 6 (uid), length-delimited, empty body: OptionalUInt32{value: 0}
        assert!(bytes.windows(2).any(|w| w == [0x32, 0x00]), "{bytes:02x?}");
        let back = LinuxDevice::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.uid, Some(OptionalUInt32 { value: 0 }));
        let unset = LinuxDevice {
            uid: None,
            ..device()
        };
        let back = LinuxDevice::decode(unset.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.uid, None);
    }

    #[test]
    fn configure_response_matches_go_encoding() {
        // events = 8 in field 2: key 0x10, varint 8.
        assert_eq!(
            ConfigureResponse { events: 8 }.encode_to_vec(),
            [0x10, 0x08]
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // A newer runtime's ConfigureRequest: a string in field 6 (newer NRI
        // versions send their version there), a fixed32 and a fixed64 field,
        // none of which this version of api.proto knows.
        let mut bytes = ConfigureRequest {
            runtime_name: "containerd".into(),
            request_timeout: 2000,
            ..Default::default()
        }
        .encode_to_vec();
        bytes.extend_from_slice(&[0x32, 0x06]);
        bytes.extend_from_slice(b"v0.9.0");
        bytes.extend_from_slice(&[0x3d, 1, 0, 0, 0, 0x41, 2, 0, 0, 0, 0, 0, 0, 0]);
        let req = ConfigureRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.runtime_name, "containerd");
        assert_eq!(req.request_timeout, 2000);
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &[0x0a][..],         // key without value
            &[0x20, 0x80],       // unterminated varint
            &[0x12, 0x05, b'a'], // length past the end
            &[0x12, 0x01, 0xff], // a string that is not UTF-8
            &[0x22, 0x00],       // a varint field (4) sent length-delimited
        ] {
            assert!(
                ConfigureRequest::decode(bad).is_err(),
                "accepted {bad:02x?}"
            );
        }
    }
}
