//! Fuzz target `chunk_map`: see `blobswarm_fuzz::chunk_map` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    blobswarm_fuzz::chunk_map(data);
});
