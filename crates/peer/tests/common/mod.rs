//! What the peer crate's integration tests share: a raw libp2p swarm to play a
//! misbehaving node, and a wait on an agent's status.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::{Duration, Instant};

use blobswarm_core::store::FsStore;
use blobswarm_core::{Digest, Document, Release, SignedRelease, chunk_map_of, release_blob};
use blobswarm_peer::{AgentHandle, AgentStatus, LocalBlob};
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, noise, tcp, yamux};

/// A bare TCP + Noise + Yamux swarm with identity `key` around `behaviour`, outside any
/// agent: the attacker in the network-edge tests. Connections idle for `idle` close.
pub fn raw_swarm<B: NetworkBehaviour>(key: Keypair, behaviour: B, idle: Duration) -> Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp transport")
        .with_behaviour(|_| behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build()
}

/// Polls `agent`'s status until `f` holds; fails naming `what` after `timeout`.
pub async fn wait_for(
    agent: &AgentHandle,
    what: &str,
    timeout: Duration,
    f: impl Fn(&AgentStatus) -> bool,
) -> AgentStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = agent.status().borrow().clone();
        if f(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stores `blobs` (chunked at `chunk` bytes) complete in the store at `store_dir` and
/// signs a release of them as `reference` with `key`: a seeder's state before it
/// publishes.
pub fn prepare(
    store_dir: &Path,
    key: &Keypair,
    blobs: &[Vec<u8>],
    chunk: u32,
    reference: &str,
) -> (Vec<LocalBlob>, SignedRelease) {
    let store = FsStore::open(store_dir).unwrap();
    let mut local = Vec::new();
    for b in blobs {
        let map = chunk_map_of(b, chunk).unwrap();
        let mut w = store.blob_writer(&map.blob()).unwrap();
        w.write(b).unwrap();
        w.finish().unwrap();
        store.finalize(&map.blob(), map.size()).unwrap();
        local.push(LocalBlob {
            map,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        });
    }
    let manifest = br#"{"schemaVersion":2}"#.to_vec();
    let release = Release {
        reference: reference.into(),
        root: Document {
            digest: Digest::of(&manifest),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: manifest,
        },
        manifests: vec![],
        blobs: local
            .iter()
            .map(|b| release_blob(&b.map, &b.media_type))
            .collect(),
        seeder: key.public().to_peer_id().to_bytes(),
        sequence: 1,
        created_unix_ms: 0,
        expires_unix_ms: 0,
    };
    (local, SignedRelease::sign(&release, key).unwrap())
}
