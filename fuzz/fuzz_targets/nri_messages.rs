//! The protobuf messages the runtime sends an NRI plugin: the ttrpc
//! envelope (Request, Response) and the NRI calls in it, as prost decodes
//! them. Each must decode to a value or an error, and what decodes must
//! survive encode→decode.
//!
//! Input: one byte choosing the message, then its encoding. To point this
//! target at other message types, change only `decode_each`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::frontend::nri::api::{self, Message};
use oci_tpm_hook::frontend::nri::ttrpc;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(m) = M::decode(bytes) {
        let again =
            M::decode(m.encode_to_vec().as_slice()).expect("an encoded message does not decode");
        assert_eq!(m, again);
    }
}

fn decode_each(which: u8, bytes: &[u8]) {
    match which % 8 {
        0 => round_trip::<ttrpc::Request>(bytes),
        1 => round_trip::<ttrpc::Response>(bytes),
        2 => round_trip::<api::ConfigureRequest>(bytes),
        3 => round_trip::<api::SynchronizeRequest>(bytes),
        4 => round_trip::<api::CreateContainerRequest>(bytes),
        5 => round_trip::<api::RegisterPluginRequest>(bytes),
        6 => round_trip::<api::ContainerAdjustment>(bytes),
        _ => round_trip::<api::Empty>(bytes),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some((&which, bytes)) = data.split_first() {
        decode_each(which, bytes);
    }
});
