//! Helpers shared by the integration tests: crafted files and small checkpoints.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use featherguard_loader::{write_safetensors, Dtype, TensorData};

/// A file image from raw header JSON and data bytes (no validation: for hostile input).
pub fn craft(json: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(data);
    out
}

pub fn write_raw(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Deterministic f32 values for tensor `seed`.
pub fn values(seed: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((seed * 7919 + i * 31) % 1000) as f32 / 8.0 - 60.0)
        .collect()
}

pub fn bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter()
        .map(|x| half::bf16::from_f32(*x).to_bits())
        .collect()
}

/// Writes a small mixed-dtype file: `w{i}` F32 [3,5] and `b{i}` BF16 [4] for i in `ids`.
pub fn small_file(path: &Path, ids: std::ops::Range<usize>) {
    let names: Vec<(String, String)> = ids
        .clone()
        .map(|i| (format!("w{i}"), format!("b{i}")))
        .collect();
    let f32s: Vec<Vec<f32>> = ids.clone().map(|i| values(i, 15)).collect();
    let bfs: Vec<Vec<u16>> = ids
        .clone()
        .map(|i| bf16_bits(&values(i + 100, 4)))
        .collect();
    let mut tensors = Vec::new();
    for (k, (w, b)) in names.iter().enumerate() {
        tensors.push(TensorData::from_slice(w, Dtype::F32, &[3, 5], &f32s[k]));
        tensors.push(TensorData::from_slice(b, Dtype::BF16, &[4], &bfs[k]));
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(path, &tensors, &meta).unwrap();
}

/// Writes shards `model-0000k-of-0000n.safetensors` (2 tensor pairs each) plus the index.
pub fn sharded(dir: &Path, shards: usize) -> PathBuf {
    let mut map = serde_json::Map::new();
    for s in 0..shards {
        let name = format!("model-{:05}-of-{:05}.safetensors", s + 1, shards);
        small_file(&dir.join(&name), s * 2..s * 2 + 2);
        for i in s * 2..s * 2 + 2 {
            map.insert(format!("w{i}"), name.clone().into());
            map.insert(format!("b{i}"), name.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 1234}, "weight_map": map});
    let p = dir.join("model.safetensors.index.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    p
}
