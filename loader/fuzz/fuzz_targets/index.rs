#![no_main]
//! Arbitrary bytes as a `*.safetensors.index.json`: never a panic, never an unsafe shard name.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    featherguard_loader::fuzzing::check_index(data);
});
