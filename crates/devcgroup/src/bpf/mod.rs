//! Device-cgroup eBPF (cgroup v2): instruction encoding, program generators
//! and the patcher (pure, unit-tested), an interpreter to check decisions
//! without the kernel, and thin `bpf(2)` wrappers (privileged).
//!
//! No eBPF framework: device programs are a few dozen instructions, and the
//! kernel interface we need is five commands.

#[cfg(any(test, feature = "test-support"))]
pub mod filter;
pub mod insn;
pub mod interp;
pub mod patch;
pub mod sys;
pub mod unblind;

// `struct bpf_cgroup_dev_ctx.access_type` is `(access << 16) | type`.
/// Access bit: mknod.
pub const ACC_MKNOD: u32 = 1;
/// Access bit: open for reading.
pub const ACC_READ: u32 = 2;
/// Access bit: open for writing.
pub const ACC_WRITE: u32 = 4;
/// Device type: block device.
pub const DEV_BLOCK: u32 = 1;
/// Device type: character device.
pub const DEV_CHAR: u32 = 2;
