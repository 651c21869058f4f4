//! Writes an fp32 BERT/MiniLM encoder as an ONNX graph whose weights are ONNX *external data*
//! pointing straight into the safetensors file (offset = 8 + header length + tensor offset).
//!
//! No weight is copied or transposed: linear layers are `Gemm(transB=1)` over the `[out, in]`
//! matrices as PyTorch stores them. The word-embedding table is the exception: it is not in the
//! graph at all. The caller passes the rows of a batch's tokens as the input [`WORD_ROWS`], read
//! from the file with positioned reads ([`WordTable`]): a mapped table becomes resident one page
//! per token ever seen (up to its 47 MB in a long-running process), read rows stay in the page
//! cache, outside the process's RSS. ONNX Runtime then maps the weights from the same file the
//! torch backend maps, and the graph file itself is a few tens of KB. The graph ends in masked
//! mean pooling (`[batch, hidden]`); L2 normalization is left to the caller.

use std::path::{Path, PathBuf};

use featherguard_loader::{Dtype, Header};

pub use featherguard_arch::{EncoderShape, EncoderSpec};

use crate::proto::{model, node, tensor_external, tensor_inline, value_info, Attr, Dim, Elem, Msg};

/// Why a checkpoint cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Tensors are missing or have the wrong dtype, shape or alignment; every problem is listed.
    #[error("{}: not a BERT encoder checkpoint this exporter supports:\n  {}", path.display(), problems.join("\n  "))]
    Checkpoint {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The graph file bytes and the shape they encode.
pub struct Exported {
    pub onnx: Vec<u8>,
    pub shape: EncoderShape,
}

/// Builds the graph for the checkpoint at `weights` whose parsed header is `header`. The graph
/// refers to the weights by file name, so it must be written into the same directory.
pub fn export_encoder(
    weights: &Path,
    header: &Header,
    spec: EncoderSpec,
) -> Result<Exported, ExportError> {
    let mut problems = Vec::new();
    let shape = read_shape(header, &mut problems);
    if let Some(s) = shape {
        if let Err(m) = featherguard_arch::check(weights.to_owned(), header, s, spec) {
            problems.extend(m.problems());
        }
    }
    let shape = match (shape, problems.is_empty()) {
        (Some(s), true) => s,
        _ => {
            return Err(ExportError::Checkpoint {
                path: weights.to_owned(),
                problems,
            })
        }
    };
    let location = weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        header,
        location,
        next: 0,
    };
    let out = g.encoder(shape, spec);
    let mut graph = Msg::new();
    for n in &g.nodes {
        graph.msg(1, n);
    }
    graph.str(2, "featherguard_minilm");
    for t in &g.inits {
        graph.msg(5, t);
    }
    let bs = [Dim::Named("batch"), Dim::Named("seq")];
    graph.msg(11, &value_info("input_ids", Elem::I64, &bs));
    graph.msg(11, &value_info("attention_mask", Elem::I64, &bs));
    graph.msg(
        11,
        &value_info(
            WORD_ROWS,
            Elem::F32,
            &[
                Dim::Named("batch"),
                Dim::Named("seq"),
                Dim::Fixed(shape.hidden as i64),
            ],
        ),
    );
    graph.msg(
        12,
        &value_info(
            &out,
            Elem::F32,
            &[Dim::Named("batch"), Dim::Fixed(shape.hidden as i64)],
        ),
    );
    Ok(Exported {
        onnx: model(&graph),
        shape,
    })
}

/// Name of the graph output: masked mean of the last hidden states, `[batch, hidden]`.
pub const OUTPUT: &str = "mean_pooled";

/// Name of the graph input holding each token's word-embedding row, `[batch, seq, hidden]`.
pub const WORD_ROWS: &str = "word_rows";

/// Tensor of the word-embedding table in the checkpoint.
const WORD_TABLE: &str = "embeddings.word_embeddings.weight";

/// The word-embedding table of a checkpoint, read row by row with positioned reads (`pread`): no
/// mapping, so rows are never resident in this process (they stay in the kernel's page cache).
#[derive(Debug)]
pub struct WordTable {
    file: std::fs::File,
    /// File offset of row 0.
    offset: u64,
    vocab: usize,
    hidden: usize,
}

impl WordTable {
    /// The table of the checkpoint at `path` whose parsed header is `header`.
    pub fn open(path: &Path, header: &Header) -> std::io::Result<WordTable> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let t = header
            .get(WORD_TABLE)
            .ok_or_else(|| invalid(format!("{}: no {WORD_TABLE}", path.display())))?;
        if t.dtype != Dtype::F32 || t.shape.len() != 2 {
            return Err(invalid(format!(
                "{}: {WORD_TABLE} is not a 2-d f32 tensor",
                path.display()
            )));
        }
        Ok(WordTable {
            file: std::fs::File::open(path)?,
            offset: (header.data_start() + t.data_offsets.0) as u64,
            vocab: t.shape[0],
            hidden: t.shape[1],
        })
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Appends the row of every id to `out` (`ids.len() * hidden` values).
    pub fn gather(&self, ids: &[i64], out: &mut Vec<f32>) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let row_bytes = self.hidden * 4;
        let mut buf = vec![0u8; row_bytes];
        out.reserve(ids.len() * self.hidden);
        for &id in ids {
            let row = usize::try_from(id)
                .ok()
                .filter(|&r| r < self.vocab)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("token id {id} outside the vocabulary of {}", self.vocab),
                    )
                })?;
            self.file
                .read_exact_at(&mut buf, self.offset + (row * row_bytes) as u64)?;
            out.extend(
                buf.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(())
    }
}

fn read_shape(h: &Header, problems: &mut Vec<String>) -> Option<EncoderShape> {
    let dims = |name: &str| h.get(name).map(|t| t.shape.clone());
    let (Some(we), Some(pe)) = (
        dims("embeddings.word_embeddings.weight"),
        dims("embeddings.position_embeddings.weight"),
    ) else {
        problems.push(
            "missing embeddings.word_embeddings.weight or embeddings.position_embeddings.weight"
                .into(),
        );
        return None;
    };
    let inter = dims("encoder.layer.0.intermediate.dense.weight");
    let layers = (0..)
        .take_while(|i| {
            h.get(&format!("encoder.layer.{i}.attention.self.query.weight"))
                .is_some()
        })
        .count();
    match (we.as_slice(), pe.as_slice(), inter.as_deref()) {
        ([vocab, hidden], [max_positions, _], Some([intermediate, _])) if layers > 0 => {
            Some(EncoderShape {
                vocab: *vocab,
                hidden: *hidden,
                intermediate: *intermediate,
                layers,
                max_positions: *max_positions,
                // Not read: the graph adds token type 0's row, and BERT's 2-row table is required.
                type_vocab: 2,
            })
        }
        _ => {
            problems.push(format!(
                "cannot read the architecture: word embeddings {we:?}, positions {pe:?}, intermediate {inter:?}, {layers} layers"
            ));
            None
        }
    }
}

struct Graph<'h> {
    nodes: Vec<Msg>,
    inits: Vec<Msg>,
    header: &'h Header,
    location: String,
    next: usize,
}

impl Graph<'_> {
    fn tmp(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    fn op(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr<'_>)], hint: &str) -> String {
        let out = self.tmp(hint);
        self.nodes.push(node(op, "", inputs, &[&out], attrs));
        out
    }

    /// A checkpoint tensor as an external initializer (its name is the tensor's name).
    fn weight(&mut self, name: &str) -> String {
        let t = self
            .header
            .get(name)
            .expect("checked by featherguard_arch::check");
        let dims: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
        let offset = (self.header.data_start() + t.data_offsets.0) as u64;
        let len = (t.data_offsets.1 - t.data_offsets.0) as u64;
        self.inits.push(tensor_external(
            name,
            Elem::F32,
            &dims,
            &self.location,
            offset,
            len,
        ));
        name.to_string()
    }

    fn const_i64(&mut self, hint: &str, dims: &[i64], v: &[i64]) -> String {
        let name = self.tmp(hint);
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.inits.push(tensor_inline(&name, Elem::I64, dims, &raw));
        name
    }

    fn const_f32(&mut self, hint: &str, v: f32) -> String {
        let name = self.tmp(hint);
        self.inits
            .push(tensor_inline(&name, Elem::F32, &[], &v.to_le_bytes()));
        name
    }

    fn linear(&mut self, x: &str, prefix: &str) -> String {
        let w = self.weight(&format!("{prefix}.weight"));
        let b = self.weight(&format!("{prefix}.bias"));
        self.op("Gemm", &[x, &w, &b], &[("transB", Attr::Int(1))], "gemm")
    }

    fn layer_norm(&mut self, x: &str, prefix: &str, eps: f64) -> String {
        let g = self.weight(&format!("{prefix}.weight"));
        let b = self.weight(&format!("{prefix}.bias"));
        self.op(
            "LayerNormalization",
            &[x, &g, &b],
            &[
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(eps as f32)),
            ],
            "ln",
        )
    }

    /// The whole encoder; returns the output name.
    fn encoder(&mut self, s: EncoderShape, spec: EncoderSpec) -> String {
        let h = s.hidden as i64;
        let heads = spec.heads as i64;
        let head_dim = h / heads;
        // Shapes computed from the input at run time: [batch, seq].
        let shape_bs = self.op("Shape", &["input_ids"], &[], "shape");
        let one_idx = self.const_i64("idx1", &[], &[1]);
        let seq = self.op(
            "Gather",
            &[&shape_bs, &one_idx],
            &[("axis", Attr::Int(0))],
            "seq",
        );
        let zero = self.const_i64("zero", &[], &[0]);
        let one = self.const_i64("one", &[], &[1]);
        let positions = self.op("Range", &[&zero, &seq, &one], &[], "pos");
        let heads_dims = self.const_i64("heads_dims", &[2], &[heads, head_dim]);
        let shape_bshd = self.op(
            "Concat",
            &[&shape_bs, &heads_dims],
            &[("axis", Attr::Int(0))],
            "bshd",
        );
        let hidden_dim = self.const_i64("hidden_dim", &[1], &[h]);
        let shape_bsh = self.op(
            "Concat",
            &[&shape_bs, &hidden_dim],
            &[("axis", Attr::Int(0))],
            "bsh",
        );
        let flat = self.const_i64("flat", &[2], &[-1, h]);

        // Embeddings: word + position + token type 0, then LayerNorm; rows flattened to [B*S, H].
        // Word rows come in as an input (see `WordTable`), not as a Gather over a mapped table.
        let words = WORD_ROWS.to_string();
        let pe = self.weight("embeddings.position_embeddings.weight");
        let pos = self.op("Gather", &[&pe, &positions], &[], "posemb");
        let te = self.weight("embeddings.token_type_embeddings.weight");
        let type0 = self.op("Gather", &[&te, &zero], &[], "type0");
        let sum = self.op("Add", &[&words, &pos], &[], "emb");
        let sum = self.op("Add", &[&sum, &type0], &[], "emb");
        let sum = self.op("Reshape", &[&sum, &flat], &[], "emb2d");
        let mut x = self.layer_norm(&sum, "embeddings.LayerNorm", spec.layer_norm_eps);

        // Additive attention mask: 0 for tokens, -10000 for padding, shaped [B, 1, 1, S].
        let maskf = self.op(
            "Cast",
            &["attention_mask"],
            &[("to", Attr::Int(Elem::F32 as i64))],
            "maskf",
        );
        let onef = self.const_f32("onef", 1.0);
        let inv = self.op("Sub", &[&onef, &maskf], &[], "inv");
        let big = self.const_f32("neg", -10000.0);
        let bias = self.op("Mul", &[&inv, &big], &[], "maskbias");
        let axes12 = self.const_i64("axes12", &[2], &[1, 2]);
        let bias = self.op("Unsqueeze", &[&bias, &axes12], &[], "maskbias4");
        let scale = self.const_f32("scale", 1.0 / (head_dim as f32).sqrt());
        let sqrt2 = self.const_f32("sqrt2", std::f32::consts::SQRT_2);
        let half = self.const_f32("half", 0.5);

        for l in 0..s.layers {
            let p = format!("encoder.layer.{l}");
            let q = self.linear(&x, &format!("{p}.attention.self.query"));
            let k = self.linear(&x, &format!("{p}.attention.self.key"));
            let v = self.linear(&x, &format!("{p}.attention.self.value"));
            let q = self.op("Mul", &[&q, &scale], &[], "qs");
            let q = self.op("Reshape", &[&q, &shape_bshd], &[], "q4");
            let k = self.op("Reshape", &[&k, &shape_bshd], &[], "k4");
            let v = self.op("Reshape", &[&v, &shape_bshd], &[], "v4");
            let q = self.op(
                "Transpose",
                &[&q],
                &[("perm", Attr::Ints(&[0, 2, 1, 3]))],
                "qt",
            );
            let k = self.op(
                "Transpose",
                &[&k],
                &[("perm", Attr::Ints(&[0, 2, 3, 1]))],
                "kt",
            );
            let v = self.op(
                "Transpose",
                &[&v],
                &[("perm", Attr::Ints(&[0, 2, 1, 3]))],
                "vt",
            );
            let scores = self.op("MatMul", &[&q, &k], &[], "scores");
            let scores = self.op("Add", &[&scores, &bias], &[], "masked");
            let probs = self.op("Softmax", &[&scores], &[("axis", Attr::Int(-1))], "probs");
            let ctx = self.op("MatMul", &[&probs, &v], &[], "ctx");
            let ctx = self.op(
                "Transpose",
                &[&ctx],
                &[("perm", Attr::Ints(&[0, 2, 1, 3]))],
                "ctxt",
            );
            let ctx = self.op("Reshape", &[&ctx, &flat], &[], "ctx2d");
            let attn = self.linear(&ctx, &format!("{p}.attention.output.dense"));
            let res = self.op("Add", &[&attn, &x], &[], "res1");
            let x1 = self.layer_norm(
                &res,
                &format!("{p}.attention.output.LayerNorm"),
                spec.layer_norm_eps,
            );
            // GELU (erf form, as BERT): 0.5 * y * (1 + erf(y / sqrt 2)); ORT fuses it into one kernel.
            let y = self.linear(&x1, &format!("{p}.intermediate.dense"));
            let d = self.op("Div", &[&y, &sqrt2], &[], "gdiv");
            let e = self.op("Erf", &[&d], &[], "gerf");
            let e = self.op("Add", &[&e, &onef], &[], "gadd");
            let m = self.op("Mul", &[&y, &e], &[], "gmul");
            let g = self.op("Mul", &[&m, &half], &[], "gelu");
            let out = self.linear(&g, &format!("{p}.output.dense"));
            let res = self.op("Add", &[&out, &x1], &[], "res2");
            x = self.layer_norm(&res, &format!("{p}.output.LayerNorm"), spec.layer_norm_eps);
        }

        // Masked mean over the sequence.
        let x3 = self.op("Reshape", &[&x, &shape_bsh], &[], "hidden3d");
        let axes2 = self.const_i64("axes2", &[1], &[2]);
        let mask3 = self.op("Unsqueeze", &[&maskf, &axes2], &[], "mask3");
        let masked = self.op("Mul", &[&x3, &mask3], &[], "masked_hidden");
        let axes1 = self.const_i64("axes1", &[1], &[1]);
        let summed = self.op(
            "ReduceSum",
            &[&masked, &axes1],
            &[("keepdims", Attr::Int(0))],
            "summed",
        );
        let count = self.op(
            "ReduceSum",
            &[&mask3, &axes1],
            &[("keepdims", Attr::Int(0))],
            "count",
        );
        let tiny = self.const_f32("tiny", 1e-9);
        let count = self.op("Max", &[&count, &tiny], &[], "count_pos");
        self.nodes
            .push(node("Div", "", &[&summed, &count], &[OUTPUT], &[]));
        OUTPUT.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use featherguard_loader::{serialize, TensorData};
    use std::collections::BTreeMap;

    /// A tiny random-free checkpoint with the MiniLM tensor layout.
    fn tiny_checkpoint(skip: Option<&str>) -> Vec<u8> {
        let s = EncoderShape {
            vocab: 10,
            hidden: 4,
            intermediate: 8,
            layers: 2,
            max_positions: 16,
            type_vocab: 2,
        };
        let tensors = featherguard_arch::expected_tensors(s);
        let data: Vec<Vec<f32>> = tensors
            .iter()
            .map(|(_, sh)| vec![0.5; sh.iter().product()])
            .collect();
        let list: Vec<TensorData<'_>> = tensors
            .iter()
            .zip(&data)
            .filter(|((n, _), _)| Some(n.as_str()) != skip)
            .map(|((n, sh), d)| TensorData::from_slice(n, Dtype::F32, sh, d))
            .collect();
        serialize(&list, &BTreeMap::new(), Path::new("tiny.safetensors")).unwrap()
    }

    #[test]
    fn exports_a_checkpoint_with_external_offsets() {
        let bytes = tiny_checkpoint(None);
        let header = Header::parse(Path::new("tiny.safetensors"), &bytes).unwrap();
        let spec = EncoderSpec {
            heads: 2,
            layer_norm_eps: 1e-12,
        };
        let e = export_encoder(Path::new("/x/tiny.safetensors"), &header, spec).unwrap();
        assert_eq!(e.shape.layers, 2);
        let text = String::from_utf8_lossy(&e.onnx);
        assert!(
            text.contains("tiny.safetensors") && text.contains("Gemm") && text.contains(OUTPUT)
        );
    }

    #[test]
    fn missing_tensors_are_all_named() {
        let bytes = tiny_checkpoint(Some("encoder.layer.1.output.dense.bias"));
        let header = Header::parse(Path::new("tiny.safetensors"), &bytes).unwrap();
        let err = export_encoder(
            Path::new("tiny.safetensors"),
            &header,
            EncoderSpec {
                heads: 2,
                layer_norm_eps: 1e-12,
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("encoder.layer.1.output.dense.bias: missing"),
            "{err}"
        );
        let err = export_encoder(
            Path::new("tiny.safetensors"),
            &header,
            EncoderSpec {
                heads: 3,
                layer_norm_eps: 1e-12,
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("heads do not divide"), "{err}");
    }
}
