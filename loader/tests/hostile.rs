//! One crafted file per kind of hostile input: each must be a typed error naming the file (and
//! the tensor where there is one), never a panic.

mod common;

use common::{craft, sharded, small_file, write_raw};
use featherguard_loader::{
    Checkpoint, ExpectedBytes, LoadError, MaterializeOptions, SafeTensorsFile, SourceRead,
    MAX_HEADER_LEN,
};

fn open_crafted(json: &str, data: &[u8]) -> (tempfile::TempDir, LoadError) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_raw(dir.path(), "bad.safetensors", &craft(json, data));
    let err = SafeTensorsFile::open(&p).expect_err("crafted file must be rejected");
    (dir, err)
}

/// The message names the file, and the tensor when given.
fn assert_names(err: &LoadError, file: &str, tensor: Option<&str>) {
    let msg = err.to_string();
    assert!(msg.contains(file), "`{msg}` does not name {file}");
    if let Some(t) = tensor {
        assert!(
            msg.contains(&format!("`{t}`")),
            "`{msg}` does not name tensor {t}"
        );
    }
}

#[test]
fn too_short() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_raw(dir.path(), "tiny.safetensors", &[1, 2, 3]);
    let err = SafeTensorsFile::open(&p).unwrap_err();
    assert!(matches!(err, LoadError::TooShort { len: 3, .. }), "{err:?}");
    assert_names(&err, "tiny.safetensors", None);
}

#[test]
fn header_length_past_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let p = write_raw(dir.path(), "short.safetensors", &bytes);
    let err = SafeTensorsFile::open(&p).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::HeaderPastEof {
                header_len: 1000,
                available: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "short.safetensors", None);
}

#[test]
fn header_length_above_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = (MAX_HEADER_LEN + 1).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let p = write_raw(dir.path(), "huge.safetensors", &bytes);
    let err = SafeTensorsFile::open(&p).unwrap_err();
    assert!(matches!(err, LoadError::HeaderTooLarge { .. }), "{err:?}");
    // u64::MAX must not overflow anything either.
    std::fs::write(&p, u64::MAX.to_le_bytes()).unwrap();
    assert!(matches!(
        SafeTensorsFile::open(&p).unwrap_err(),
        LoadError::HeaderTooLarge { .. }
    ));
}

#[test]
fn invalid_json() {
    for json in [
        "{\"a\": ",
        "[1, 2]",
        "\"str\"",
        "{\"a\": 1}",
        "\u{0}",
        "{\"a\":{\"dtype\":\"F32\"}}",
    ] {
        let (_d, err) = open_crafted(json, &[]);
        assert!(
            matches!(err, LoadError::InvalidHeader { .. }),
            "{json}: {err:?}"
        );
        assert_names(&err, "bad.safetensors", None);
    }
}

#[test]
fn invalid_utf8_in_header() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"\xff\"");
    let p = write_raw(dir.path(), "utf.safetensors", &bytes);
    assert!(matches!(
        SafeTensorsFile::open(&p).unwrap_err(),
        LoadError::InvalidHeader { .. }
    ));
}

#[test]
fn unknown_dtype() {
    let (_d, err) = open_crafted(
        r#"{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#,
        &[0],
    );
    assert!(
        matches!(&err, LoadError::UnknownDtype { dtype, .. } if dtype == "F4"),
        "{err:?}"
    );
    assert_names(&err, "bad.safetensors", Some("w"));
}

#[test]
fn offsets_out_of_bounds() {
    let (_d, err) = open_crafted(
        r#"{"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#,
        &[0; 4],
    );
    assert!(
        matches!(
            err,
            LoadError::OffsetsOutOfBounds {
                end: 8,
                data_len: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "bad.safetensors", Some("w"));
    // Offsets near u64::MAX must not wrap.
    let (_d, err) = open_crafted(
        r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,0]}}"#,
        &[0; 4],
    );
    assert!(
        matches!(err, LoadError::OffsetsOutOfBounds { .. }),
        "{err:?}"
    );
}

#[test]
fn inverted_offsets() {
    let (_d, err) = open_crafted(
        r#"{"w":{"dtype":"U8","shape":[0],"data_offsets":[3,1]}}"#,
        &[0; 4],
    );
    assert!(
        matches!(
            err,
            LoadError::OffsetsOutOfBounds {
                begin: 3,
                end: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn overlapping_data() {
    let (_d, err) = open_crafted(
        r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
            "b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
        &[0; 6],
    );
    assert!(
        matches!(&err, LoadError::OverlappingData { tensor, previous, .. } if tensor == "b" && previous == "a"),
        "{err:?}"
    );
    assert_names(&err, "bad.safetensors", Some("b"));
}

#[test]
fn non_contiguous_data() {
    let (_d, err) = open_crafted(
        r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},
            "b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}"#,
        &[0; 6],
    );
    assert!(
        matches!(&err, LoadError::NonContiguousData { tensor, begin: 4, expected: 2, .. } if tensor == "b"),
        "{err:?}"
    );
    // A gap before the first tensor, too.
    let (_d, err) = open_crafted(
        r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#,
        &[0; 4],
    );
    assert!(
        matches!(err, LoadError::NonContiguousData { .. }),
        "{err:?}"
    );
}

#[test]
fn trailing_bytes_after_last_tensor() {
    let (_d, err) = open_crafted(
        r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
        &[0; 5],
    );
    assert!(
        matches!(
            err,
            LoadError::DataLengthMismatch {
                covered: 2,
                data_len: 5,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn shape_size_mismatch() {
    let (_d, err) = open_crafted(
        r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert!(
        matches!(
            err,
            LoadError::ShapeMismatch {
                expected: ExpectedBytes::Bytes(24),
                actual: 8,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "bad.safetensors", Some("w"));
    let (_d, err) = open_crafted(
        r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
        &[],
    );
    assert!(
        matches!(
            err,
            LoadError::ShapeMismatch {
                expected: ExpectedBytes::Overflow,
                ..
            }
        ),
        "{err:?}"
    );
    let (_d, err) = open_crafted(
        r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    assert!(matches!(err, LoadError::InvalidHeader { .. }), "{err:?}");
}

#[test]
fn duplicate_tensor_names() {
    let (_d, err) = open_crafted(
        r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},
            "w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
        &[0; 2],
    );
    assert!(
        matches!(&err, LoadError::DuplicateTensor { tensor, .. } if tensor == "w"),
        "{err:?}"
    );
    assert_names(&err, "bad.safetensors", Some("w"));
}

#[test]
fn bad_metadata() {
    let (_d, err) = open_crafted(r#"{"__metadata__":{"k":"a","k":"b"}}"#, &[]);
    assert!(
        matches!(&err, LoadError::DuplicateMetadataKey { key, .. } if key == "k"),
        "{err:?}"
    );
    let (_d, err) = open_crafted(r#"{"__metadata__":{"k":1}}"#, &[]);
    assert!(matches!(err, LoadError::InvalidHeader { .. }), "{err:?}");
    let (_d, err) = open_crafted(r#"{"__metadata__":{},"__metadata__":{}}"#, &[]);
    assert!(matches!(err, LoadError::InvalidHeader { .. }), "{err:?}");
}

#[test]
fn truncated_while_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    small_file(&p, 0..3);
    let ckpt = Checkpoint::open(&p).unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    // Shrink the file in place (a writer that does not replace-by-rename).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let err = ckpt.tensor("w2").unwrap_err();
    assert!(
        matches!(&err, LoadError::Truncated { tensor: Some(t), .. } if t == "w2"),
        "{err:?}"
    );
    assert_names(&err, "model.safetensors", Some("w2"));
    for read in [SourceRead::Pread, SourceRead::Mmap] {
        let opts = MaterializeOptions {
            read,
            ..Default::default()
        };
        let err = ckpt.materialize_all(&opts).unwrap_err();
        assert!(
            matches!(err, LoadError::Truncated { .. }),
            "{read:?}: {err:?}"
        );
        // Once the file has shrunk, nothing more is handed out, even tensors before the cut.
        assert!(ckpt.materialize_names(&["w0"], &opts).is_err());
    }
    let err = ckpt.files()[0].tensors().err().unwrap();
    assert!(
        matches!(err, LoadError::Truncated { tensor: None, .. }),
        "{err:?}"
    );
}

#[test]
fn truncated_before_open_is_a_header_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    small_file(&p, 0..3);
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let err = SafeTensorsFile::open(&p).unwrap_err();
    assert!(
        matches!(err, LoadError::OffsetsOutOfBounds { .. }),
        "{err:?}"
    );
}

fn edit_index(index: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(index).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(index, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn index_names_missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path(), 3);
    std::fs::remove_file(dir.path().join("model-00002-of-00003.safetensors")).unwrap();
    let err = Checkpoint::open(&index).unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingShard { shard, .. } if shard == "model-00002-of-00003.safetensors"),
        "{err:?}"
    );
    assert_names(&err, "model.safetensors.index.json", None);
}

#[test]
fn index_maps_tensor_to_wrong_shard() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path(), 3);
    edit_index(&index, |v| {
        v["weight_map"]["w0"] = "model-00003-of-00003.safetensors".into();
    });
    let err = Checkpoint::open(&index).unwrap_err();
    assert!(
        matches!(&err, LoadError::WrongShard { tensor, index_shard, found_in: Some(f), .. }
            if tensor == "w0" && index_shard == "model-00003-of-00003.safetensors"
            && f == "model-00001-of-00003.safetensors"),
        "{err:?}"
    );
    assert_names(&err, "model.safetensors.index.json", Some("w0"));
}

#[test]
fn index_lists_tensor_absent_from_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path(), 2);
    edit_index(&index, |v| {
        v["weight_map"]["ghost"] = "model-00001-of-00002.safetensors".into();
    });
    let err = Checkpoint::open(&index).unwrap_err();
    assert!(
        matches!(&err, LoadError::WrongShard { tensor, found_in: None, .. } if tensor == "ghost"),
        "{err:?}"
    );
}

#[test]
fn shard_holds_unindexed_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path(), 2);
    edit_index(&index, |v| {
        v["weight_map"].as_object_mut().unwrap().remove("b3");
    });
    let err = Checkpoint::open(&index).unwrap_err();
    assert!(
        matches!(&err, LoadError::UnindexedTensor { tensor, .. } if tensor == "b3"),
        "{err:?}"
    );
}

#[test]
fn index_shard_path_traversal() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path(), 2);
    for bad in [
        "../model-00001-of-00002.safetensors",
        "/etc/passwd",
        "a/b.safetensors",
        "",
    ] {
        edit_index(&index, |v| v["weight_map"]["w0"] = bad.into());
        let err = Checkpoint::open(&index).unwrap_err();
        assert!(
            matches!(&err, LoadError::UnsafeShardName { tensor, .. } if tensor == "w0"),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn index_invalid_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let index = sharded(dir.path(), 2);
    std::fs::write(&index, b"{\"weight_map\": [1]}").unwrap();
    assert!(matches!(
        Checkpoint::open(&index).unwrap_err(),
        LoadError::InvalidIndex { .. }
    ));
    std::fs::write(&index, b"{\"metadata\": {}}").unwrap();
    assert!(matches!(
        Checkpoint::open(&index).unwrap_err(),
        LoadError::InvalidIndex { .. }
    ));
    std::fs::write(
        &index,
        br#"{"weight_map": {"w0": "model-00001-of-00002.safetensors", "w0": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let err = Checkpoint::open(&index).unwrap_err();
    assert!(
        matches!(&err, LoadError::DuplicateTensor { tensor, .. } if tensor == "w0"),
        "{err:?}"
    );
}

#[test]
fn missing_tensor_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    small_file(&p, 0..1);
    let ckpt = Checkpoint::open(&p).unwrap();
    let err = ckpt.tensor("nope").unwrap_err();
    assert!(matches!(err, LoadError::TensorNotFound { .. }));
    assert_names(&err, "m.safetensors", Some("nope"));
    let err = ckpt
        .materialize_names(&["w0", "nope"], &MaterializeOptions::default())
        .unwrap_err();
    assert!(matches!(err, LoadError::TensorNotFound { .. }));
}
