#![no_main]
//! A well-formed safetensors file with fuzzed parts (kind, model.dim, the metadata JSON, tensor
//! shapes and raw f32/u16 values, NaN and infinities included) opened as a bank and as a head: the
//! metadata and shape checks must turn every inconsistency into a typed error, and whatever opens
//! must score without panicking (see `featherguard_semantic_fuzz::check_parts`).
//! Seeds: `semantic/fuzz/seeds/bank_parts`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    featherguard_semantic_fuzz::check_parts(data);
});
