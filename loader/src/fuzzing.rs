//! Harnesses shared by the cargo-fuzz targets and the property tests: parse arbitrary bytes and
//! assert the invariants a successful parse promises. A panic here is a bug in the parser.

use std::path::Path;

use crate::{Header, ShardIndex};

/// Parses `data` as a whole safetensors file; on success checks that every tensor lies inside
/// the data section, matches its shape, and that tensors tile the section exactly.
pub fn check_header(data: &[u8]) {
    let Ok(header) = Header::parse(Path::new("fuzz.safetensors"), data) else {
        return;
    };
    assert_eq!(header.file_len(), data.len());
    let mut cursor = 0;
    for t in header.tensors() {
        let (b, e) = t.data_offsets;
        assert_eq!(b, cursor, "tensors must be contiguous");
        assert!(e <= header.data_len());
        assert_eq!(t.num_elements() * t.dtype.size(), e - b);
        assert_eq!(header.get(&t.name), Some(t));
        let bytes = &data[header.data_start() + b..header.data_start() + e];
        assert_eq!(bytes.len(), t.byte_len());
        cursor = e;
    }
    assert_eq!(cursor, header.data_len());
}

/// Parses `data` as a shard index; on success checks that shard names are plain file names and
/// every mapped shard is listed once.
pub fn check_index(data: &[u8]) {
    let Ok(index) = ShardIndex::parse(Path::new("fuzz.safetensors.index.json"), data) else {
        return;
    };
    for shard in index.weight_map().values() {
        assert!(crate::index::is_plain_file_name(shard));
        assert_eq!(index.shards().iter().filter(|s| *s == shard).count(), 1);
    }
}
