//! Opening, viewing, materializing, writing and verifying well-formed checkpoints.

mod common;

use std::collections::BTreeMap;

use common::{bf16_bits, sharded, small_file, values};
use featherguard_loader::{
    serialize, sha256_file, Checkpoint, CheckpointSource, Dtype, HfCache, LoadError, LoadMethod,
    Manifest, MaterializeOptions, OpenOptions, PageFill, Prefault, SafeTensorsFile, SourceRead,
    TensorData, TENSOR_ALIGN,
};

#[test]
fn views_are_zero_copy_and_typed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    small_file(&p, 0..2);
    let ckpt = Checkpoint::open(&p).unwrap();
    assert_eq!(ckpt.len(), 4);
    let w = ckpt.tensor("w1").unwrap();
    assert_eq!(w.dtype(), Dtype::F32);
    assert_eq!(w.shape(), &[3, 5]);
    assert_eq!(w.as_slice::<f32>().unwrap(), values(1, 15).as_slice());
    let b = ckpt.tensor("b0").unwrap();
    assert_eq!(
        b.as_slice::<u16>().unwrap(),
        bf16_bits(&values(100, 4)).as_slice()
    );
    assert!(matches!(
        w.as_slice::<u16>().unwrap_err(),
        LoadError::DtypeMismatch { .. }
    ));
    // The view points into the mapping, not a copy.
    let file = &ckpt.files()[0];
    let base = ckpt.files()[0]
        .tensors()
        .unwrap()
        .next()
        .unwrap()
        .data()
        .as_ptr() as usize;
    assert!(w.data().as_ptr() as usize >= base - file.header().data_start());
    assert_eq!(
        file.header().metadata().get("format").map(String::as_str),
        Some("pt")
    );
    assert_eq!(ckpt.open_report().method, LoadMethod::Mapped);
}

#[test]
fn reads_files_written_by_the_reference_implementation() {
    use safetensors::tensor::{serialize as ref_serialize, TensorView as RefView};
    let a: Vec<u8> = values(3, 6).iter().flat_map(|x| x.to_le_bytes()).collect();
    let b: Vec<u8> = (0..10u8).collect();
    let tensors = vec![
        (
            "a".to_string(),
            RefView::new(safetensors::Dtype::F32, vec![2, 3], &a).unwrap(),
        ),
        (
            "b".to_string(),
            RefView::new(safetensors::Dtype::U8, vec![10], &b).unwrap(),
        ),
        (
            "s".to_string(),
            RefView::new(safetensors::Dtype::U8, vec![0], &[]).unwrap(),
        ),
    ];
    let meta = std::collections::HashMap::from([("k".to_string(), "v".to_string())]);
    let bytes = ref_serialize(tensors, &Some(meta)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ref.safetensors");
    std::fs::write(&p, &bytes).unwrap();
    let f = SafeTensorsFile::open(&p).unwrap();
    assert_eq!(
        f.tensor("a").unwrap().as_slice::<f32>().unwrap(),
        values(3, 6).as_slice()
    );
    assert_eq!(f.tensor("b").unwrap().data(), b.as_slice());
    assert_eq!(f.tensor("s").unwrap().num_elements(), 0);
    assert_eq!(f.header().metadata()["k"], "v");
}

#[test]
fn our_files_read_back_with_the_reference_implementation() {
    let x = values(9, 12);
    let y: Vec<i64> = vec![1, -2, 3];
    let h = bf16_bits(&values(5, 5));
    let meta = BTreeMap::from([("kind".to_string(), "exemplar-bank".to_string())]);
    let bytes = serialize(
        &[
            TensorData::from_slice("h", Dtype::BF16, &[5], &h),
            TensorData::from_slice("x", Dtype::F32, &[3, 4], &x),
            TensorData::from_slice("y", Dtype::I64, &[3], &y),
            TensorData::from_slice::<f32>("scalar", Dtype::F32, &[], &[7.5]),
        ],
        &meta,
        std::path::Path::new("mem"),
    )
    .unwrap();
    let (n, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(n % 8, 0, "header padded to 8 bytes");
    assert_eq!(md.metadata().as_ref().unwrap()["kind"], "exemplar-bank");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("y").unwrap().shape(), &[3]);
    assert_eq!(st.tensor("scalar").unwrap().data(), 7.5f32.to_le_bytes());
    // Wider elements first, so each is aligned to its size in the file.
    let header = featherguard_loader::Header::parse(std::path::Path::new("mem"), &bytes).unwrap();
    for t in header.tensors() {
        assert_eq!(
            (header.data_start() + t.data_offsets.0) % t.dtype.size(),
            0,
            "{}",
            t.name
        );
    }
}

#[test]
fn writer_rejects_bad_tensors() {
    let x = [1.0f32, 2.0];
    let p = std::path::Path::new("out.safetensors");
    let bad_shape = serialize(
        &[TensorData::from_slice("x", Dtype::F32, &[3], &x)],
        &BTreeMap::new(),
        p,
    );
    assert!(matches!(
        bad_shape.unwrap_err(),
        LoadError::InvalidTensor { .. }
    ));
    let dup = serialize(
        &[
            TensorData::from_slice("x", Dtype::F32, &[2], &x),
            TensorData::from_slice("x", Dtype::F32, &[2], &x),
        ],
        &BTreeMap::new(),
        p,
    );
    assert!(matches!(dup.unwrap_err(), LoadError::InvalidTensor { .. }));
}

#[test]
fn materialize_all_copies_exactly_and_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    small_file(&p, 0..5);
    let ckpt = Checkpoint::open(&p).unwrap();
    for (threads, read, prefault) in [
        (1, SourceRead::Pread, Prefault::PerWindow),
        (3, SourceRead::Pread, Prefault::PerWindow),
        (2, SourceRead::Mmap, Prefault::PerWindow),
        (3, SourceRead::Pread, Prefault::UpFront),
        (2, SourceRead::Pread, Prefault::Lazy),
    ] {
        let opts = MaterializeOptions {
            threads,
            read,
            prefault,
            chunk_bytes: 8, // many windows per tensor
            ..Default::default()
        };
        let m = ckpt.materialize_all(&opts).unwrap();
        assert_eq!(m.len(), 10);
        assert_eq!(m.report().method, LoadMethod::Copied);
        assert_eq!(m.report().bytes, ckpt.data_bytes());
        for view in ckpt.tensors().unwrap() {
            let owned = m.get(view.name()).unwrap();
            assert_eq!(owned.data(), view.data(), "{}", view.name());
            assert_eq!(owned.data().as_ptr() as usize % TENSOR_ALIGN, 0);
            assert_eq!(owned.shape(), view.shape());
        }
    }
}

#[test]
fn materialize_converts_bf16_to_f32_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    small_file(&p, 0..2);
    let ckpt = Checkpoint::open(&p).unwrap();
    let opts = MaterializeOptions {
        convert: Some(Dtype::F32),
        ..Default::default()
    };
    let m = ckpt.materialize_all(&opts).unwrap();
    assert_eq!(m.report().method, LoadMethod::Converted);
    let b0 = m.get("b0").unwrap();
    assert_eq!(b0.dtype(), Dtype::F32);
    let want: Vec<f32> = values(100, 4)
        .iter()
        .map(|x| half::bf16::from_f32(*x).to_f32())
        .collect();
    assert_eq!(b0.as_slice::<f32>().unwrap(), want.as_slice());
    assert_eq!(
        m.get("w0").unwrap().as_slice::<f32>().unwrap(),
        values(0, 15).as_slice()
    );

    let to_bf16 = ckpt
        .materialize_all(&MaterializeOptions {
            convert: Some(Dtype::BF16),
            ..Default::default()
        })
        .unwrap();
    let w = to_bf16.get("w1").unwrap();
    assert_eq!(w.dtype(), Dtype::BF16);
    assert_eq!(w.as_slice::<half::bf16>().unwrap().len(), 15);
    assert_eq!(
        w.as_slice::<u16>().unwrap(),
        bf16_bits(&values(1, 15)).as_slice()
    );

    let to_f16 = ckpt
        .materialize_names(
            &["b1"],
            &MaterializeOptions {
                convert: Some(Dtype::F16),
                ..Default::default()
            },
        )
        .unwrap();
    let got: Vec<f32> = to_f16
        .get("b1")
        .unwrap()
        .as_slice::<half::f16>()
        .unwrap()
        .iter()
        .map(|x| x.to_f32())
        .collect();
    let want: Vec<f32> = values(101, 4)
        .iter()
        .map(|x| half::f16::from_f32(half::bf16::from_f32(*x).to_f32()).to_f32())
        .collect();
    assert_eq!(got, want);

    let via_map = ckpt
        .materialize_all(&MaterializeOptions {
            convert: Some(Dtype::F32),
            read: SourceRead::Mmap,
            chunk_bytes: 6,
            ..Default::default()
        })
        .unwrap();
    for t in m.iter() {
        assert_eq!(
            via_map.get(t.name()).unwrap().data(),
            t.data(),
            "{}",
            t.name()
        );
    }

    let bad = ckpt.materialize_all(&MaterializeOptions {
        convert: Some(Dtype::I32),
        ..Default::default()
    });
    assert!(matches!(
        bad.unwrap_err(),
        LoadError::InvalidConversionTarget { .. }
    ));
}

#[test]
fn materialize_selections_and_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    small_file(&p, 0..12);
    let ckpt = Checkpoint::open(&p).unwrap();
    let opts = MaterializeOptions::default();
    let by_prefix = ckpt.materialize_prefix("w1", &opts).unwrap();
    let mut names: Vec<_> = by_prefix.iter().map(|t| t.name().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["w1", "w10", "w11"]);
    let by_pred = ckpt
        .materialize(|t| t.dtype() == Dtype::BF16, &opts)
        .unwrap();
    assert_eq!(by_pred.len(), 12);
    let mut by_name = ckpt.materialize_names(&["w3"], &opts).unwrap();
    assert_eq!(by_name.len(), 1);
    assert!(by_name.get("w4").is_none());
    by_name
        .get_mut("w3")
        .unwrap()
        .as_mut_slice::<f32>()
        .unwrap()[0] = 42.0;
    assert_eq!(
        by_name.get("w3").unwrap().as_slice::<f32>().unwrap()[0],
        42.0
    );
    // The file is untouched.
    assert_eq!(
        ckpt.tensor("w3").unwrap().as_slice::<f32>().unwrap()[0],
        values(3, 1)[0]
    );
    let none = ckpt.materialize(|_| false, &opts).unwrap();
    assert!(none.is_empty());
}

#[test]
fn sharded_checkpoint_by_index_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path(), 4);
    let opts = OpenOptions {
        threads: 3,
        ..Default::default()
    };
    let by_index = Checkpoint::open_with(&index, &opts).unwrap();
    assert_eq!(by_index.files().len(), 4);
    assert_eq!(by_index.len(), 16);
    assert_eq!(by_index.index_metadata()["total_size"], "1234");
    let by_dir = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(by_dir.source(), &CheckpointSource::Sharded(index.clone()));
    let t = by_dir.tensor("w7").unwrap();
    assert!(t.file().ends_with("model-00004-of-00004.safetensors"));
    assert_eq!(t.as_slice::<f32>().unwrap(), values(7, 15).as_slice());
    let m = by_dir
        .materialize_all(&MaterializeOptions {
            threads: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(m.len(), 16);
    assert_eq!(m.report().files.len(), 4);
    assert_eq!(
        m.get("b6").unwrap().data(),
        by_index.tensor("b6").unwrap().data()
    );
}

#[test]
fn directory_resolution() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Checkpoint::open(dir.path()).unwrap_err(),
        LoadError::NoCheckpoint { .. }
    ));
    small_file(&dir.path().join("a.safetensors"), 0..1);
    assert_eq!(
        CheckpointSource::resolve(dir.path()).unwrap(),
        CheckpointSource::Single(dir.path().join("a.safetensors"))
    );
    small_file(&dir.path().join("b.safetensors"), 0..1);
    assert!(matches!(
        Checkpoint::open(dir.path()).unwrap_err(),
        LoadError::AmbiguousCheckpoint { .. }
    ));
    small_file(&dir.path().join("model.safetensors"), 0..1);
    assert_eq!(
        CheckpointSource::resolve(dir.path()).unwrap(),
        CheckpointSource::Single(dir.path().join("model.safetensors"))
    );
}

#[test]
fn hf_cache_layout_offline() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--acme--tiny-model");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), format!("{commit}\n")).unwrap();
    // The hub stores content in blobs/ and symlinks it from the snapshot.
    let blob = repo.join("blobs/deadbeef");
    small_file(&blob, 0..2);
    std::os::unix::fs::symlink("../../blobs/deadbeef", snap.join("model.safetensors")).unwrap();

    let hf = HfCache::new(cache.path());
    let ckpt =
        Checkpoint::open_cached(&hf, "acme/tiny-model", "main", &OpenOptions::default()).unwrap();
    assert_eq!(ckpt.len(), 4);
    let by_commit =
        Checkpoint::open_cached(&hf, "acme/tiny-model", commit, &OpenOptions::default());
    assert!(by_commit.is_ok());
    assert!(matches!(
        hf.snapshot_dir("acme/other", "main").unwrap_err(),
        LoadError::ModelNotCached { .. }
    ));
    assert!(matches!(
        hf.snapshot_dir("acme/tiny-model", "v2").unwrap_err(),
        LoadError::RevisionNotCached { .. }
    ));
    for bad in ["../x", "a/b/c", "", "acme/.."] {
        assert!(
            matches!(
                hf.snapshot_dir(bad, "main").unwrap_err(),
                LoadError::InvalidModelId { .. }
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        hf.snapshot_dir("acme/tiny-model", "../../etc").unwrap_err(),
        LoadError::InvalidModelId { .. }
    ));

    // A manifest next to the snapshot verifies through the symlink.
    let digest = sha256_file(&blob).unwrap();
    std::fs::write(
        snap.join("SHA256SUMS"),
        format!("{digest}  model.safetensors\n"),
    )
    .unwrap();
    let manifest = Manifest::load(snap.join("SHA256SUMS")).unwrap();
    let opts = OpenOptions {
        manifest: Some(manifest),
        ..Default::default()
    };
    Checkpoint::open_cached(&hf, "acme/tiny-model", "main", &opts).unwrap();
}

#[test]
fn manifest_verification() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path(), 2);
    let files = [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let text: String = files
        .iter()
        .map(|f| format!("{}  {f}\n", sha256_file(&dir.path().join(f)).unwrap()))
        .collect();
    std::fs::write(dir.path().join("SHA256SUMS"), &text).unwrap();
    let manifest = Manifest::load(dir.path().join("SHA256SUMS")).unwrap();
    manifest.verify_all(2).unwrap();
    let opts = OpenOptions {
        manifest: Some(manifest.clone()),
        ..Default::default()
    };
    Checkpoint::open_with(&index, &opts).unwrap();

    // Corrupt one shard (same length): the open fails naming it.
    let shard = dir.path().join(files[2]);
    let mut bytes = std::fs::read(&shard).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let err = Checkpoint::open_with(&index, &opts).unwrap_err();
    assert!(
        matches!(&err, LoadError::HashMismatch { path, .. } if path.ends_with(files[2])),
        "{err:?}"
    );

    // A checkpoint file missing from the manifest is an error, not a silent pass.
    let partial = Manifest::parse(
        std::path::Path::new("m"),
        text.lines().next().unwrap(),
        dir.path().to_owned(),
    )
    .unwrap();
    let opts = OpenOptions {
        manifest: Some(partial),
        ..Default::default()
    };
    assert!(matches!(
        Checkpoint::open_with(&index, &opts).unwrap_err(),
        LoadError::NotInManifest { .. }
    ));

    for bad in ["zz  a", "abc", &format!("{}  ../x", "0".repeat(64))] {
        assert!(matches!(
            Manifest::parse(std::path::Path::new("m"), bad, dir.path().to_owned()).unwrap_err(),
            LoadError::InvalidManifest { line: 1, .. }
        ));
    }
}

#[test]
fn page_cache_probe_and_prefetch() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    small_file(&p, 0..3);
    let opts = OpenOptions {
        probe_page_cache: true,
        prefetch: true,
        ..Default::default()
    };
    let ckpt = Checkpoint::open_with(&p, &opts).unwrap();
    let r = ckpt.open_report().page_cache_resident.unwrap();
    assert!((0.0..=1.0).contains(&r));
    ckpt.evict_page_cache().unwrap();
    let m = ckpt
        .materialize_all(&MaterializeOptions {
            probe_page_cache: true,
            ..Default::default()
        })
        .unwrap();
    assert!(m.report().page_cache_resident.is_some());
    let json = serde_json::to_value(m.report()).unwrap();
    assert_eq!(json["method"], "copied");
}

#[test]
fn large_conversion_spans_several_staging_blocks() {
    // 300k BF16 elements = 600 KB: several 128 KiB staging blocks per 4 MiB chunk, and with a
    // 100 KB chunk size several chunks too.
    let vals = values(42, 300_000);
    let bits = bf16_bits(&vals);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.safetensors");
    featherguard_loader::write_safetensors(
        &p,
        &[TensorData::from_slice(
            "big",
            Dtype::BF16,
            &[300, 1000],
            &bits,
        )],
        &BTreeMap::new(),
    )
    .unwrap();
    let ckpt = Checkpoint::open(&p).unwrap();
    let want: Vec<f32> = bits
        .iter()
        .map(|b| half::bf16::from_bits(*b).to_f32())
        .collect();
    for chunk_bytes in [4 << 20, 100_000] {
        for read in [SourceRead::Pread, SourceRead::Mmap] {
            let m = ckpt
                .materialize_all(&MaterializeOptions {
                    convert: Some(Dtype::F32),
                    chunk_bytes,
                    read,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(
                m.get("big").unwrap().as_slice::<f32>().unwrap(),
                want.as_slice()
            );
        }
    }
}

/// Whether this process may create a userfaultfd (what `PageFill::CopyIntoFresh` needs).
fn userfaultfd_available() -> bool {
    // SAFETY: plain syscall; a returned descriptor is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | 1) };
    if fd >= 0 {
        // SAFETY: closing the descriptor just created.
        unsafe { libc::close(fd as libc::c_int) };
    }
    fd >= 0
}

#[test]
fn copy_into_fresh_pages_matches_zero_then_copy() {
    // Odd-sized tensors of several dtypes, so windows and 256 KiB blocks start and end inside
    // tensors and padding, and one tensor spans several blocks.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let big: Vec<f32> = values(7, 200_003);
    let odd: Vec<u16> = bf16_bits(&values(8, 1_001));
    let bytes: Vec<u8> = (0..777u32).map(|i| (i * 13 % 251) as u8).collect();
    let longs: Vec<i64> = (0..33).map(|i| i * -1_000_003).collect();
    let tensors = vec![
        TensorData::from_slice("big", Dtype::F32, &[200_003], &big),
        TensorData::from_slice("odd", Dtype::BF16, &[7, 143], &odd),
        TensorData::from_slice("bytes", Dtype::U8, &[777], &bytes),
        TensorData::from_slice("longs", Dtype::I64, &[33], &longs),
        TensorData::from_slice("empty", Dtype::F32, &[0, 4], &[] as &[f32]),
    ];
    featherguard_loader::write_safetensors(&p, &tensors, &BTreeMap::new()).unwrap();
    let ckpt = Checkpoint::open(&p).unwrap();
    let fresh_expected = userfaultfd_available();
    for convert in [None, Some(Dtype::F32)] {
        let reference = ckpt
            .materialize_all(&MaterializeOptions {
                convert,
                page_fill: PageFill::ZeroThenCopy,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(reference.report().page_fill, Some(PageFill::ZeroThenCopy));
        for (threads, chunk_bytes, read) in [
            (1, 4 << 20, SourceRead::Pread),
            (3, 4096, SourceRead::Pread),
            (2, 1 << 20, SourceRead::Mmap),
            (2, 12_288, SourceRead::Pread),
        ] {
            let m = ckpt
                .materialize_all(&MaterializeOptions {
                    convert,
                    threads,
                    chunk_bytes,
                    read,
                    page_fill: PageFill::CopyIntoFresh,
                    ..Default::default()
                })
                .unwrap();
            let want = if fresh_expected {
                PageFill::CopyIntoFresh
            } else {
                PageFill::ZeroThenCopy
            };
            assert_eq!(m.report().page_fill, Some(want), "{threads} {chunk_bytes}");
            assert!(!m.report().huge_pages || want == PageFill::ZeroThenCopy);
            for t in reference.iter() {
                let got = m.get(t.name()).unwrap();
                assert_eq!(got.data(), t.data(), "{} {threads} {chunk_bytes}", t.name());
                assert_eq!(got.data().as_ptr() as usize % TENSOR_ALIGN, 0);
            }
        }
    }
    // A window that is not a whole number of pages cannot be filled page by page.
    let m = ckpt
        .materialize_all(&MaterializeOptions {
            chunk_bytes: 1000,
            page_fill: PageFill::CopyIntoFresh,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(m.report().page_fill, Some(PageFill::ZeroThenCopy));
    assert_eq!(
        m.get("big").unwrap().as_slice::<f32>().unwrap(),
        big.as_slice()
    );
}

#[test]
fn auto_fill_switches_to_fresh_pages_after_slow_windows() {
    // 5 windows of 2 MiB: with an unreachable rate every window is slow, so the switch comes
    // after the second and the rest is created filled; with rate 0 it never comes.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let big: Vec<f32> = values(3, (9 << 20) / 4 + 5);
    let big_shape = [big.len()];
    let small: Vec<u16> = bf16_bits(&values(4, 999));
    let tensors = vec![
        TensorData::from_slice("big", Dtype::F32, &big_shape, &big),
        TensorData::from_slice("small", Dtype::BF16, &[999], &small),
    ];
    featherguard_loader::write_safetensors(&p, &tensors, &BTreeMap::new()).unwrap();
    let ckpt = Checkpoint::open(&p).unwrap();
    for (rate, threads) in [(f64::INFINITY, 1), (f64::INFINITY, 2), (0.0, 2)] {
        let m = ckpt
            .materialize_all(&MaterializeOptions {
                threads,
                chunk_bytes: 2 << 20,
                auto_switch_gb_per_s: rate,
                ..Default::default()
            })
            .unwrap();
        let report = m.report();
        if rate > 0.0 && userfaultfd_available() {
            assert_eq!(report.page_fill, Some(PageFill::CopyIntoFresh));
            // At least the first two windows were zeroed then copied (fresh_fill_bytes counts
            // the padding between tensors too, < 64 bytes here).
            assert!(report.fresh_fill_bytes > 0);
            assert!(
                report.fresh_fill_bytes <= report.output_bytes + 64 - (4 << 20),
                "{} of {} ({threads} threads)",
                report.fresh_fill_bytes,
                report.output_bytes
            );
        } else {
            assert_eq!(report.page_fill, Some(PageFill::ZeroThenCopy));
            assert_eq!(report.fresh_fill_bytes, 0);
        }
        assert_eq!(
            m.get("big").unwrap().as_slice::<f32>().unwrap(),
            big.as_slice()
        );
        assert_eq!(
            m.get("small").unwrap().as_slice::<u16>().unwrap(),
            small.as_slice()
        );
    }
}
