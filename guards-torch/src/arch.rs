//! The BERT/MiniLM architecture a checkpoint must match, checked in plain Rust before any
//! tensor is handed to libtorch: a wrong shape that reached a libtorch op would be a C++
//! exception at best, and a read past the end of a mapped buffer at worst.

use std::fmt;
use std::path::PathBuf;

use featherguard_loader::{Dtype, Header};

/// Architecture numbers the weights cannot tell (the rest is read from tensor shapes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSpec {
    /// Attention heads per layer; must divide the hidden size.
    pub heads: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for EncoderSpec {
    /// all-MiniLM-L6-v2 (BERT config: 12 heads, eps 1e-12).
    fn default() -> Self {
        EncoderSpec {
            heads: 12,
            layer_norm_eps: 1e-12,
        }
    }
}

/// Sizes of the encoder, read from the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderShape {
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
}

impl EncoderShape {
    /// all-MiniLM-L6-v2: what the pinned checkpoint must contain.
    pub const MINILM_L6: EncoderShape = EncoderShape {
        vocab: 30522,
        hidden: 384,
        intermediate: 1536,
        layers: 6,
        max_positions: 512,
        type_vocab: 2,
    };
}

/// What is wrong with one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing,
    Shape {
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    Dtype {
        found: Dtype,
    },
    /// f32 data must sit at a 4-byte aligned file offset to be used in place.
    Misaligned {
        offset: usize,
    },
}

/// One tensor that does not match the architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Tensor name as the architecture expects it.
    pub tensor: String,
    pub problem: Problem,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tensor;
        match &self.problem {
            Problem::Missing => write!(f, "{t}: missing"),
            Problem::Shape { found, expected } => {
                write!(f, "{t}: shape {found:?}, expected {expected:?}")
            }
            Problem::Dtype { found } => write!(f, "{t}: dtype {found}, expected F32"),
            Problem::Misaligned { offset } => {
                write!(f, "{t}: data at file offset {offset} is not 4-byte aligned")
            }
        }
    }
}

/// A checkpoint that cannot be the encoder: every mismatching tensor is listed, by name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: not the expected BERT/MiniLM checkpoint:\n  {}", path.display(), list(config, mismatches))]
pub struct CheckpointMismatch {
    pub path: PathBuf,
    /// Problems of the architecture as a whole (heads not dividing the hidden size).
    pub config: Option<String>,
    pub mismatches: Vec<Mismatch>,
}

fn list(config: &Option<String>, m: &[Mismatch]) -> String {
    config
        .iter()
        .cloned()
        .chain(m.iter().map(ToString::to_string))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Every tensor the forward pass uses, with its expected shape, in a fixed order.
pub fn expected_tensors(s: EncoderShape) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (s.hidden, s.intermediate);
    let mut v = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![s.vocab, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![s.max_positions, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![s.type_vocab, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..s.layers {
        for (name, shape) in LAYER_TENSORS.iter().zip(layer_shapes(h, i)) {
            v.push((format!("encoder.layer.{l}.{name}"), shape));
        }
    }
    v
}

/// Per-layer tensor names, in the order [`crate::model`] consumes them.
pub const LAYER_TENSORS: [&str; 16] = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

fn layer_shapes(h: usize, i: usize) -> [Vec<usize>; 16] {
    [
        vec![h, h],
        vec![h],
        vec![h, h],
        vec![h],
        vec![h, h],
        vec![h],
        vec![h, h],
        vec![h],
        vec![h],
        vec![h],
        vec![i, h],
        vec![i],
        vec![h, i],
        vec![h],
        vec![h],
        vec![h],
    ]
}

/// Checks `header` against `shape` and `spec`: names, dtypes, shapes and alignment of every tensor
/// the forward pass reads. Extra tensors (the pooler, `position_ids`) are ignored.
pub fn check(
    path: PathBuf,
    header: &Header,
    shape: EncoderShape,
    spec: EncoderSpec,
) -> Result<(), CheckpointMismatch> {
    let config = (spec.heads == 0 || shape.hidden % spec.heads != 0).then(|| {
        format!(
            "{} heads do not divide hidden size {}",
            spec.heads, shape.hidden
        )
    });
    let mut mismatches = Vec::new();
    for (name, expected) in expected_tensors(shape) {
        let problem = match header.get(&name) {
            None => Some(Problem::Missing),
            Some(t) if t.dtype != Dtype::F32 => Some(Problem::Dtype { found: t.dtype }),
            Some(t) if t.shape != expected => Some(Problem::Shape {
                found: t.shape.clone(),
                expected,
            }),
            Some(t) if (header.data_start() + t.data_offsets.0) % 4 != 0 => {
                Some(Problem::Misaligned {
                    offset: header.data_start() + t.data_offsets.0,
                })
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            mismatches.push(Mismatch {
                tensor: name,
                problem,
            });
        }
    }
    if mismatches.is_empty() && config.is_none() {
        Ok(())
    } else {
        Err(CheckpointMismatch {
            path,
            config,
            mismatches,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minilm_has_101_tensors() {
        // 5 embedding tensors + 6 layers x 16.
        assert_eq!(expected_tensors(EncoderShape::MINILM_L6).len(), 101);
    }
}
