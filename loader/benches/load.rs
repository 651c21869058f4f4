//! Criterion benchmarks on a ~2 GB synthetic checkpoint (generated once under
//! `target/loader-bench`, or `$FEATHERGUARD_BENCH_DIR`): header to first view, and
//! materializing everything (copy and BF16->F32 convert; single file and 4 shards).
//! `scripts/loader/compare.py` puts these against Python, memcpy and `cat` in one run.

mod synth;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use featherguard_loader::{Checkpoint, Dtype, MaterializeOptions};

fn benches(c: &mut Criterion) {
    let (single, index) =
        synth::ensure(&synth::bench_dir()).expect("generate the synthetic checkpoint");

    let mut g = c.benchmark_group("first_view");
    for (label, path) in [("single", &single), ("sharded", &index)] {
        g.bench_function(label, |b| {
            b.iter(|| {
                let ckpt = Checkpoint::open(path).unwrap();
                let name = ckpt.files()[0].header().tensors()[0].name.clone();
                let view = ckpt.tensor(&name).unwrap();
                std::hint::black_box(view.data().as_ptr());
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("materialize_all");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    let copy = MaterializeOptions::default();
    let convert = MaterializeOptions {
        convert: Some(Dtype::F32),
        ..Default::default()
    };
    for (label, path, opts) in [
        ("single_copy", &single, &copy),
        ("single_convert_f32", &single, &convert),
        ("sharded_copy", &index, &copy),
    ] {
        let ckpt = Checkpoint::open(path).unwrap();
        g.throughput(criterion::Throughput::Bytes(ckpt.data_bytes()));
        g.bench_function(label, |b| b.iter(|| ckpt.materialize_all(opts).unwrap()));
    }
    g.finish();
}

criterion_group!(load, benches);
criterion_main!(load);
