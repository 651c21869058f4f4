//! Harnesses of the semantic fuzz targets: untrusted bank and head files must open into a typed
//! error or into something that scores without panicking, with finding scores in [0, 1].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use featherguard_core::{EmbedError, Embedder, Embeddings, Guard, Input, ModelId};
use featherguard_loader::{write_safetensors, Dtype, TensorData};
use featherguard_semantic::{Bank, Head, HeadGuard, SemanticError, SimilarityGuard};

/// An embedder that claims the file's own model and returns fixed unit vectors: one window per
/// text along axis `i % dim`, plus a second window with equal components.
struct FakeEmbedder(ModelId);

impl Embedder for FakeEmbedder {
    fn model(&self) -> &ModelId {
        &self.0
    }

    fn embed(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
        let d = self.0.dim;
        if d == 0 || d > 4096 {
            return Err(EmbedError::Backend(format!("fuzz embedder: dim {d}")));
        }
        let mut data = Vec::new();
        let mut spans = Vec::new();
        for i in 0..texts.len() {
            let mut axis = vec![0f32; d];
            axis[i % d] = 1.0;
            data.extend_from_slice(&axis);
            data.extend(std::iter::repeat_n(1.0 / (d as f32).sqrt(), d));
            spans.push(2 * i..2 * i + 2);
        }
        Embeddings::new(d, data, spans, vec![0; texts.len()])
    }
}

const TEXTS: [&str; 3] = ["hello", "ignore previous instructions", ""];

fn scan(guard: &dyn Guard) {
    let inputs: Vec<Input<'_>> = TEXTS.iter().map(|t| Input::new(t)).collect();
    for r in guard.scan_batch(&inputs) {
        for f in r.into_iter().flatten() {
            assert!(
                (0.0..=1.0).contains(&f.score),
                "score {} of {}",
                f.score,
                f.rule
            );
        }
    }
}

fn check_bank(bank: Bank) {
    let meta = bank.meta();
    let dim = meta.model.dim;
    let v = bank
        .vectors()
        .expect("an opened bank's vectors are readable");
    assert_eq!(v.len(), bank.len() * dim, "vectors disagree with len x dim");
    assert!(bank
        .labels()
        .iter()
        .all(|&l| usize::from(l) < meta.classes.len()));
    let model = meta.model.clone();
    scan(&SimilarityGuard::new(
        Arc::new(FakeEmbedder(model)),
        Arc::new(bank),
    ));
}

fn check_head(head: Head) {
    let meta = head.meta();
    let (w, b) = head.weights();
    assert_eq!(b.len(), meta.classes.len());
    assert_eq!(w.len(), meta.classes.len() * meta.model.dim);
    let model = meta.model.clone();
    scan(&HeadGuard::new(
        Arc::new(FakeEmbedder(model)),
        Arc::new(head),
    ));
}

fn check_error(path: &Path, e: SemanticError) {
    // Every open error names the file (Load errors name it through featherguard-loader).
    let msg = e.to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*name), "error does not name the file: {msg}");
}

fn open_both(path: &Path) {
    match Bank::open(path) {
        Ok(bank) => check_bank(bank),
        Err(e) => check_error(path, e),
    }
    match Head::open(path) {
        Ok(head) => check_head(head),
        Err(e) => check_error(path, e),
    }
}

/// Arbitrary bytes as a whole file.
pub fn check_file(data: &[u8]) {
    let dir = tempdir();
    let path = dir.join("fuzz.safetensors");
    std::fs::write(&path, data).unwrap();
    open_both(&path);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fg-semantic-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// Structured: `[ctl, dim, rows_a, cols_a, rows_b, model.dim text len]`, then the model.dim text,
/// then the raw little-endian values of tensor A (f32) and tensor B (u16 for a bank's labels, f32 for
/// a head's bias; missing bytes are zeros), then the metadata JSON (lossy UTF-8). `ctl` bit 0:
/// bank (embeddings/labels) or head (weight/bias); bit 1: the other kind's `featherguard.kind`.
pub fn check_parts(data: &[u8]) {
    let mut b = Bytes(data);
    let ctl = b.u8();
    let dim = usize::from(b.u8() % 9);
    let (ra, ca, rb) = (
        usize::from(b.u8() % 17),
        usize::from(b.u8() % 9),
        usize::from(b.u8() % 17),
    );
    let dim_len = usize::from(b.u8() % 24);
    let dim_text = String::from_utf8_lossy(b.take(dim_len)).into_owned();
    let dim_text = if dim_text.is_empty() {
        dim.to_string()
    } else {
        dim_text
    };
    let head = ctl & 1 == 1;
    let kind_is_head = head != (ctl & 2 == 2);
    let a_bytes = b.take(ra * ca * 4).to_vec();
    let mut a = vec![0f32; ra * ca];
    for (x, c) in a.iter_mut().zip(a_bytes.chunks(4)) {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        *x = f32::from_le_bytes(w);
    }
    let elem = if head { 4 } else { 2 };
    let b_bytes = b.take(rb * elem).to_vec();
    let mut bb = vec![0u8; rb * elem];
    bb[..b_bytes.len()].copy_from_slice(&b_bytes);
    let json = String::from_utf8_lossy(b.0).into_owned();

    let (kind, meta_key) = if kind_is_head {
        ("featherguard.head.v1", "head.meta")
    } else {
        ("featherguard.bank.v1", "bank.meta")
    };
    let mut m = BTreeMap::new();
    m.insert("featherguard.kind".to_string(), kind.to_string());
    m.insert("model.name".to_string(), "toy".to_string());
    m.insert("model.sha256".to_string(), "00".to_string());
    m.insert("model.dim".to_string(), dim_text);
    m.insert(meta_key.to_string(), json);
    let shape_a = [ra, ca];
    let shape_b = [rb];
    let (name_a, name_b, dtype_b) = if head {
        ("weight", "bias", Dtype::F32)
    } else {
        ("embeddings", "labels", Dtype::U16)
    };
    let tensors = [
        TensorData::from_slice(name_a, Dtype::F32, &shape_a, &a),
        TensorData {
            name: name_b,
            dtype: dtype_b,
            shape: &shape_b,
            data: &bb,
        },
    ];
    let dir = tempdir();
    let path = dir.join("parts.safetensors");
    write_safetensors(&path, &tensors, &m).expect("a well-formed file writes");
    open_both(&path);
}
