//! Fuzz target `wire_response`: see `blobswarm_fuzz::wire_response` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    blobswarm_fuzz::wire_response(data);
});
