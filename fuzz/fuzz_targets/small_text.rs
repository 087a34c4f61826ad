//! Small parsers of text that others write: a user namespace's id map
//! (`/proc/<pid>/gid_map`), the kernel's `MAJOR:MINOR`, and the escaping of
//! untrusted names for messages and logs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::core::{host, userns};
use oci_tpm_hook::text;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(map) = userns::parse_id_map(s) {
        assert!(map.len() <= s.lines().count());
        // Ids at the edges of every range, and a few everyone has.
        let mut ids = vec![0, 1, 65534, u32::MAX];
        for m in &map {
            for base in [m.inside, m.outside] {
                ids.push(base);
                ids.push(base.saturating_add(m.count.saturating_sub(1)));
                ids.push(base.saturating_add(m.count));
            }
        }
        for id in ids {
            if let Some(inside) = userns::inside_id(&map, id) {
                // The range that mapped it in maps it back out (or an earlier one does).
                assert!(userns::outside_id(&map, inside).is_some());
            }
            if let Some(outside) = userns::outside_id(&map, id) {
                assert!(userns::inside_id(&map, outside).is_some());
            }
        }
    }

    if let Ok((major, minor)) = host::parse_major_minor(s) {
        assert_eq!(
            host::parse_major_minor(&format!("{major}:{minor}")).unwrap(),
            (major, minor)
        );
    }

    let shown = text::untrusted(s);
    // Cut at MAX_SHOWN characters, each at most a `\u{10ffff}` escape, plus the mark.
    assert!(shown.chars().count() <= text::MAX_SHOWN * 10 + 1);
    assert!(
        !shown.chars().any(|c| c.is_control()),
        "control character left in {shown:?}"
    );
    if s.len() <= text::MAX_SHOWN && !s.chars().any(char::is_control) {
        // Nothing to cut and no control character: only invisible format
        // characters may have been escaped.
        assert!(shown.len() >= s.len());
    }
});
