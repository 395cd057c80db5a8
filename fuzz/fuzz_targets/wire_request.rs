//! Fuzz target `wire_request`: see `blobswarm_fuzz::wire_request` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    blobswarm_fuzz::wire_request(data);
});
