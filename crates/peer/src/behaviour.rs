//! The composed libp2p behaviour and the one constructor that builds the swarm.

use std::time::Duration;

use blobswarm_core::wire::{PROTOCOL, RELEASE_TOPIC, REPORT_TOPIC, SWARM_TOPIC};
use libp2p::core::Transport as _;
use libp2p::core::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, gossipsub, identify, identity::Keypair, noise,
    request_response, tcp, yamux,
};

use crate::protocol::WireCodec;

/// Stock behaviours only: they translate network events to core inputs and back.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
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

/// Time allowed for a connection's upgrades (pnet, Noise, Yamux).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds a TCP + Noise + Yamux swarm around [`Behaviour`]. With a swarm key, TCP is
/// wrapped in a libp2p private network (pnet: XSalsa20 with the pre-shared key) before
/// Noise, so only nodes holding the same key can even start a handshake.
pub(crate) fn build_swarm(
    keypair: Keypair,
    request_timeout: Duration,
    swarm_key: Option<PreSharedKey>,
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
            .with_behaviour(|key| behaviour(key, request_timeout))
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
            .with_behaviour(|key| behaviour(key, request_timeout))
            .map_err(|e| SwarmError::Behaviour(e.into()))?
            .with_swarm_config(idle)
            .build(),
    };
    Ok(swarm)
}

fn behaviour(key: &Keypair, request_timeout: Duration) -> Result<Behaviour, BoxError> {
    let rr = request_response::Behaviour::new(
        [(
            StreamProtocol::new(PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(request_timeout)
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
    );
    let gs_config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(blobswarm_core::MAX_RELEASE_BYTES + (64 << 10))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gs_config,
    )
    .map_err(|e| format!("gossipsub: {e}"))?;
    gossipsub.subscribe(&gossipsub::IdentTopic::new(RELEASE_TOPIC))?;
    gossipsub.subscribe(&gossipsub::IdentTopic::new(SWARM_TOPIC))?;
    // Every node relays progress reports, so they reach the seeder across the mesh.
    gossipsub.subscribe(&gossipsub::IdentTopic::new(REPORT_TOPIC))?;
    let identify = identify::Behaviour::new(identify::Config::new(
        "/blobswarm/id/1".into(),
        key.public(),
    ));
    Ok(Behaviour {
        rr,
        gossipsub,
        identify,
    })
}
