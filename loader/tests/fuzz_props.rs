//! The cargo-fuzz harnesses run over random and mutated inputs in the normal test suite, so
//! the parsers are exercised even where no nightly toolchain is installed.

mod common;

use featherguard_loader::fuzzing::{check_header, check_index};
use featherguard_loader::{Dtype, TensorData};
use proptest::prelude::*;

fn seed_file() -> Vec<u8> {
    let a = [1.0f32, 2.0, 3.0, 4.0];
    let b = [7u16, 8, 9];
    let meta = std::collections::BTreeMap::from([("k".to_string(), "v".to_string())]);
    featherguard_loader::serialize(
        &[
            TensorData::from_slice("layer.0.weight", Dtype::F32, &[2, 2], &a),
            TensorData::from_slice("layer.0.bias", Dtype::BF16, &[3], &b),
            TensorData::from_slice::<u8>("empty", Dtype::U8, &[0], &[]),
        ],
        &meta,
        std::path::Path::new("seed"),
    )
    .unwrap()
}

const SEED_INDEX: &str = r#"{"metadata":{"total_size":10},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#;

#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// Replace a run of ASCII digits in the header (offsets, shapes, lengths) with a number.
    Number(usize, u64),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
        (
            any::<usize>(),
            prop_oneof![0u64..64, Just(u64::MAX), any::<u64>()]
        )
            .prop_map(|(i, n)| Edit::Number(i, n)),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = data.len().max(1);
        match *e {
            Edit::Set(i, b) if !data.is_empty() => data[i % len] = b,
            Edit::Insert(i, b) => data.insert(i % (data.len() + 1), b),
            Edit::Remove(i) if !data.is_empty() => {
                data.remove(i % len);
            }
            Edit::Truncate(i) => data.truncate(i % len),
            Edit::Number(i, n) => {
                let digits: Vec<usize> = (0..data.len())
                    .filter(|&j| data[j].is_ascii_digit())
                    .collect();
                if let Some(&start) = digits.get(i % digits.len().max(1)) {
                    let end = (start..data.len())
                        .find(|&j| !data[j].is_ascii_digit())
                        .unwrap_or(data.len());
                    data.splice(start..end, n.to_string().into_bytes());
                }
            }
            _ => {}
        }
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn header_parser_survives_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_header(&data);
    }

    #[test]
    fn header_parser_survives_random_json_after_a_valid_prefix(json in "\\PC{0,200}") {
        let mut data = (json.len() as u64).to_le_bytes().to_vec();
        data.extend_from_slice(json.as_bytes());
        check_header(&data);
    }

    #[test]
    fn header_parser_survives_mutated_files(edits in proptest::collection::vec(edit(), 1..6)) {
        let data = apply(seed_file(), &edits);
        check_header(&data);
    }

    #[test]
    fn index_parser_survives_mutations(edits in proptest::collection::vec(edit(), 0..6)) {
        check_index(&apply(SEED_INDEX.as_bytes().to_vec(), &edits));
    }

    #[test]
    fn index_parser_survives_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_index(&data);
    }
}

#[test]
fn seeds_parse() {
    let seed = seed_file();
    assert!(featherguard_loader::Header::parse(std::path::Path::new("s"), &seed).is_ok());
    check_header(&seed);
    check_index(SEED_INDEX.as_bytes());
}
