//! Fuzz target `swarm_notice`: see `blobswarm_fuzz::swarm_notice` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    blobswarm_fuzz::swarm_notice(data);
});
