//! The synthetic checkpoint used by the benchmark and `scripts/loader/compare.py`: 50 layers of
//! 4 tensors (F32 and BF16 matrices, an F32 norm vector), ~1.99 GB, written once under
//! `target/` as one file and as 4 shards with an index. Shared by `benches/load.rs` and
//! `examples/loader_bench.rs` through `#[path]`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Bump when the layout changes so stale files are regenerated.
const VERSION: &str = "synth-v1";
pub const LAYERS: usize = 50;
pub const SHARDS: usize = 4;

pub struct Spec {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
}

impl Spec {
    fn elem_size(&self) -> usize {
        if self.dtype == "F32" {
            4
        } else {
            2
        }
    }
    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.elem_size()
    }
}

pub fn layer_specs(layer: usize) -> Vec<Spec> {
    let s = |name: &str, dtype, shape: &[usize]| Spec {
        name: format!("layers.{layer:02}.{name}"),
        dtype,
        shape: shape.to_vec(),
    };
    vec![
        s("attn.weight", "F32", &[2048, 2048]),
        s("mlp.up", "BF16", &[2048, 4096]),
        s("mlp.down", "BF16", &[4096, 768]),
        s("norm", "F32", &[2048]),
    ]
}

/// Default location: `<workspace>/target/loader-bench`, or `$FEATHERGUARD_BENCH_DIR`.
pub fn bench_dir() -> PathBuf {
    std::env::var_os("FEATHERGUARD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/loader-bench"))
}

/// Paths of the single file and the shard index, generating them if missing or stale.
pub fn ensure(dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let single = dir.join("single/model.safetensors");
    let index = dir.join("sharded/model.safetensors.index.json");
    let stamp = dir.join("VERSION");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(VERSION)
        && single.is_file()
        && index.is_file()
    {
        return Ok((single, index));
    }
    std::fs::create_dir_all(dir.join("single"))?;
    std::fs::create_dir_all(dir.join("sharded"))?;
    let all: Vec<Spec> = (0..LAYERS).flat_map(layer_specs).collect();
    write_file(&single, &all)?;
    let per = LAYERS.div_ceil(SHARDS);
    let mut weight_map = serde_json::Map::new();
    for shard in 0..SHARDS {
        let name = format!("model-{:05}-of-{SHARDS:05}.safetensors", shard + 1);
        let specs: Vec<Spec> = (shard * per..((shard + 1) * per).min(LAYERS))
            .flat_map(layer_specs)
            .collect();
        for s in &specs {
            weight_map.insert(s.name.clone(), name.clone().into());
        }
        write_file(&dir.join("sharded").join(&name), &specs)?;
    }
    let total: usize = all.iter().map(Spec::bytes).sum();
    let index_json =
        serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(&index, serde_json::to_vec_pretty(&index_json)?)?;
    std::fs::write(&stamp, VERSION)?;
    Ok((single, index))
}

/// Streams one file: header (F32 tensors first so every tensor is aligned), then data from a
/// fast deterministic generator producing finite floats.
fn write_file(path: &Path, specs: &[Spec]) -> std::io::Result<()> {
    let mut order: Vec<&Spec> = specs.iter().collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.elem_size()));
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "pt", "generator": VERSION}),
    );
    let mut off = 0;
    for s in &order {
        header.insert(
            s.name.clone(),
            serde_json::json!({"dtype": s.dtype, "shape": s.shape, "data_offsets": [off, off + s.bytes()]}),
        );
        off += s.bytes();
    }
    let mut json = serde_json::to_vec(&header)?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(8 << 20, std::fs::File::create(&tmp)?);
    w.write_all(&(json.len() as u64).to_le_bytes())?;
    w.write_all(&json)?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 1 << 20];
    for s in &order {
        let mut left = s.bytes();
        while left > 0 {
            let n = left.min(buf.len());
            for word in buf[..n].chunks_exact_mut(4) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // A float in [-1, 1): sign and mantissa random, exponent fixed near 1.
                let x = f32::from_bits(0x3f80_0000 | (state as u32 >> 9)) - 1.5;
                let bits = x.to_bits();
                if s.dtype == "F32" {
                    word.copy_from_slice(&bits.to_le_bytes());
                } else {
                    let hi = (bits >> 16) as u16;
                    word[..2].copy_from_slice(&hi.to_le_bytes());
                    word[2..].copy_from_slice(&hi.wrapping_add(1).to_le_bytes());
                }
            }
            w.write_all(&buf[..n])?;
            left -= n;
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(tmp, path)
}
