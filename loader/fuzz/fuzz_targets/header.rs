#![no_main]
//! Arbitrary bytes as a whole safetensors file: the header parser must never panic, and a
//! successful parse must satisfy the layout invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    featherguard_loader::fuzzing::check_header(data);
});
