//! What every fuzz target shares: the allocation bound and small helpers
//! that turn fuzzer bytes into the shapes the parsers take.
//!
//! The targets live in `fuzz_targets/`; `fuzz/run.sh` builds and runs them
//! (see docs/FUZZING.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::Write;

pub use libfuzzer_sys::arbitrary::Unstructured;

/// The largest single allocation a target may make. Every input is at most
/// a few hundred KiB (`-max_len`), so an allocation this large means a
/// length field from the input was trusted.
///
/// libFuzzer's own `-malloc_limit_mb` needs a sanitizer runtime's malloc
/// hooks, which a build without `-Zsanitizer` lacks; this allocator is the
/// same check for everything the Rust code allocates.
pub const MAX_ALLOCATION: usize = 64 << 20;

/// The system allocator, aborting (which libFuzzer reports as a crash and
/// saves the input for) on an allocation above [`MAX_ALLOCATION`].
pub struct BoundedAllocator;

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // No formatting: that would allocate.
        let _ = std::io::stderr().write_all(
            b"==fuzz== allocation above the bound (MAX_ALLOCATION in fuzz/src/lib.rs)\n",
        );
        std::process::abort();
    }
}

// SAFETY: every call is passed on to `System` unchanged; `check` only reads
// the requested size.
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

/// Annotations from text: one `key=value` per line (a line without `=` is a
/// key with an empty value), the way the seed files are written.
pub fn annotations(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|line| match line.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (line.to_owned(), String::new()),
        })
        .collect()
}

/// The first `params_len` bytes of `data` (fewer when it is shorter), which
/// a target reads as parameters, and the rest, which it parses.
pub fn params_and_rest(data: &[u8], params_len: usize) -> (&[u8], &[u8]) {
    let n = params_len.min(data.len());
    data.split_at(n)
}
