//! Fuzz target `node_haves`: see `blobswarm_fuzz::node_haves` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    blobswarm_fuzz::node_haves(data);
});
