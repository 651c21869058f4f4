#![no_main]
//! Arbitrary bytes as a whole bank / head file: `Bank::open` and `Head::open` return a typed error or
//! a bank/head that scores without panicking (see `featherguard_semantic_fuzz::check_file`).
//! Seeds: `semantic/fuzz/seeds/bank_file` (a tiny bank and head written by the crate's own writer).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    featherguard_semantic_fuzz::check_file(data);
});
