//! `blobswarm keygen`: make the seeder's identity ahead of time, so agents can be told
//! which peer id to trust before the seeder first runs; or (`--swarm-key`) a private
//! swarm key for `--swarm-key-file`.

use std::path::PathBuf;

/// Arguments of `blobswarm keygen`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to write the key (refuses to overwrite).
    #[arg(long)]
    out: PathBuf,
    /// Write a random pre-shared swarm key (libp2p pnet) instead of an identity; prints
    /// its fingerprint.
    #[arg(long)]
    swarm_key: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if args.swarm_key {
        println!("{}", super::swarm_key::generate(&args.out)?);
        return Ok(());
    }
    let key = libp2p::identity::Keypair::generate_ed25519();
    super::keys::write_new(&args.out, &key)?;
    println!("{}", key.public().to_peer_id());
    Ok(())
}
