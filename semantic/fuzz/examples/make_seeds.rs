//! Writes the seed corpora of the semantic fuzz targets with the crate's own writers:
//! `cargo run --example make_seeds` (from `semantic/fuzz`; stable toolchain is fine).

use featherguard_core::{Embeddings, ModelId};
use featherguard_semantic::{build_bank, train_head, EmbeddedSet, TrainOptions, BENIGN};

fn main() {
    // A toy set in 4-d: benign near x, jailbreak near y, exfiltration near z.
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for i in 0..24u16 {
        let class = i % 3;
        let mut v = [0.05 * f32::from(i % 5), 0.0, 0.0, 0.1];
        v[usize::from(class)] += 1.0;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        data.extend(v.iter().map(|x| x / n));
        labels.push(class);
    }
    let n = labels.len();
    let set = EmbeddedSet {
        model: ModelId {
            name: "toy".into(),
            sha256: "00".into(),
            dim: 4,
        },
        classes: vec![BENIGN.into(), "jailbreak".into(), "exfiltration".into()],
        labels,
        windows: Embeddings::new(
            4,
            data.clone(),
            (0..n).map(|i| i..i + 1).collect(),
            vec![0; n],
        )
        .unwrap(),
        pooled: data,
    };
    let bank = build_bank(&set, 3, "toy".into(), 0.05, 0.01).unwrap();
    let options = TrainOptions {
        epochs: 20,
        ..TrainOptions::default()
    };
    let (head, _) = train_head(&set, options, "toy".into()).unwrap();
    std::fs::create_dir_all("seeds/bank_file").unwrap();
    std::fs::create_dir_all("seeds/bank_parts").unwrap();
    bank.save("seeds/bank_file/bank.safetensors".as_ref())
        .unwrap();
    head.save("seeds/bank_file/head.safetensors".as_ref())
        .unwrap();

    // bank_parts: [ctl, dim, rows_a, cols_a, rows_b, dim text len], values, metadata JSON.
    let mut parts = vec![0u8, 4, n as u8, 4, n as u8, 0];
    for x in bank.vectors().unwrap() {
        parts.extend_from_slice(&x.to_le_bytes());
    }
    for l in bank.labels() {
        parts.extend_from_slice(&l.to_le_bytes());
    }
    parts.extend_from_slice(serde_json::to_string(bank.meta()).unwrap().as_bytes());
    std::fs::write("seeds/bank_parts/bank", parts).unwrap();

    let (w, b) = head.weights();
    let mut parts = vec![1u8, 4, b.len() as u8, 4, b.len() as u8, 0];
    for x in w.iter().chain(b) {
        parts.extend_from_slice(&x.to_le_bytes());
    }
    parts.extend_from_slice(serde_json::to_string(head.meta()).unwrap().as_bytes());
    std::fs::write("seeds/bank_parts/head", parts).unwrap();
}
