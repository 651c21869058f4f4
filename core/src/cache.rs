//! The verdict cache: an LRU of recent verdicts, bounded by entries and bytes, with a TTL.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::guard::Source;
use crate::memory::parse_bytes;
use crate::verdict::{Finding, Verdict};

/// The `[cache]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Most verdicts kept; 0 turns the cache off (the default: the pattern scan is already cheap,
    /// the cache pays off in front of ML guards).
    pub max_entries: usize,
    /// Most bytes kept (texts plus verdicts, estimated), `"16 MiB"` or a number.
    #[serde(deserialize_with = "de_bytes")]
    pub max_bytes: u64,
    /// Seconds a verdict stays valid; rules and models do not change under a running firewall, but
    /// a bound keeps stale answers from living forever across reloads of the host.
    pub ttl_secs: u64,
    /// Texts longer than this many bytes are never cached (they rarely repeat).
    pub max_text_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 0,
            max_bytes: 16 << 20,
            ttl_secs: 300,
            max_text_bytes: 16 << 10,
        }
    }
}

fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(b) => Ok(b),
        Size::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
    }
}

/// Counters of a cache, for stats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct CacheStats {
    pub entries: usize,
    /// Estimated bytes held.
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped to respect the bounds, expired or shed under memory pressure.
    pub evictions: u64,
    /// hits / (hits + misses), 0 before any lookup.
    pub hit_rate: f64,
}

/// What identifies a cached verdict besides the text: where the text came from and a fingerprint of
/// the policy and guard selection that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheScope {
    pub source: Source,
    /// Changes whenever the policy, guards or cascade mode change (see `Firewall::policy_version`).
    pub policy_version: u64,
}

const NIL: usize = usize::MAX;

struct Entry {
    hash: u64,
    text: Box<str>,
    scope: CacheScope,
    verdict: Verdict,
    bytes: u64,
    /// `None`: the TTL reaches past what `Instant` can represent, so the entry never expires.
    expires: Option<Instant>,
    prev: usize,
    next: usize,
}

/// The LRU itself: a slab of entries threaded on a doubly linked list, most recent at `head`.
struct Lru {
    map: HashMap<u64, usize>,
    slab: Vec<Option<Entry>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
    bytes: u64,
}

/// Caches verdicts by text. The key is a keyed hash (random per process, so no one can aim
/// collisions at it) of the text and its scope; the text itself is stored and compared on a hit, so
/// a collision is a miss, never someone else's verdict. The exact text is the key, not its
/// normalized form: findings carry byte offsets into the original text, which differ between two
/// texts that normalize alike.
pub struct VerdictCache {
    config: CacheConfig,
    hasher: RandomState,
    lru: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for VerdictCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictCache")
            .field("config", &self.config)
            .finish()
    }
}

impl VerdictCache {
    /// A cache with the given bounds; `None` when `max_entries` is 0 (caching off).
    pub fn new(config: CacheConfig) -> Option<VerdictCache> {
        (config.max_entries > 0 && config.max_bytes > 0).then(|| VerdictCache {
            config,
            hasher: RandomState::new(),
            lru: Mutex::new(Lru::empty()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn hash(&self, text: &str, scope: &CacheScope) -> u64 {
        let mut h = self.hasher.build_hasher();
        text.hash(&mut h);
        scope.hash(&mut h);
        h.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached verdict for `text` in `scope`, if present and not expired as of `now`.
    pub fn get(&self, text: &str, scope: CacheScope, now: Instant) -> Option<Verdict> {
        if text.len() > self.config.max_text_bytes {
            return None;
        }
        let hash = self.hash(text, &scope);
        let mut lru = self.lock();
        let found = lru.map.get(&hash).copied().and_then(|i| {
            let e = lru.slab[i].as_ref()?;
            (e.scope == scope && &*e.text == text)
                .then_some((i, e.expires.is_some_and(|t| t <= now)))
        });
        match found {
            Some((i, false)) => {
                lru.touch(i);
                self.hits.fetch_add(1, Ordering::Relaxed);
                lru.slab[i].as_ref().map(|e| e.verdict.clone())
            }
            Some((i, true)) => {
                lru.remove(i);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Remember `verdict` for `text` in `scope`. Verdicts with guard errors are not cached: the
    /// failure may be transient.
    pub fn put(&self, text: &str, scope: CacheScope, verdict: &Verdict, now: Instant) {
        if text.len() > self.config.max_text_bytes || !verdict.errors.is_empty() {
            return;
        }
        let bytes = estimate_bytes(text, verdict);
        if bytes > self.config.max_bytes {
            return;
        }
        let hash = self.hash(text, &scope);
        let mut lru = self.lock();
        if let Some(i) = lru.map.get(&hash).copied() {
            lru.remove(i);
        }
        let mut evicted = 0;
        while lru.map.len() >= self.config.max_entries || lru.bytes + bytes > self.config.max_bytes
        {
            let tail = lru.tail;
            if tail == NIL {
                break;
            }
            lru.remove(tail);
            evicted += 1;
        }
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        lru.push_front(Entry {
            hash,
            text: text.into(),
            scope,
            verdict: verdict.clone(),
            bytes,
            expires: now.checked_add(Duration::from_secs(self.config.ttl_secs)),
            prev: NIL,
            next: NIL,
        });
    }

    /// Drop every entry (memory pressure, or on demand). Returns how many were dropped.
    pub fn clear(&self) -> usize {
        let mut lru = self.lock();
        let n = lru.map.len();
        *lru = Lru::empty();
        self.evictions.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    pub fn stats(&self) -> CacheStats {
        let (entries, bytes) = {
            let lru = self.lock();
            (lru.map.len(), lru.bytes)
        };
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        CacheStats {
            entries,
            bytes,
            hits,
            misses,
            evictions: self.evictions.load(Ordering::Relaxed),
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
        }
    }
}

/// Bytes an entry holds: the text, the verdict, its findings and errors, and bookkeeping.
fn estimate_bytes(text: &str, v: &Verdict) -> u64 {
    let findings = v.findings.len() * std::mem::size_of::<Finding>();
    let errors: usize = v.errors.iter().map(|e| e.error.len() + 32).sum();
    (text.len() + std::mem::size_of::<Entry>() + findings + errors + 32) as u64
}

impl Lru {
    fn empty() -> Lru {
        Lru {
            map: HashMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = match &self.slab[i] {
            Some(e) => (e.prev, e.next),
            None => return,
        };
        match prev {
            NIL => self.head = next,
            p => {
                if let Some(e) = self.slab[p].as_mut() {
                    e.next = next;
                }
            }
        }
        match next {
            NIL => self.tail = prev,
            n => {
                if let Some(e) = self.slab[n].as_mut() {
                    e.prev = prev;
                }
            }
        }
    }

    fn link_front(&mut self, i: usize) {
        let old = self.head;
        if let Some(e) = self.slab[i].as_mut() {
            e.prev = NIL;
            e.next = old;
        }
        if let Some(h) = self.slab.get_mut(old).and_then(|e| e.as_mut()) {
            h.prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn touch(&mut self, i: usize) {
        if self.head != i {
            self.unlink(i);
            self.link_front(i);
        }
    }

    fn push_front(&mut self, e: Entry) {
        self.bytes += e.bytes;
        let hash = e.hash;
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(e);
                i
            }
            None => {
                self.slab.push(Some(e));
                self.slab.len() - 1
            }
        };
        self.map.insert(hash, i);
        self.link_front(i);
    }

    fn remove(&mut self, i: usize) {
        self.unlink(i);
        if let Some(e) = self.slab[i].take() {
            self.bytes -= e.bytes;
            self.map.remove(&e.hash);
            self.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Action;

    fn verdict(score: f32) -> Verdict {
        Verdict {
            action: Action::Allow,
            score,
            findings: Vec::new(),
            errors: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn cache(max_entries: usize, max_bytes: u64) -> VerdictCache {
        VerdictCache::new(CacheConfig {
            max_entries,
            max_bytes,
            ttl_secs: 60,
            max_text_bytes: 1 << 20,
        })
        .unwrap()
    }

    const SCOPE: CacheScope = CacheScope {
        source: Source::User,
        policy_version: 1,
    };

    #[test]
    fn least_recently_used_goes_first() {
        let c = cache(2, 1 << 20);
        let now = Instant::now();
        c.put("a", SCOPE, &verdict(0.1), now);
        c.put("b", SCOPE, &verdict(0.2), now);
        assert!(c.get("a", SCOPE, now).is_some()); // a is now the most recent
        c.put("c", SCOPE, &verdict(0.3), now);
        assert!(c.get("b", SCOPE, now).is_none());
        assert_eq!(c.get("a", SCOPE, now).unwrap().score, 0.1);
        assert_eq!(c.get("c", SCOPE, now).unwrap().score, 0.3);
        let s = c.stats();
        assert_eq!((s.entries, s.hits, s.misses, s.evictions), (2, 3, 1, 1));
    }

    #[test]
    fn bytes_bound_and_ttl_and_scope() {
        let one = estimate_bytes("xxxx", &verdict(0.0));
        let c = cache(100, one * 2);
        let now = Instant::now();
        for t in ["aaaa", "bbbb", "cccc"] {
            c.put(t, SCOPE, &verdict(0.0), now);
        }
        assert_eq!(c.stats().entries, 2);
        assert!(c.stats().bytes <= one * 2);
        assert!(c.get("aaaa", SCOPE, now).is_none());
        let other = CacheScope {
            policy_version: 2,
            ..SCOPE
        };
        assert!(c.get("cccc", other, now).is_none());
        assert!(c
            .get("cccc", SCOPE, now + Duration::from_secs(61))
            .is_none());
        assert_eq!(c.stats().entries, 1);
        assert_eq!(c.clear(), 1);
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn failed_verdicts_and_zero_entries_are_not_cached() {
        assert!(VerdictCache::new(CacheConfig::default()).is_none());
        let c = cache(10, 1 << 20);
        let mut v = verdict(0.0);
        v.errors.push(crate::verdict::GuardFailure {
            guard: "m".into(),
            error: "down".into(),
        });
        c.put("t", SCOPE, &v, Instant::now());
        assert_eq!(c.stats().entries, 0);
    }

    /// Found by the `config` fuzz target: `ttl_secs = 9223372036854775807` panicked in `put`
    /// ("overflow when adding duration to instant"); such an entry now never expires.
    #[test]
    fn huge_ttl_never_expires_and_does_not_panic() {
        let c = VerdictCache::new(CacheConfig {
            max_entries: 4,
            ttl_secs: u64::MAX,
            ..CacheConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        c.put("t", SCOPE, &verdict(0.5), now);
        let later = now + Duration::from_secs(100 * 365 * 86_400);
        assert_eq!(c.get("t", SCOPE, later).unwrap().score, 0.5);
    }
}
