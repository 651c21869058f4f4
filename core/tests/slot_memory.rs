//! A slot's unload really returns memory: a test guard allocates and touches 64 MiB when loaded.
//! One test in its own binary, so no other test allocates while RSS is compared.

use std::sync::Arc;

use featherguard_core::{
    Finding, Guard, GuardError, GuardSlot, Input, MemoryBudget, Rss, SlotOptions,
};

const MIB: u64 = 1 << 20;

/// Stands in for a model: its weights are 64 MiB of heap, written so every page is resident, kept
/// as many 1 MiB blocks (the way a runtime's arenas look) rather than one large mapping.
struct Heavy {
    blocks: Vec<Vec<u8>>,
}

impl Guard for Heavy {
    fn name(&self) -> &str {
        "heavy"
    }

    fn scan(&self, input: &Input<'_>) -> Result<Vec<Finding>, GuardError> {
        let _ = self.blocks[input.text.len() % self.blocks.len()][0];
        Ok(Vec::new())
    }
}

fn load() -> Result<Arc<dyn Guard>, GuardError> {
    let blocks = (0..64)
        .map(|i| vec![(i % 251) as u8 + 1; MIB as usize])
        .collect();
    Ok(Arc::new(Heavy { blocks }))
}

#[test]
fn unload_returns_the_memory_and_next_use_reloads() {
    let slot = GuardSlot::new(
        "heavy",
        Box::new(load),
        SlotOptions::default(),
        Arc::new(MemoryBudget::default()),
    );
    let Some(start) = Rss::sample() else {
        eprintln!("no /proc/self/statm: nothing to measure here");
        return;
    };
    assert!(!slot.is_loaded());
    slot.scan(&Input::new("first use loads")).unwrap();
    let loaded = Rss::sample().unwrap();
    let stats = slot.stats();
    assert_eq!(stats.loads, 1);
    assert!(
        stats.rss_delta_bytes.unwrap() >= (60 * MIB) as i64,
        "{stats:?}"
    );
    assert!(
        loaded.anon >= start.anon + 60 * MIB,
        "{start:?} -> {loaded:?}"
    );

    assert!(slot.unload());
    let unloaded = Rss::sample().unwrap();
    assert!(
        unloaded.anon + 56 * MIB <= loaded.anon,
        "RSS must drop after unload: {loaded:?} -> {unloaded:?}"
    );
    assert!(slot.stats().rss_freed_bytes.unwrap() >= (56 * MIB) as i64);

    eprintln!(
        "anon RSS: before load {:.1} MiB, loaded {:.1} MiB, after unload {:.1} MiB",
        start.anon as f64 / MIB as f64,
        loaded.anon as f64 / MIB as f64,
        unloaded.anon as f64 / MIB as f64
    );
    slot.scan(&Input::new("next use reloads")).unwrap();
    assert_eq!(slot.stats().loads, 2);
    assert!(slot.is_loaded());
}
