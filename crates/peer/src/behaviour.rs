//! The composed libp2p behaviour and the one constructor that builds the swarm.

use std::time::Duration;

use blobswarm_core::wire::{PROTOCOL, RELEASE_TOPIC, REPORT_TOPIC, SWARM_TOPIC};
use libp2p::core::Transport as _;
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, connection_limits, gossipsub, identify, identity::Keypair,
    noise, request_response, tcp, yamux,
};

use crate::bufpool::BufPool;
use crate::driver::{Topic, max_gossip_bytes};
use crate::ip_limit::{IpLimit, MAX_INBOUND_PER_IP};
use crate::protocol::WireCodec;

/// Stock behaviours (and one small limit): they translate network events to core inputs
/// and back. The limits come first, so a refused connection reaches no other behaviour.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) ip_limit: IpLimit,
    pub(crate) rr: request_response::Behaviour<WireCodec>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) identify: identify::Behaviour,
}

/// Inbound streams served at once per connection; bounds memory spent on serving.
const MAX_CONCURRENT_STREAMS: usize = 32;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The swarm could not be built; names the layer that failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The transport (TCP, pnet, Noise, Yamux) could not be set up.
    #[error("swarm transport: {0}")]
    Transport(#[source] BoxError),
    /// A behaviour (request-response, gossipsub, identify) could not be configured.
    #[error("swarm behaviour: {0}")]
    Behaviour(#[source] BoxError),
}

/// Connections to one peer: one each way while two dials race is normal, more is not.
const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Connections mid-handshake (pnet, Noise, Yamux) each way: bounds the CPU and memory a
/// flood of half-open connections costs, while a seeder taking a rollout's first wave
/// of agents completes 64 handshakes at a time.
const MAX_PENDING: u32 = 64;
/// Established connections at least: neighbours, peers served discovery only (agents
/// dialling a full seeder, disconnected after a grace) and racing duplicates. Raised
/// to four per configured neighbour for a large `max_peers`.
const MIN_MAX_ESTABLISHED: u32 = 256;

/// The connection limits for a node keeping `max_peers` neighbours.
fn connection_limits(max_peers: usize) -> connection_limits::ConnectionLimits {
    let neighbours = u32::try_from(max_peers).unwrap_or(u32::MAX);
    connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
        .with_max_pending_incoming(Some(MAX_PENDING))
        .with_max_pending_outgoing(Some(MAX_PENDING))
        .with_max_established(Some(MIN_MAX_ESTABLISHED.max(neighbours.saturating_mul(4))))
}

/// Time allowed for a connection's upgrades (pnet, Noise, Yamux).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds a TCP + Noise + Yamux swarm around [`Behaviour`]. With a swarm key, TCP is
/// wrapped in a libp2p private network (pnet: XSalsa20 with the pre-shared key) before
/// Noise, so only nodes holding the same key can even start a handshake. Chunk payloads
/// are read into buffers from `pool`.
pub(crate) fn build_swarm(
    keypair: Keypair,
    request_timeout: Duration,
    swarm_key: Option<PreSharedKey>,
    max_peers: usize,
    pool: BufPool,
) -> Result<Swarm<Behaviour>, SwarmError> {
    let builder = SwarmBuilder::with_existing_identity(keypair).with_tokio();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(120));
    let swarm = match swarm_key {
        None => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| SwarmError::Transport(e.into()))?
            .with_behaviour(|key| behaviour(key, request_timeout, max_peers, pool))
            .map_err(|e| SwarmError::Behaviour(e.into()))?
            .with_swarm_config(idle)
            .build(),
        Some(psk) => builder
            .with_other_transport(|key| -> Result<_, BoxError> {
                let noise = noise::Config::new(key)?;
                Ok(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default())
                        .timeout(UPGRADE_TIMEOUT),
                )
            })
            .map_err(|e| SwarmError::Transport(e.into()))?
            .with_behaviour(|key| behaviour(key, request_timeout, max_peers, pool))
            .map_err(|e| SwarmError::Behaviour(e.into()))?
            .with_swarm_config(idle)
            .build(),
    };
    Ok(swarm)
}

fn behaviour(
    key: &Keypair,
    request_timeout: Duration,
    max_peers: usize,
    pool: BufPool,
) -> Result<Behaviour, BoxError> {
    let rr = request_response::Behaviour::with_codec(
        WireCodec::new(pool),
        [(
            StreamProtocol::new(PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(request_timeout)
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
    );
    let gossipsub = gossipsub(key)?;
    let identify = identify::Behaviour::new(identify::Config::new(
        "/blobswarm/id/1".into(),
        key.public(),
    ));
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(connection_limits(max_peers)),
        ip_limit: IpLimit::new(MAX_INBOUND_PER_IP),
        rr,
        gossipsub,
        identify,
    })
}

/// Every gossip topic the agent subscribes to. Every node relays progress reports, so
/// they reach the seeder across the mesh.
const TOPICS: [Topic; 3] = [Topic::Release, Topic::Notice, Topic::Report];

/// The gossipsub topic name of a driver topic.
pub(crate) fn topic_name(topic: Topic) -> &'static str {
    match topic {
        Topic::Release => RELEASE_TOPIC,
        Topic::Notice => SWARM_TOPIC,
        Topic::Report => REPORT_TOPIC,
    }
}

fn topic_hash(topic: Topic) -> gossipsub::TopicHash {
    gossipsub::IdentTopic::new(topic_name(topic)).hash()
}

/// Gossipsub's envelope around a message's data (author, sequence number, signature,
/// topic name, protobuf tags; about 200 bytes with an Ed25519 author): a topic's
/// transmit limit is its data limit plus this.
const GOSSIP_ENVELOPE_BYTES: usize = 1 << 10;

/// Gossipsub with application validation (nothing is forwarded before the driver's
/// verdict), a transmit limit per topic, and peer scoring.
fn gossipsub(key: &Keypair) -> Result<gossipsub::Behaviour, BoxError> {
    let mut config = gossipsub::ConfigBuilder::default();
    config
        // The whole-RPC limit: one release message with its envelope.
        .max_transmit_size(max_gossip_bytes(Topic::Release) + GOSSIP_ENVELOPE_BYTES)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .heartbeat_interval(Duration::from_millis(500));
    for topic in TOPICS {
        // Refused in gossipsub's decoder, before the message is even handed to us; the
        // refusal counts as an invalid message against the peer that sent it.
        config.max_transmit_size_for_topic(
            max_gossip_bytes(topic) + GOSSIP_ENVELOPE_BYTES,
            topic_hash(topic),
        );
    }
    let config = config
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
            .map_err(|e| format!("gossipsub: {e}"))?;
    gossipsub
        .with_peer_score(score_params(), score_thresholds())
        .map_err(|e| format!("gossipsub peer score: {e}"))?;
    for topic in TOPICS {
        gossipsub.subscribe(&gossipsub::IdentTopic::new(topic_name(topic)))?;
    }
    Ok(gossipsub)
}

/// Weight of one topic's invalid-message counter (P4, applied squared): 1 invalid
/// message costs 5, 2 cost 20, 4 cost 80 and the 5th (125) is past the graylist
/// threshold. Honest nodes validate before forwarding, so only a message's author (or
/// a node running a broken build) sends invalid ones; a single one, e.g. from version
/// skew, leaves the peer above the gossip threshold.
const INVALID_MESSAGE_WEIGHT: f64 = -5.0;
/// How long an invalid message weighs: the counter decays to nothing over 10 minutes
/// (about 3 minutes half-life), so a persistent attacker stays graylisted with about
/// one message a minute getting through to be judged, while a one-off recovers.
const INVALID_MESSAGE_MEMORY: Duration = Duration::from_secs(600);

/// The peer-score parameters. Only penalties for things an honest node never does are
/// on: invalid messages (P4, per topic) and gossipsub protocol misbehaviour (P7: GRAFT
/// during backoff, IHAVE promises never followed up). Everything that measures how
/// much or how fast a peer delivers is off (P1 time in mesh, P2 first deliveries, P3
/// and P3b mesh delivery deficits, slow-peer penalties): our topics are sparse (a few
/// releases per rollout, one heartbeat per seeder, one report per node every few
/// seconds), so delivery counters would punish quiet and slow honest nodes, and
/// positive credit would let an attacker bank score before misbehaving. The
/// IP-colocation penalty (P6) is off too: agents behind one node IP (SNAT, or every
/// agent on 127.0.0.1 in the tests) are normal here; connection limits bound them.
fn score_params() -> PeerScoreParams {
    let topic = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(INVALID_MESSAGE_MEMORY),
        ..TopicScoreParams::default()
    };
    PeerScoreParams {
        topics: TOPICS
            .iter()
            .map(|t| (topic_hash(*t), topic.clone()))
            .collect(),
        ip_colocation_factor_weight: 0.0,
        // P7: more than 6 protocol offences start to cost; about 13 within a minute or
        // so graylist. A loaded honest node may break the odd IWANT promise.
        behaviour_penalty_weight: -2.0,
        behaviour_penalty_threshold: 6.0,
        behaviour_penalty_decay: gossipsub::score_parameter_decay(Duration::from_secs(60)),
        slow_peer_weight: 0.0,
        ..PeerScoreParams::default()
    }
}

/// The libp2p defaults, which fit the weights above: below -10 (2 invalid messages)
/// no gossip metadata is exchanged with the peer, below -50 (4) we do not publish to
/// it, below -80 (5) everything it sends is dropped unread. Scores are never positive
/// here (no reward parameters), so opportunistic grafting at 0 only replaces mesh
/// peers when the mesh median went negative; peer exchange is off.
fn score_thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 0.0,
    }
}
