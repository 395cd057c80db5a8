//! Fuzz target `signed_release`: see `blobswarm_fuzz::signed_release` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    blobswarm_fuzz::signed_release(data);
});
