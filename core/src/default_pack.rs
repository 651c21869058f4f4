//! The default rule pack, embedded in the binary, with precomputed pattern anchors (see build.rs).

include!(concat!(env!("OUT_DIR"), "/default_pack.rs"));

/// Precomputed anchors of a default-pack pattern: `None` if `source` is not in the default pack,
/// `Some(None)` if it has no anchors.
pub(crate) fn precomputed_anchors(source: &str) -> Option<Option<&'static [&'static [u8]]>> {
    ANCHORS
        .binary_search_by(|(s, _)| (*s).cmp(source))
        .ok()
        .map(|i| ANCHORS[i].1)
}
