//! glibc settings an unload relies on to hand memory back (checked without the runtime): a thread
//! arena returns its emptied top. Its own test binary, so no other test's allocations move the
//! figures.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use featherguard_core::{release_free_heap, ProcStatus};
use featherguard_onnx::mem::{bound_heap_retention, release_merged};

const MIB: u64 = 1 << 20;

/// A model load builds many small objects on one thread and the unload frees them from another.
/// With glibc's fastbins those frees were parked unmerged, `malloc_trim` then merged them into the
/// arena's top without trimming it, and the whole emptied arena stayed resident.
#[test]
fn small_blocks_built_on_another_thread_are_returned_after_their_free() {
    bound_heap_retention();
    release_free_heap();
    let before = ProcStatus::read().expect("/proc/self/status").anon;
    let blocks: Vec<Box<[u8; 64]>> = std::thread::spawn(|| {
        (0..250_000u32)
            .map(|i| Box::new([i as u8; 64]))
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    let built = ProcStatus::read().unwrap().anon;
    assert!(
        built > before + 15 * MIB,
        "the blocks should take ~20 MiB: {before} -> {built}"
    );
    release_merged(|| drop(blocks));
    let after = ProcStatus::read().unwrap().anon;
    assert!(
        after < before + 2 * MIB,
        "anonymous memory {} MiB before, {} MiB built, {} MiB after the free",
        before / MIB,
        built / MIB,
        after / MIB
    );
}
