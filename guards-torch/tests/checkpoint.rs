//! Checkpoints that do not match the architecture, and a tiny synthetic encoder that does: these
//! need libtorch but not the MiniLM download.

use std::sync::Arc;

use featherguard_loader::{write_safetensors, Dtype, SafeTensorsFile, TensorData};
use featherguard_torch::arch::expected_tensors;
use featherguard_torch::model::Encoder;
use featherguard_torch::{
    EncoderShape, EncoderSpec, Problem, TorchConfig, TorchEmbedder, TorchError,
};

const TINY: EncoderShape = EncoderShape {
    vocab: 40,
    hidden: 8,
    intermediate: 16,
    layers: 2,
    max_positions: 16,
    type_vocab: 2,
};

fn spec() -> EncoderSpec {
    EncoderSpec {
        heads: 2,
        layer_norm_eps: 1e-12,
    }
}

/// Deterministic, non-trivial values (no RNG dependency).
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5) * 0.2)
        .collect()
}

/// Writes the tensors of `shape`, with `edit` applied to the (name, shape) list first.
fn write(
    dir: &tempfile::TempDir,
    shape: EncoderShape,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>)>),
) -> std::path::PathBuf {
    let mut list = expected_tensors(shape);
    edit(&mut list);
    let data: Vec<Vec<f32>> = list
        .iter()
        .enumerate()
        .map(|(i, (_, s))| values(s.iter().product(), i))
        .collect();
    let tensors: Vec<TensorData<'_>> = list
        .iter()
        .zip(&data)
        .map(|((name, s), v)| TensorData::from_slice(name, Dtype::F32, s, v))
        .collect();
    let path = dir.path().join("model.safetensors");
    write_safetensors(&path, &tensors, &Default::default()).unwrap();
    path
}

#[test]
fn tiny_encoder_runs_over_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, TINY, |_| {});
    let file = Arc::new(SafeTensorsFile::open(&path).unwrap());
    let enc = Encoder::load(file, TINY, spec(), tch::Device::Cpu, tch::Kind::Float).unwrap();
    // Two rows, the second padded: its pooled vector must equal the same row run alone.
    let ids = [1, 5, 9, 2, 1, 7, 2, 0];
    let mask = [1, 1, 1, 1, 1, 1, 1, 0];
    let out = enc.forward(&ids, &mask, 2, 4).unwrap();
    assert_eq!(out.len(), 16);
    assert!(out.iter().all(|v| v.is_finite()));
    let alone = enc.forward(&[1, 7, 2], &[1, 1, 1], 1, 3).unwrap();
    for (a, b) in out[8..].iter().zip(&alone) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Bounds are checked before libtorch sees them.
    assert!(matches!(
        enc.forward(&[1, 40], &[1, 1], 1, 2),
        Err(TorchError::Input(_))
    ));
    assert!(matches!(
        enc.forward(&[1; 17], &[1; 17], 1, 17),
        Err(TorchError::Input(_))
    ));
    assert!(matches!(
        enc.forward(&[1, 2, 3], &[1, 1], 1, 3),
        Err(TorchError::Input(_))
    ));
}

#[test]
fn every_mismatch_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, TINY, |list| {
        list.retain(|(n, _)| n != "encoder.layer.1.attention.self.key.bias");
        for (n, s) in list.iter_mut() {
            if n == "encoder.layer.0.intermediate.dense.weight" {
                *s = vec![15, 8];
            }
            if n == "embeddings.position_embeddings.weight" {
                *s = vec![8, 16];
            }
        }
    });
    let file = Arc::new(SafeTensorsFile::open(&path).unwrap());
    let err = Encoder::load(file, TINY, spec(), tch::Device::Cpu, tch::Kind::Float).unwrap_err();
    let TorchError::Checkpoint(m) = &err else {
        panic!("expected a checkpoint mismatch, got {err}");
    };
    let by_name: Vec<(&str, &Problem)> = m
        .mismatches
        .iter()
        .map(|x| (x.tensor.as_str(), &x.problem))
        .collect();
    assert_eq!(by_name.len(), 3, "{err}");
    assert!(by_name.contains(&("encoder.layer.1.attention.self.key.bias", &Problem::Missing)));
    assert!(by_name.contains(&(
        "encoder.layer.0.intermediate.dense.weight",
        &Problem::Shape {
            found: vec![15, 8],
            expected: vec![16, 8]
        }
    )));
    assert!(by_name
        .iter()
        .any(|(n, _)| *n == "embeddings.position_embeddings.weight"));
    let text = err.to_string();
    for name in [
        "encoder.layer.1.attention.self.key.bias",
        "encoder.layer.0.intermediate.dense.weight",
        "embeddings.position_embeddings.weight",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn a_checkpoint_of_another_model_lists_what_minilm_needs() {
    // A well-formed file that is not MiniLM: the embedder's default shape is checked and the
    // error, through the Embedder trait, still names the tensors and the setup command.
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, TINY, |_| {});
    std::fs::write(dir.path().join("tokenizer.json"), b"{}").unwrap();
    let e = TorchEmbedder::new(TorchConfig {
        weights: Some(path),
        ..Default::default()
    });
    let err = e.try_load().unwrap_err();
    let TorchError::Checkpoint(m) = &err else {
        panic!("expected a checkpoint mismatch, got {err}");
    };
    // 5 embedding tensors of the wrong shape, layers 0-1 wrong, layers 2-5 missing.
    assert_eq!(m.mismatches.len(), 101, "{err}");
    assert!(m
        .mismatches
        .iter()
        .any(|x| x.tensor == "encoder.layer.5.output.LayerNorm.bias"
            && x.problem == Problem::Missing));
    let flat = featherguard_core::Embedder::load(&e)
        .unwrap_err()
        .to_string();
    assert!(
        flat.contains("encoder.layer.5.output.LayerNorm.bias"),
        "{flat}"
    );
    assert!(flat.contains("featherguard setup"), "{flat}");
}

#[test]
fn heads_must_divide_the_hidden_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, TINY, |_| {});
    let file = Arc::new(SafeTensorsFile::open(&path).unwrap());
    let bad = EncoderSpec {
        heads: 3,
        layer_norm_eps: 1e-12,
    };
    let err = Encoder::load(file, TINY, bad, tch::Device::Cpu, tch::Kind::Float).unwrap_err();
    assert!(err.to_string().contains("3 heads"), "{err}");
}

#[test]
fn wrong_dtype_is_a_mismatch_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let list = expected_tensors(TINY);
    let data: Vec<Vec<f32>> = list
        .iter()
        .map(|(_, s)| values(s.iter().product(), 1))
        .collect();
    let halves = vec![half::f16::ZERO; 8];
    let mut tensors: Vec<TensorData<'_>> = list
        .iter()
        .zip(&data)
        .filter(|((n, _), _)| n != "embeddings.LayerNorm.bias")
        .map(|((n, s), v)| TensorData::from_slice(n, Dtype::F32, s, v))
        .collect();
    let shape8 = [8usize];
    tensors.push(TensorData::from_slice(
        "embeddings.LayerNorm.bias",
        Dtype::F16,
        &shape8,
        &halves,
    ));
    let path = dir.path().join("model.safetensors");
    write_safetensors(&path, &tensors, &Default::default()).unwrap();
    let file = Arc::new(SafeTensorsFile::open(&path).unwrap());
    let err = Encoder::load(file, TINY, spec(), tch::Device::Cpu, tch::Kind::Float).unwrap_err();
    let TorchError::Checkpoint(m) = &err else {
        panic!("{err}");
    };
    assert_eq!(m.mismatches.len(), 1);
    assert_eq!(m.mismatches[0].tensor, "embeddings.LayerNorm.bias");
    assert!(matches!(m.mismatches[0].problem, Problem::Dtype { .. }));
}
