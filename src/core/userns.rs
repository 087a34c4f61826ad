//! User-namespace id maps (`/proc/<pid>/gid_map`).
//!
//! In a container with a user namespace, the node's group is a *host* GID;
//! the container's processes can use that group only if the namespace maps
//! it. Pure parsing here; the hook reads the file.

use anyhow::{anyhow, bail};

/// One line of an id map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

pub fn parse_id_map(text: &str) -> anyhow::Result<Vec<IdMapping>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [inside, outside, count] = f[..] else {
                bail!("id map line {line:?} does not have three fields");
            };
            let num = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| anyhow!("id map line {line:?}: {s:?} is not a number"))
            };
            Ok(IdMapping {
                inside: num(inside)?,
                outside: num(outside)?,
                count: num(count)?,
            })
        })
        .collect()
}

/// A process's user-namespace maps, read once from /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: Vec<IdMapping>,
    pub gid: Vec<IdMapping>,
}

impl IdMaps {
    pub fn of_process(pid: i32) -> anyhow::Result<Self> {
        let read = |file: &str| -> anyhow::Result<Vec<IdMapping>> {
            let path = format!("/proc/{pid}/{file}");
            let text =
                std::fs::read_to_string(&path).map_err(|e| anyhow!("cannot read {path}: {e}"))?;
            parse_id_map(&text).map_err(|e| anyhow!("bad {path}: {e:#}"))
        };
        Ok(Self {
            uid: read("uid_map")?,
            gid: read("gid_map")?,
        })
    }

    /// The host uid and gid that the namespace's root is, if it has one.
    pub fn root_on_host(&self) -> Option<(u32, u32)> {
        outside_id(&self.uid, 0).zip(outside_id(&self.gid, 0))
    }
}

/// The id inside the namespace that `outside` (a host id) appears as.
/// A range that would run past the largest id maps nothing beyond it.
pub fn inside_id(map: &[IdMapping], outside: u32) -> Option<u32> {
    map.iter().find_map(|m| {
        let offset = outside.checked_sub(m.outside)?;
        (offset < m.count).then(|| m.inside.checked_add(offset))?
    })
}

/// The host id that `inside` (an id in the namespace) is.
pub fn outside_id(map: &[IdMapping], inside: u32) -> Option<u32> {
    map.iter().find_map(|m| {
        let offset = inside.checked_sub(m.inside)?;
        (offset < m.count).then(|| m.outside.checked_add(offset))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps() {
        let m = parse_id_map("         0     100000      65536\n  102  102  1\n").unwrap();
        assert_eq!(inside_id(&m, 100_000), Some(0));
        assert_eq!(inside_id(&m, 165_535), Some(65_535));
        assert_eq!(inside_id(&m, 165_536), None);
        assert_eq!(inside_id(&m, 102), Some(102));
        assert_eq!(inside_id(&m, 5), None);
        assert_eq!(outside_id(&m, 0), Some(100_000));
        assert_eq!(outside_id(&m, 102), Some(100_102));
        assert_eq!(outside_id(&m, 65_536), None);
        let identity = parse_id_map("0 0 4294967295").unwrap();
        assert_eq!(inside_id(&identity, 113), Some(113));
    }

    #[test]
    fn root_on_host() {
        let maps = IdMaps {
            uid: parse_id_map("0 100000 65536").unwrap(),
            gid: parse_id_map("0 200000 65536\n5000 102 1").unwrap(),
        };
        assert_eq!(maps.root_on_host(), Some((100_000, 200_000)));
        let no_root = IdMaps {
            uid: parse_id_map("1 100000 10").unwrap(),
            gid: maps.gid.clone(),
        };
        assert_eq!(no_root.root_on_host(), None);
    }

    /// Found by fuzzing (small_text): a range that runs past u32::MAX made
    /// the lookup overflow.
    #[test]
    fn ranges_past_the_largest_id_map_nothing_beyond_it() {
        let m = parse_id_map("\u{b}1 04294967295 9").unwrap();
        assert_eq!(outside_id(&m, 1), Some(u32::MAX));
        assert_eq!(outside_id(&m, 2), None);
        assert_eq!(inside_id(&m, u32::MAX), Some(1));
        let m = parse_id_map("4294967295 0 9").unwrap();
        assert_eq!(inside_id(&m, 0), Some(u32::MAX));
        assert_eq!(inside_id(&m, 1), None);
        assert_eq!(outside_id(&m, u32::MAX), Some(0));
    }

    #[test]
    fn bad_maps() {
        assert!(parse_id_map("0 0").is_err());
        assert!(parse_id_map("a b c").is_err());
        assert!(parse_id_map("0 0 1 2").is_err());
        assert!(parse_id_map("").unwrap().is_empty());
    }
}
