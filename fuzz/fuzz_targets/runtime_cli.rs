//! runc's command line as containerd (or anyone who can run the wrapper)
//! writes it. Input: the arguments, separated by NUL bytes; any bytes, as
//! Linux allows.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::oci::runtime_cli::parse_args;

fuzz_target!(|data: &[u8]| {
    let args: Vec<OsString> = data
        .split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let inv = parse_args(&args);
    // Only create/run name a bundle; only they and exec name a container;
    // only exec names a process file.
    if !inv.edits_bundle() {
        assert_eq!(inv.bundle, None);
    }
    let is_exec = inv.command.as_deref() == Some("exec");
    if !inv.edits_bundle() && !is_exec {
        assert_eq!(inv.container_id, None);
    }
    if !is_exec {
        assert_eq!(inv.process, None);
    }
    assert!(inv.config_path().ends_with("config.json"));
    assert!(inv.unknown_flags.len() <= args.len());
});
