//! `blobswarm-rogue`: a misbehaving agent for the end-to-end tests, built on the real
//! agent with `blobswarm_testkit`'s hostile hooks (see `blobswarm_testkit::rogue`). Only
//! built with the `rogue` feature; the `blobswarm` binary carries no hostile code.

fn main() -> std::process::ExitCode {
    blobswarm_testkit::rogue::main()
}
