//! Device-cgroup eBPF programs as the kernel hands them back (attached by
//! the runtime, maybe constant-blinded by the JIT): the unblinder, the
//! interpreter and the patch planner. A patched program must allow the
//! device, be recognised as already allowing it, and answer every other
//! access exactly as the original does.
//!
//! Input: 4 parameter bytes (a 12-bit major and 20-bit minor), then
//! instructions, 8 bytes each (code, dst | src << 4, off LE, imm LE).
#![no_main]

use devcgroup::bpf::insn::Insn;
use devcgroup::bpf::interp::{self, DevCtx};
use devcgroup::bpf::patch::{self, Plan};
use devcgroup::bpf::unblind::unblind;
use devcgroup::bpf::{ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_BLOCK, DEV_CHAR};
use devcgroup::DeviceAccess;
use libfuzzer_sys::fuzz_target;

fn program(bytes: &[u8]) -> Vec<Insn> {
    bytes
        .chunks_exact(8)
        .map(|b| {
            Insn::new(
                b[0],
                b[1] & 0x0f,
                b[1] >> 4,
                i16::from_le_bytes([b[2], b[3]]),
                i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            )
        })
        .collect()
}

/// Accesses the allow block must leave to the original program.
fn others(dev: &DeviceAccess) -> Vec<DevCtx> {
    // Few: each run may take the interpreter's whole step limit. None is
    // a read/write open of the char device `dev` itself.
    vec![
        DevCtx::new(DEV_BLOCK, ACC_READ, dev.major, dev.minor),
        DevCtx::new(DEV_CHAR, ACC_READ | ACC_MKNOD, dev.major, dev.minor),
        DevCtx::new(
            DEV_CHAR,
            ACC_WRITE,
            dev.major.wrapping_add(1),
            dev.minor ^ 1,
        ),
    ]
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (params, code) = data.split_at(4);
    let major = u32::from(params[0]) | (u32::from(params[1] & 0x0f) << 8);
    let minor =
        u32::from(params[1] >> 4) | (u32::from(params[2]) << 4) | (u32::from(params[3]) << 12);
    let dev = DeviceAccess::new(major, minor);
    let prog = program(code);

    for ctx in others(&dev) {
        let _ = interp::run(&prog, &ctx);
    }
    let _ = patch::allows_read_write(&prog, &dev);

    let folded = unblind(&prog);
    if let Ok(folded) = &folded {
        assert!(folded.len() <= prog.len(), "unblinding grew the program");
        assert_eq!(
            unblind(folded).expect("an unblinded program does not unblind"),
            *folded,
            "unblinding is not idempotent"
        );
    }

    match patch::plan(&prog, &dev) {
        Ok(Plan::Patch(patched)) => {
            let original = folded.expect("plan patched a program it could not unblind");
            assert!(patch::starts_with_allow_block(&patched, &dev));
            assert_eq!(&patched[patch::ALLOW_BLOCK_LEN..], &original[..]);
            assert_eq!(patch::allows_read_write(&patched, &dev), Ok(true));
            assert_eq!(
                patch::plan(&patched, &dev).expect("a patched program cannot be planned"),
                Plan::AlreadyAllowed,
                "patching again would stack a second block"
            );
            for ctx in others(&dev) {
                if let Ok(r0) = interp::run(&original, &ctx) {
                    assert_eq!(interp::run(&patched, &ctx), Ok(r0), "{ctx:?}");
                }
            }
        }
        Ok(Plan::AlreadyAllowed) | Err(_) => {}
    }
});
