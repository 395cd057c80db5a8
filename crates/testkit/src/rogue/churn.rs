//! Identity churn (issue #18, findings 2, 5, 9 and 10): the rogue mints fresh identities,
//! one after another from the same listen address, each a real agent that joins, gossips
//! a progress report under a made-up node name holding terminal escapes (no certificate,
//! or one from an untrusted issuer) and leaves. One lane also
//! floods requests, so its first identity is banned and the next ones come back from a
//! banned address.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use blobswarm_core::codec;
use blobswarm_core::enroll::NodeCert;
use blobswarm_core::wire::Request;
use blobswarm_peer::{AgentConfig, Hooks, Topic};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

use super::attacks::{HOSTILE_NAME, report};

/// How long one identity waits to be connected before giving up (a refused one never is).
const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// How long a connected identity stays, gossiping its report every status tick.
const STAY: Duration = Duration::from_millis(1200);
/// Requests a flooding identity keeps in flight per neighbour, each answer sending the
/// next (as `hostile`'s flood: a plain burst would be dropped by libp2p's stream cap
/// before the victim counted it); far above the 200 a second that get a peer banned.
const FLOOD_CHAINS: usize = 16;

/// Where and how many identities to mint.
#[derive(Debug, Clone)]
pub struct Churn {
    /// Peers the identities dial (the seeder).
    pub bootstrap: Vec<Multiaddr>,
    /// Directory for the identities' stores.
    pub dir: PathBuf,
    /// Identities per lane.
    pub per_lane: usize,
    /// Lanes running at once, each on its own listen port.
    pub lanes: usize,
}

/// The hooks of one minted identity.
struct Minted {
    name: String,
    /// None, or a certificate from an issuer the seeder does not trust.
    cert: Option<NodeCert>,
    flood: bool,
    /// Flood requests in flight per neighbour.
    in_flight: HashMap<PeerId, usize>,
}

impl Hooks<PeerId> for Minted {
    fn tick(&mut self, connected: &[PeerId], _holds_release: bool) -> Vec<(PeerId, Request)> {
        if !self.flood {
            return Vec::new();
        }
        let mut out = Vec::new();
        for peer in connected {
            let n = self.in_flight.entry(*peer).or_default();
            out.extend(std::iter::repeat_n(
                (*peer, Request::Peers),
                FLOOD_CHAINS - *n,
            ));
            *n = FLOOD_CHAINS;
        }
        out
    }

    fn answered(&mut self, peer: PeerId, ok: bool) -> Vec<(PeerId, Request)> {
        if ok {
            return vec![(peer, Request::Peers)];
        }
        let n = self.in_flight.entry(peer).or_default();
        *n = n.saturating_sub(1);
        Vec::new()
    }

    fn gossip(&mut self) -> Vec<(Topic, Vec<u8>)> {
        let r = report(&self.name, self.cert.clone(), &[]);
        vec![(Topic::Report, codec::encode(&r).expect("encoding a report"))]
    }
}

/// Runs every lane to the end; lane 0 floods (finding 9), the others send names.
pub(super) async fn run(churn: Churn) {
    let lanes: Vec<_> = (0..churn.lanes)
        .map(|lane| tokio::spawn(run_lane(churn.clone(), lane)))
        .collect();
    for l in lanes {
        let _ = l.await;
    }
    tracing::warn!(
        identities = churn.lanes * churn.per_lane,
        "identity churn finished"
    );
}

/// One lane: identities one after another on one listen port.
async fn run_lane(churn: Churn, lane: usize) {
    let port = crate::free_port();
    let listen: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}")
        .parse()
        .expect("a multiaddr");
    for n in 0..churn.per_lane {
        let key = Keypair::generate_ed25519();
        let name = format!("fake-{lane}-{n}{HOSTILE_NAME}");
        // Identities of odd lanes carry a certificate from an issuer nobody trusts.
        let cert = (lane % 2 == 1)
            .then(|| super::issue_cert(&Keypair::generate_ed25519(), &name, &key.public()).ok())
            .flatten();
        let dir = churn.dir.join(format!("lane-{lane}-{n}"));
        let mut config = AgentConfig::new(key, dir.join("store"));
        config.listen = vec![listen.clone()];
        config.bootstrap = churn.bootstrap.clone();
        // Trusts no seeder: it never downloads, it only talks.
        config.node_name = Some(format!("fake-{lane}-{n}"));
        let hooks = Box::new(Minted {
            name,
            cert,
            flood: lane == 0,
            in_flight: HashMap::new(),
        });
        let Ok((agent, task)) = blobswarm_peer::spawn_with_hooks(config, hooks).await else {
            // The port may still be held by the identity before: try the next one.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut status = agent.status();
        let connected = {
            let wait = async { status.wait_for(|s| s.peers > 0).await.map(|_| ()) };
            tokio::time::timeout(CONNECT_WAIT, wait).await
        };
        if connected.is_ok() {
            // A flooder stays until well past the rate limit's burst.
            tokio::time::sleep(if lane == 0 { STAY * 3 } else { STAY }).await;
        }
        task.abort();
        let _ = task.await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
