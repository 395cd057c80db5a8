//! Fuzz target `progress_report`: see `blobswarm_fuzz::progress_report` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    blobswarm_fuzz::progress_report(data);
});
