//! Thin wrappers over the `bpf(2)` commands the v2 device path needs.
//!
//! The `libc` crate has `SYS_bpf` but none of the attribute structs, so each
//! command gets its own `#[repr(C)]` prefix of `union bpf_attr`. Passing a
//! prefix is part of the ABI: the kernel zero-fills what we leave out, and
//! (for newer kernels with longer structs) we pass our exact size.
//!
//! These functions do no policy; the decisions live in `patch` and `v2`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::insn::Insn;

const CMD_PROG_LOAD: libc::c_int = 5;
const CMD_PROG_ATTACH: libc::c_int = 8;
const CMD_PROG_DETACH: libc::c_int = 9;
const CMD_PROG_GET_FD_BY_ID: libc::c_int = 13;
const CMD_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const CMD_PROG_QUERY: libc::c_int = 16;

/// `BPF_PROG_TYPE_CGROUP_DEVICE`.
pub const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `BPF_CGROUP_DEVICE` attach type.
pub const ATTACH_CGROUP_DEVICE: u32 = 6;
/// `BPF_F_ALLOW_OVERRIDE`: a single program that descendants may override.
pub const F_ALLOW_OVERRIDE: u32 = 1;
/// `BPF_F_ALLOW_MULTI`: several programs per cgroup, all must allow.
pub const F_ALLOW_MULTI: u32 = 2;
/// `BPF_F_REPLACE`: swap `replace_bpf_fd` for the new program atomically.
pub const F_REPLACE: u32 = 4;

/// License string given to programs we load. Device programs call no
/// helpers, so nothing GPL-only is needed; the kernel just wants a string.
pub const LICENSE: &str = "Apache-2.0";

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a properly sized, initialised prefix of `bpf_attr`
    // for `cmd`; any pointers inside it point to live buffers of the lengths
    // given alongside them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned_fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new fd to us and nobody else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

/// Programs attached to one cgroup for one attach type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attached {
    /// The cgroup's attach mode: 0, [`F_ALLOW_OVERRIDE`] or [`F_ALLOW_MULTI`].
    pub flags: u32,
    pub ids: Vec<u32>,
}

/// `BPF_F_QUERY_EFFECTIVE`: include programs inherited from ancestors.
pub const QUERY_EFFECTIVE: u32 = 1;

/// `BPF_PROG_QUERY`: ids of the programs attached to `cgroup`.
pub fn prog_query(cgroup: BorrowedFd, attach_type: u32, query_flags: u32) -> io::Result<Attached> {
    let mut ids: Vec<u32> = vec![0; 16];
    loop {
        let mut attr = QueryAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type,
            query_flags,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        match bpf(CMD_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(Attached {
                    flags: attr.attach_flags,
                    ids,
                });
            }
            // More programs than room: the kernel reports how many there are.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOSPC) && attr.prog_cnt as usize > ids.len() =>
            {
                ids = vec![0; attr.prog_cnt as usize];
            }
            Err(e) => return Err(e),
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `BPF_PROG_GET_FD_BY_ID`.
pub fn prog_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id,
        ..Default::default()
    };
    bpf(CMD_PROG_GET_FD_BY_ID, &mut attr).map(owned_fd)
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The leading part of `struct bpf_prog_info` (the kernel copies only as
/// much as we ask for).
#[repr(C)]
#[derive(Default)]
struct RawProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// What we need to know about a loaded program.
#[derive(Clone, Debug)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    pub name: String,
    /// Maps the program uses; we refuse to patch those.
    pub nr_map_ids: u32,
    /// The program as the verifier left it ("xlated").
    pub insns: Vec<Insn>,
}

fn raw_prog_info(fd: BorrowedFd, info: &mut RawProgInfo) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<RawProgInfo>() as u32,
        info: info as *mut RawProgInfo as u64,
    };
    bpf(CMD_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a program, including its instructions.
pub fn prog_info(fd: BorrowedFd) -> io::Result<ProgInfo> {
    let mut info = RawProgInfo::default();
    raw_prog_info(fd, &mut info)?;
    // Without CAP_SYS_ADMIN the kernel reports a length of zero.
    if info.xlated_prog_len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the kernel reported no instructions for the program (needs CAP_SYS_ADMIN)",
        ));
    }
    let size = std::mem::size_of::<Insn>();
    let mut insns = vec![Insn::default(); info.xlated_prog_len as usize / size];
    let want = info.xlated_prog_len;
    let mut full = RawProgInfo {
        xlated_prog_len: (insns.len() * size) as u32,
        xlated_prog_insns: insns.as_mut_ptr() as u64,
        ..Default::default()
    };
    raw_prog_info(fd, &mut full)?;
    // The kernel hides the instructions (pointer zeroed) from callers that
    // may not see kernel addresses (kernel.kptr_restrict).
    if full.xlated_prog_insns == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the kernel withheld the program's instructions (kernel.kptr_restrict; needs CAP_SYSLOG)",
        ));
    }
    // The program cannot change, but be strict about a length mismatch.
    if full.xlated_prog_len != want {
        return Err(io::Error::other(format!(
            "program length changed between two reads ({want} then {} bytes)",
            full.xlated_prog_len
        )));
    }
    let name_len = full
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(full.name.len());
    Ok(ProgInfo {
        id: full.id,
        prog_type: full.prog_type,
        name: String::from_utf8_lossy(&full.name[..name_len]).into_owned(),
        nr_map_ids: full.nr_map_ids,
        insns,
    })
}

#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// A failed `BPF_PROG_LOAD`, with the verifier's explanation when it gave one.
#[derive(Debug)]
pub struct LoadError {
    pub error: io::Error,
    pub log: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BPF_PROG_LOAD failed: {}", self.error)?;
        if !self.log.is_empty() {
            write!(f, "; verifier log:\n{}", self.log.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// `BPF_PROG_LOAD` of a `BPF_PROG_TYPE_CGROUP_DEVICE` program. `name` is
/// shown by `bpftool prog` (at most 15 bytes of `[A-Za-z0-9_.]`).
pub fn prog_load(insns: &[Insn], name: &str) -> Result<OwnedFd, LoadError> {
    let license = CString::new(LICENSE).expect("no NUL in the license");
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = LoadAttr {
            prog_type: PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name,
            // expected_attach_type stays 0: device programs do not need it,
            // and kernels before 4.17 reject a non-zero value there.
            ..Default::default()
        };
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        bpf(CMD_PROG_LOAD, &mut attr).map(owned_fd)
    };
    // First without a log: the verifier is faster without one and a full
    // log buffer can itself fail the load.
    match attempt(None) {
        Ok(fd) => Ok(fd),
        Err(error) => {
            let mut buf = vec![0u8; 1 << 20];
            match attempt(Some(&mut buf)) {
                Ok(fd) => Ok(fd),
                Err(_) => {
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    Err(LoadError {
                        error,
                        log: String::from_utf8_lossy(&buf[..end]).into_owned(),
                    })
                }
            }
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `BPF_PROG_ATTACH`; `replace` is only meaningful with [`F_REPLACE`].
pub fn prog_attach(
    cgroup: BorrowedFd,
    prog: BorrowedFd,
    attach_type: u32,
    flags: u32,
    replace: Option<BorrowedFd>,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: replace.map(|fd| fd.as_raw_fd() as u32).unwrap_or(0),
    };
    bpf(CMD_PROG_ATTACH, &mut attr).map(|_| ())
}

/// `BPF_PROG_DETACH` of one program.
pub fn prog_detach(cgroup: BorrowedFd, prog: BorrowedFd, attach_type: u32) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    bpf(CMD_PROG_DETACH, &mut attr).map(|_| ())
}
