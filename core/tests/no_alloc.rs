//! A clean scan allocates nothing once the scanner is warm: the scratch views, candidate lists and
//! lazy-DFA caches are reused, and an empty verdict holds no heap memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts allocations made by this test binary (a test-only allocator, not library state).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn clean_scans_do_not_allocate_once_warm() {
    let fw = featherguard_core::Firewall::with_default_rules().unwrap();
    let prompts = [
        "Can you help me write a short email to my landlord asking whether the heating can be repaired?",
        "Wie spät ist es in Tokio, wenn es in Berlin 9 Uhr ist?",
        "请帮我把这段话翻译成英文，谢谢。",
    ];
    // Warm-up: compiles the patterns these texts gate and sizes the scratch buffers.
    for p in prompts {
        assert!(fw.scan(p).findings.is_empty(), "{p}");
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..50 {
        for p in prompts {
            std::hint::black_box(fw.scan(p));
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 150 warm clean scans"
    );
}
