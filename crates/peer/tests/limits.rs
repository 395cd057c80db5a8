//! Connection limits on a real agent over loopback TCP: one identity cannot open more
//! than its share of connections, and every refusal is counted.

mod common;

use common::raw_swarm;
use std::time::{Duration, Instant};

use blobswarm_peer::AgentConfig;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{SwarmEvent, dummy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_gets_two_connections_and_the_rest_are_denied_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = AgentConfig::new(Keypair::generate_ed25519(), tmp.path().join("store"));
    let (agent, _task) = blobswarm_peer::spawn(cfg).await.unwrap();
    let addr = agent.listen_addrs().await.unwrap()[0].clone();

    let mut swarm = raw_swarm(
        Keypair::generate_ed25519(),
        dummy::Behaviour,
        Duration::from_secs(60),
    );
    // Dials without a peer id, so this side applies no per-peer condition of its own.
    for _ in 0..5 {
        let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
        swarm.dial(opts).unwrap();
    }
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {}
        }
    });

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let denied = agent
            .status()
            .borrow()
            .connections_denied
            .get("limit")
            .copied()
            .unwrap_or(0);
        if denied >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected 3 of 5 connections denied, saw {denied}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = blobswarm_peer::Metrics::new();
    metrics.observe(&agent.status().borrow());
    let text = metrics.encode();
    assert!(
        text.contains("blobswarm_connections_denied_total{reason=\"limit\"} 3"),
        "{text}"
    );
}
