//! The cgroup files the device grant reads: `/proc/<pid>/cgroup` of the
//! container's process, our own `/proc/self/mountinfo` (which lists mounts
//! whose paths containers choose), and a cgroup v1 `devices.list`. Then the
//! decisions made from them.
//!
//! Input: `/proc/<pid>/cgroup`, a NUL byte, mountinfo; each parser also
//! reads the whole input.
#![no_main]

use std::path::Path;

use devcgroup::rule::DeviceRule;
use devcgroup::{locate, mountinfo, proc_cgroup, v1, DeviceAccess};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (cgroup, mounts) = text.split_once('\0').unwrap_or((text, text));

    let lines = proc_cgroup::parse(cgroup);
    let table = mountinfo::parse(mounts);
    if let (Ok(lines), Ok(table)) = (&lines, &table) {
        for l in lines {
            let _ = (l.is_unified(), l.has_controller("devices"));
        }
        for m in table {
            let _ = (m.is_cgroup2(), m.is_cgroup1_with(&["devices".to_owned()]));
        }
        if let Ok(cg) = locate::resolve(lines, table, Path::new("/")) {
            assert!(cg.device_dir().starts_with("/"));
            assert_eq!(
                cg.dirs().first().map(|d| d.as_path()),
                Some(cg.device_dir())
            );
        }
    }

    for line in text.lines() {
        let _ = DeviceRule::parse_list_line(line);
    }
    if let Ok(rules) = v1::parse_devices_list(text) {
        for dev in [DeviceAccess::new(253, 65536), DeviceAccess::new(1, 3)] {
            let _ = v1::coverage(&rules, &dev);
        }
    }
});
