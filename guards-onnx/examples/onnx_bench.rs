//! Latency, throughput and memory of the ONNX embedder (run by scripts/onnx/bench.py).
//!
//! usage: onnx_bench SENTENCES.txt [--threads N] [--arena shrink|off|on]
//! Prints one JSON object: single-prompt latency of `embed` vs a bare `session.run` on the same
//! tokens, batch-32 throughput, and RSS (total / anon / file) before load, after load, after every
//! sentence was embedded, and after unload.

use std::time::Instant;

use featherguard_core::Embedder;
use featherguard_core::ProcStatus;
use featherguard_onnx::{runtime, Arena, OnnxConfig, OnnxEmbedder};
use featherguard_tokenize::TextTokenizer;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn rss_json(r: ProcStatus) -> String {
    format!(
        "{{\"total_mb\": {:.1}, \"anon_mb\": {:.1}, \"file_mb\": {:.1}}}",
        mb(r.rss),
        mb(r.anon),
        mb(r.file)
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: onnx_bench SENTENCES.txt [--threads N] [--arena shrink|off|on]");
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .map_or(1, |v| v.parse().unwrap());
    let arena = match args
        .iter()
        .position(|a| a == "--arena")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        Some("on") => Arena::On,
        Some("off") => Arena::Off,
        _ => Arena::Shrink,
    };
    let text = std::fs::read_to_string(path).expect("read sentences");
    let sentences: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let config = OnnxConfig {
        threads,
        arena,
        ..Default::default()
    };
    let before = ProcStatus::read().unwrap_or_default();
    // The runtime library stays loaded for the process's lifetime (ort cannot unload it), so
    // unload is measured against the figure after the runtime is up and before the session exists.
    let lib = runtime::locate(None).unwrap();
    let (_, env) = runtime::init(&lib).unwrap();
    let runtime_up = ProcStatus::read().unwrap_or_default();
    let e = OnnxEmbedder::new(config.clone());
    let t = Instant::now();
    e.load()
        .expect("load (run `cargo xtask setup --only onnx,models`)");
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let loaded = ProcStatus::read().unwrap_or_default();

    // Single prompt, ~25 tokens.
    let prompt = "Please summarize the attached quarterly report and list the three most important risks for our team.";
    for _ in 0..20 {
        e.embed(&[prompt]).unwrap();
    }
    let mut guard_ms: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            e.embed(&[prompt]).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();

    // Batch-32 throughput over the sentences, then memory after all of them.
    let t = Instant::now();
    let mut n = 0;
    for chunk in sentences.chunks(32) {
        e.embed(chunk).unwrap();
        n += chunk.len();
    }
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    featherguard_core::release_free_heap();
    let after_many = ProcStatus::read().unwrap_or_default();
    e.unload();
    let unloaded = ProcStatus::read().unwrap_or_default();
    // Bare session.run on the same tokens, same session options, separate session.
    let graph = e.prepare_graph().unwrap();
    let mut session = Session::builder(&env)
        .unwrap()
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .unwrap()
        .with_intra_threads(threads)
        .unwrap()
        .with_inter_threads(1)
        .unwrap()
        .with_intra_op_spinning(false)
        .unwrap()
        .with_memory_pattern(false)
        .unwrap()
        .commit_from_file(&graph)
        .unwrap();
    let tok = TextTokenizer::from_file(
        &featherguard_setup::Layout::discover()
            .unwrap()
            .find_minilm()
            .unwrap()
            .tokenizer,
        config.windows,
    )
    .unwrap();
    let batch = tok.encode(&[prompt]).unwrap();
    let shape = [batch.rows as i64, batch.seq_len as i64];
    let weights = featherguard_setup::Layout::discover()
        .unwrap()
        .find_minilm()
        .unwrap()
        .safetensors;
    let header = featherguard_loader::SafeTensorsFile::open(&weights).unwrap();
    let table = featherguard_onnx::export::WordTable::open(&weights, header.header()).unwrap();
    let mut run = || {
        let ids = TensorRef::from_array_view((shape, batch.input_ids.as_slice())).unwrap();
        let mask = TensorRef::from_array_view((shape, batch.attention_mask.as_slice())).unwrap();
        // The bare run pays for the word-row reads too: they are part of what the model needs.
        let t = Instant::now();
        let mut rows = Vec::new();
        table.gather(&batch.input_ids, &mut rows).unwrap();
        let shape3 = [shape[0], shape[1], table.hidden() as i64];
        let words = TensorRef::from_array_view((shape3, rows.as_slice())).unwrap();
        let out = session
            .run(ort::inputs!["input_ids" => ids, "attention_mask" => mask, "word_rows" => words])
            .unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        drop(out);
        ms
    };
    for _ in 0..20 {
        run();
    }
    let mut bare_ms: Vec<f64> = (0..200).map(|_| run()).collect();
    drop(session);

    println!(
        "{{\"threads\": {threads}, \"arena\": \"{arena:?}\", \"tokens\": {}, \"load_ms\": {load_ms:.1}, \"guard_p50_ms\": {:.3}, \"bare_run_p50_ms\": {:.3}, \
         \"batch32_sentences_per_s\": {per_s:.1}, \"sentences\": {n}, \"rss_before\": {}, \"rss_runtime_up\": {}, \"rss_loaded\": {}, \"rss_after_all\": {}, \"rss_unloaded\": {}}}",
        batch.seq_len,
        median(&mut guard_ms),
        median(&mut bare_ms),
        rss_json(before),
        rss_json(runtime_up),
        rss_json(loaded),
        rss_json(after_many),
        rss_json(unloaded)
    );
}
