//! The BERT/MiniLM encoder that both ML backends run (the ONNX exporter and the libtorch
//! forward pass): its sizes, and every tensor (name, dtype, shape, alignment) a safetensors
//! checkpoint must hold for them. Both backends check a checkpoint here before using it, so a
//! wrong file is refused with the same list of mismatching tensors whichever backend reads it.

use std::fmt;
use std::path::PathBuf;

use featherguard_loader::{Dtype, Header};

/// Architecture numbers the weights cannot tell (the rest is read from tensor shapes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSpec {
    /// Attention heads per layer; must divide the hidden size.
    pub heads: usize,
    /// LayerNorm epsilon (the ONNX graph stores it as f32).
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

/// Sizes of the encoder, in elements (rows, columns, layers), as its weight tensors have them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderShape {
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub max_positions: usize,
    /// Rows of the token-type embedding table (BERT: 2).
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
#[error("{}: not the expected BERT/MiniLM checkpoint:\n  {}", path.display(), self.problems().join("\n  "))]
pub struct CheckpointMismatch {
    pub path: PathBuf,
    /// Problems of the architecture as a whole (heads not dividing the hidden size).
    pub config: Option<String>,
    pub mismatches: Vec<Mismatch>,
}

impl CheckpointMismatch {
    /// One line per problem: the architecture's first, then each tensor's, in checking order.
    pub fn problems(&self) -> Vec<String> {
        self.config
            .iter()
            .cloned()
            .chain(self.mismatches.iter().map(ToString::to_string))
            .collect()
    }
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

/// Per-layer tensor names, prefixed by `encoder.layer.{l}.` in a checkpoint, in forward order.
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

    #[test]
    fn every_problem_is_listed_config_first() {
        use featherguard_loader::{serialize, TensorData};
        let s = EncoderShape {
            vocab: 10,
            hidden: 4,
            intermediate: 8,
            layers: 1,
            max_positions: 16,
            type_vocab: 2,
        };
        let tensors = expected_tensors(s);
        let largest = tensors.iter().map(|(_, sh)| sh.iter().product()).max();
        let values = vec![0.5f32; largest.unwrap_or(0)];
        // One tensor missing, one with a dimension dropped.
        let list: Vec<TensorData<'_>> = tensors
            .iter()
            .filter_map(|(n, sh)| {
                let sh: &[usize] = match n.as_str() {
                    "embeddings.LayerNorm.bias" => return None,
                    "encoder.layer.0.output.dense.weight" => &sh[..1],
                    _ => sh,
                };
                let v = &values[..sh.iter().product()];
                Some(TensorData::from_slice(n, Dtype::F32, sh, v))
            })
            .collect();
        let path = std::path::Path::new("tiny.safetensors");
        let bytes = serialize(&list, &Default::default(), path).unwrap();
        let header = Header::parse(path, &bytes).unwrap();
        let err = check(
            path.into(),
            &header,
            s,
            EncoderSpec {
                heads: 3,
                layer_norm_eps: 1e-12,
            },
        )
        .unwrap_err();
        assert_eq!(
            err.problems(),
            [
                "3 heads do not divide hidden size 4",
                "embeddings.LayerNorm.bias: missing",
                "encoder.layer.0.output.dense.weight: shape [4], expected [4, 8]",
            ]
        );
    }

    #[test]
    fn default_eps_is_the_same_number_in_f32() {
        // The ONNX graph stores the epsilon as f32; going through f64 must not change its bits.
        assert_eq!(
            (EncoderSpec::default().layer_norm_eps as f32).to_bits(),
            1e-12f32.to_bits()
        );
    }
}
