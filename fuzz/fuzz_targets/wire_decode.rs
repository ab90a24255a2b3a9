//! libFuzzer target for the wire decoder and the HMAC check in front of it:
//! `cargo +nightly fuzz run wire_decode -- -max_total_time=60` (see `wire_check.rs` for the input layout).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../wire_check.rs"]
mod wire_check;

fuzz_target!(|data: &[u8]| wire_check::check(data));
