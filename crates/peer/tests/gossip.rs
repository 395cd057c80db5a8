//! A node inside the swarm publishing invalid gossip: its neighbour judges every
//! message before forwarding it, so nothing invalid travels a second hop, and after a
//! handful of rejections gossipsub's peer score graylists the sender. Two real agents
//! and a raw libp2p gossipsub swarm as the attacker, over TCP on loopback.

mod common;

use common::raw_swarm;
use std::time::{Duration, Instant};

use blobswarm_core::wire::RELEASE_TOPIC;
use blobswarm_peer::{AgentConfig, AgentHandle, AgentStatus};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, gossipsub};

async fn agent(dir: &std::path::Path, bootstrap: Vec<Multiaddr>) -> AgentHandle {
    let mut cfg = AgentConfig::new(Keypair::generate_ed25519(), dir.to_path_buf());
    cfg.trusted = vec![Keypair::generate_ed25519().public().to_peer_id()];
    cfg.bootstrap = bootstrap;
    blobswarm_peer::spawn(cfg).await.unwrap().0
}

fn rejected(s: &AgentStatus) -> u64 {
    s.gossip_rejected.values().sum()
}

/// Publishes `count` undecodable "releases" to the agent at `addr`, 100 ms apart.
async fn attack(addr: Multiaddr, count: usize) {
    let key = Keypair::generate_ed25519();
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    let behaviour = gossipsub::Behaviour::<
        gossipsub::IdentityTransform,
        gossipsub::AllowAllSubscriptionFilter,
    >::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
    .unwrap();
    let mut swarm = raw_swarm(key, behaviour, Duration::from_secs(60));
    let topic = gossipsub::IdentTopic::new(RELEASE_TOPIC);
    swarm.behaviour_mut().subscribe(&topic).unwrap();
    swarm.dial(addr).unwrap();
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent < count {
        assert!(Instant::now() < deadline, "sent only {sent} messages");
        tokio::select! {
            _ = swarm.select_next_some() => {}
            _ = tick.tick() => {
                let garbage = vec![0xff_u8, sent as u8, 0xfe, 0xfd];
                // InsufficientPeers until the agent's subscription arrived.
                if swarm.behaviour_mut().publish(topic.clone(), garbage).is_ok() {
                    sent += 1;
                }
            }
        }
    }
    // Keep the connection up while the agents settle.
    let until = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = swarm.select_next_some() => {}
            () = &mut until => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_gossip_is_not_forwarded_and_its_sender_is_graylisted() {
    let tmp = tempfile::tempdir().unwrap();
    let far = agent(&tmp.path().join("far"), vec![]).await;
    let far_addr = far.listen_addrs().await.unwrap()[0].clone();
    let near = agent(&tmp.path().join("near"), vec![far_addr]).await;
    let near_addr = near.listen_addrs().await.unwrap()[0].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while near.status().borrow().peers == 0 {
        assert!(Instant::now() < deadline, "agents did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the two agents graft each other into their release mesh.
    tokio::time::sleep(Duration::from_secs(2)).await;

    attack(near_addr, 12).await;

    let s = near.status().borrow().clone();
    let n = rejected(&s);
    assert_eq!(
        s.gossip_rejected.get(&("release", "undecodable")).copied(),
        Some(n),
        "{s:?}"
    );
    // The 5th invalid message takes the sender below the graylist threshold; what it
    // sends after that is dropped unread (a decay tick may let one more through).
    assert!((5..=6).contains(&n), "near agent judged {n} of 12 messages");
    assert_eq!(
        rejected(&far.status().borrow()),
        0,
        "nothing invalid was forwarded to the second hop"
    );
}
