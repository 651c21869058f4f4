//! Measures of the torch backend (benchmarks, not tests: the machine is shared and noisy, so every
//! comparison is made within one run, alternating the two sides, and reported as medians).
//!
//! ```text
//! torch_bench parity     [--corpus FILE.jsonl] [--n 1000]   torch vs fp32 ONNX embeddings
//! torch_bench load       [--reps 7]                         MiniLM: mapped vs read_safetensors + copy
//! torch_bench rss        baseline|mapped|read FILE          one load of FILE; run under /usr/bin/time -v
//! torch_bench throughput [--corpus FILE.jsonl] [--n 640] [--rounds 5] [--threads 1]
//! ```
//! Each prints one JSON object. The corpus defaults to semantic/data/default-corpus.jsonl.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use featherguard_core::{Embedder, Rss};
use featherguard_loader::SafeTensorsFile;
use featherguard_onnx::{OnnxConfig, OnnxEmbedder};
use featherguard_setup::Layout;
use featherguard_torch::arch::expected_tensors;
use featherguard_torch::model::{Encoder, Mapped};
use featherguard_torch::{EncoderShape, EncoderSpec, TorchConfig, TorchEmbedder};
use tch::{Kind, Tensor};

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn texts(args: &[String], default_n: usize) -> Vec<String> {
    let path = arg(args, "--corpus").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../semantic/data/default-corpus.jsonl")
    });
    let n = arg(args, "--n").map_or(default_n, |v| v.parse().expect("--n N"));
    let body = std::fs::read_to_string(&path).expect("read the corpus");
    body.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
        .take(n)
        .collect()
}

fn minilm() -> PathBuf {
    Layout::discover()
        .and_then(|l| l.find_minilm())
        .expect("run `cargo xtask setup --only models`")
        .safetensors
}

fn parity(args: &[String]) {
    let texts = texts(args, 1000);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let t = TorchEmbedder::new(TorchConfig::default());
    let o = OnnxEmbedder::new(OnnxConfig::default());
    let (mut min_cos, mut max_abs, mut sum_cos, mut rows) = (1f64, 0f32, 0f64, 0usize);
    for chunk in refs.chunks(32) {
        let a = t.embed(chunk).unwrap();
        let b = o.embed(chunk).unwrap();
        assert_eq!(a.rows(), b.rows());
        for (x, y) in a.data().chunks(a.dim()).zip(b.data().chunks(b.dim())) {
            let c: f64 = x.iter().zip(y).map(|(p, q)| f64::from(p * q)).sum();
            let d = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            min_cos = min_cos.min(c);
            sum_cos += c;
            max_abs = max_abs.max(d);
            rows += 1;
        }
    }
    println!(
        "{{\"texts\": {}, \"rows\": {rows}, \"min_cosine\": {min_cos:.9}, \"mean_cosine\": {:.9}, \"max_abs_diff\": {max_abs:.3e}, \
         \"pass\": {}}}",
        texts.len(),
        sum_cos / rows as f64,
        min_cos >= 0.99999 && max_abs <= 1e-4
    );
}

/// What `tch` offers for a safetensors file: read it whole, then copy every tensor into the
/// model's (pre-allocated, here zero-filled rather than randomly initialized) parameters.
fn read_and_copy(path: &Path) -> Vec<Tensor> {
    let read = Tensor::read_safetensors(path).unwrap();
    let by_name: std::collections::HashMap<String, Tensor> = read.into_iter().collect();
    let _g = tch::no_grad_guard();
    expected_tensors(EncoderShape::MINILM_L6)
        .into_iter()
        .map(|(name, shape)| {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let mut p = Tensor::zeros(dims.as_slice(), (Kind::Float, tch::Device::Cpu));
            p.copy_(&by_name[&name]);
            p
        })
        .collect()
}

fn load(args: &[String]) {
    let reps = arg(args, "--reps").map_or(7, |v| v.parse().unwrap());
    let path = minilm();
    tch::set_num_threads(1);
    // Warm both paths (page cache, allocator) once before timing.
    drop(read_and_copy(&path));
    let open = || {
        let f = Arc::new(SafeTensorsFile::open(&path).unwrap());
        Encoder::load(
            f,
            EncoderShape::MINILM_L6,
            EncoderSpec::default(),
            tch::Device::Cpu,
            Kind::Float,
        )
        .unwrap()
    };
    drop(open());
    let ids = [101i64, 7592, 2088, 102];
    let (mut mapped, mut mapped_first, mut copied) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let enc = open();
        mapped.push(t.elapsed().as_secs_f64() * 1e3);
        enc.forward(&ids, &[1; 4], 1, 4).unwrap();
        mapped_first.push(t.elapsed().as_secs_f64() * 1e3);
        drop(enc);
        let t = Instant::now();
        let params = read_and_copy(&path);
        copied.push(t.elapsed().as_secs_f64() * 1e3);
        drop(params);
    }
    let (m, mf, c) = (
        median(&mut mapped),
        median(&mut mapped_first),
        median(&mut copied),
    );
    println!(
        "{{\"file_mb\": {:.1}, \"reps\": {reps}, \"mapped_ms\": {m:.3}, \"mapped_plus_first_embed_ms\": {mf:.3}, \
         \"read_safetensors_copy_ms\": {c:.3}, \"ratio\": {:.1}, \"ratio_with_first_embed\": {:.1}}}",
        std::fs::metadata(&path).unwrap().len() as f64 / 1e6,
        c / m,
        c / mf
    );
}

fn vm_hwm_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Reads every element so every page of the data is resident (a load that never touches its
/// pages would look free).
fn touch(tensors: impl Iterator<Item = Tensor>) -> f64 {
    let _g = tch::no_grad_guard();
    tensors
        .map(|t| t.f_sum(Kind::Double).unwrap().double_value(&[]))
        .sum()
}

fn rss(args: &[String]) {
    let mode = args
        .get(2)
        .map(String::as_str)
        .expect("baseline|mapped|read");
    // libtorch's own start-up cost, paid in every mode.
    let _warm = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu));
    let t = Instant::now();
    let checksum = match mode {
        "baseline" => 0.0,
        "mapped" => {
            let file = Arc::new(SafeTensorsFile::open(args.get(3).expect("FILE")).unwrap());
            let m = Mapped::new(file).unwrap();
            // SAFETY: the clones are consumed (summed and dropped) by `touch` before `m` drops,
            // and summing only reads.
            touch(
                unsafe { m.tensors() }
                    .iter()
                    .map(|(_, t)| t.shallow_clone()),
            )
        }
        "read" => {
            let read = Tensor::read_safetensors(args.get(3).expect("FILE")).unwrap();
            touch(read.into_iter().map(|(_, t)| t))
        }
        other => panic!("unknown mode {other}"),
    };
    let now = Rss::sample().unwrap_or_default();
    println!(
        "{{\"mode\": \"{mode}\", \"seconds\": {:.3}, \"vm_hwm_mb\": {:.1}, \"rss_now_mb\": {:.1}, \"anon_mb\": {:.1}, \"file_mb\": {:.1}, \"checksum\": {checksum:.3}}}",
        t.elapsed().as_secs_f64(),
        vm_hwm_mb(),
        now.total as f64 / 1e6,
        now.anon as f64 / 1e6,
        now.file as f64 / 1e6
    );
}

fn throughput(args: &[String]) {
    let texts = texts(args, 640);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let rounds = arg(args, "--rounds").map_or(5, |v| v.parse().unwrap());
    let threads = arg(args, "--threads").map_or(1, |v| v.parse().unwrap());
    let t = TorchEmbedder::new(TorchConfig {
        threads: Some(threads),
        ..Default::default()
    });
    let o = OnnxEmbedder::new(OnnxConfig {
        threads,
        ..Default::default()
    });
    let run = |e: &dyn Embedder| {
        let started = Instant::now();
        for chunk in refs.chunks(32) {
            e.embed(chunk).unwrap();
        }
        refs.len() as f64 / started.elapsed().as_secs_f64()
    };
    // Load and warm both before timing.
    run(&t);
    run(&o);
    let (mut tv, mut ov) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        tv.push(run(&t));
        ov.push(run(&o));
    }
    let (tm, om) = (median(&mut tv), median(&mut ov));
    println!(
        "{{\"sentences\": {}, \"batch\": 32, \"threads\": {threads}, \"rounds\": {rounds}, \"torch_per_s\": {tm:.1}, \
         \"onnx_per_s\": {om:.1}, \"onnx_over_torch\": {:.3}, \"torch_rounds\": {tv:?}, \"onnx_rounds\": {ov:?}}}",
        refs.len(),
        om / tm
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("parity") => parity(&args),
        Some("load") => load(&args),
        Some("rss") => rss(&args),
        Some("throughput") => throughput(&args),
        _ => eprintln!("usage: torch_bench parity|load|rss|throughput (see the source's header)"),
    }
}
