//! The select loop: swarm events, commands from `AgentHandle`, results of blocking work
//! and the driver's deadline become driver events; driver outputs become swarm calls and
//! blocking tasks. Gossip is handed to the driver and forwarded only on its verdict
//! (gossipsub also drops messages over a topic's limit in its decoder); request and
//! response frames are bounded by the codec (`protocol`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use blobswarm_core::Release;
use blobswarm_core::store::FsStore;
use blobswarm_core::wire::{MAX_ADDRS_PER_PEER, Request, Response};
use bytes::Bytes;
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionDenied, DialError, ListenError, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, connection_limits, gossipsub, identify, multiaddr::Protocol,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::ImportFailed;
use tracing::{debug, info, warn};

use super::{Command, now};
use crate::behaviour::{Behaviour, BehaviourEvent, topic_name};
use crate::bufpool::BufPool;
use crate::driver::{Driver, Event, GossipId, OutId, ReplyId, Snapshot, Topic};
use crate::ip_limit::IpLimitExceeded;
use crate::protocol::SlowReader;
use crate::status::AgentStatus;

mod exec;

/// What `spawn` hands the loop.
pub(super) struct Parts {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) driver: Driver<PeerId>,
    pub(super) store: Arc<FsStore>,
    pub(super) runtime: crate::runtime::Runtime,
    pub(super) bootstrap: Vec<Multiaddr>,
    pub(super) registry_fallback: Option<Arc<dyn crate::RegistryFallback>>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) status: watch::Sender<AgentStatus>,
    /// Where received progress reports go (a seeder's aggregator).
    pub(super) aggregator: Option<crate::SharedReportSink>,
    /// Chunk buffers, shared with the swarm's codec.
    pub(super) pool: BufPool,
}

/// The adapter's state: the swarm, the id maps, and the channels to blocking work.
pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    driver: Driver<PeerId>,
    store: Arc<FsStore>,
    runtime: crate::runtime::Runtime,
    bootstrap: Vec<Multiaddr>,
    registry_fallback: Option<Arc<dyn crate::RegistryFallback>>,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<AgentStatus>,
    /// Where received progress reports go (a seeder's aggregator).
    aggregator: Option<crate::SharedReportSink>,
    /// Results of blocking work, fed back to the driver.
    internal_tx: mpsc::Sender<Event<PeerId>>,
    internal_rx: mpsc::Receiver<Event<PeerId>>,
    /// Outbound requests in flight: the swarm's id to the driver's.
    out_ids: HashMap<OutboundRequestId, OutId>,
    /// Inbound requests not yet answered, with the swarm's id and reply channel.
    channels: HashMap<ReplyId, (InboundRequestId, ResponseChannel<(Response, Bytes)>)>,
    /// Inbound requests whose answer may still end (sent or failed): swarm id to driver id.
    reply_of: HashMap<InboundRequestId, ReplyId>,
    next_reply: u64,
    /// Gossip messages awaiting the driver's verdict: gossipsub's id and the peer that
    /// relayed it. The driver answers every message while handling it, so this holds
    /// one entry at a time.
    gossip_ids: HashMap<GossipId, (gossipsub::MessageId, PeerId)>,
    next_gossip: u64,
    listen_addrs: Vec<Multiaddr>,
    /// The checkpoint pass running, if any: passes run one at a time.
    checkpoint: Option<JoinHandle<()>>,
    /// Chunk buffers, shared with the swarm's codec: chunks read from the store for
    /// serving go into them, and received chunks give theirs back once stored.
    pool: BufPool,
}

impl EventLoop {
    pub(super) fn new(p: Parts) -> Self {
        let (internal_tx, internal_rx) = mpsc::channel(256);
        Self {
            swarm: p.swarm,
            driver: p.driver,
            store: p.store,
            runtime: p.runtime,
            bootstrap: p.bootstrap,
            registry_fallback: p.registry_fallback,
            commands: p.commands,
            status: p.status,
            aggregator: p.aggregator,
            internal_tx,
            internal_rx,
            out_ids: HashMap::new(),
            channels: HashMap::new(),
            reply_of: HashMap::new(),
            next_reply: 0,
            gossip_ids: HashMap::new(),
            next_gossip: 0,
            listen_addrs: Vec::new(),
            checkpoint: None,
            pool: p.pool,
        }
    }

    pub(super) async fn run(mut self) {
        self.run_outputs();
        loop {
            let deadline = self.driver.poll_timeout();
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                Some(ev) = self.internal_rx.recv() => self.driver.handle(ev, now()),
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.driver.handle(Event::Timer, now());
                }
                () = join_pass(&mut self.checkpoint) => {
                    self.checkpoint = None;
                    self.driver.handle(Event::CheckpointDone, now());
                }
            }
            self.run_outputs();
        }
        self.shutdown().await;
        debug!("agent event loop stopped");
    }

    /// Every handle is gone: let a running checkpoint pass finish, then run the last.
    async fn shutdown(&mut self) {
        if let Some(pass) = self.checkpoint.take() {
            let _ = pass.await;
            self.driver.handle(Event::CheckpointDone, now());
        }
        self.driver.handle(Event::Shutdown, now());
        while let Some(output) = self.driver.poll_output() {
            if let crate::driver::Output::Checkpoint(work) = output {
                let store = self.store.clone();
                let pass = tokio::task::spawn_blocking(move || {
                    crate::checkpoint::run_pass(&store, work);
                });
                let _ = pass.await;
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish {
                blobs,
                release,
                reply,
            } => {
                let id = release.id();
                let result = self
                    .driver
                    .publish(blobs, release, now())
                    .map_err(|source| crate::error::AgentError::Refused {
                        release: id.to_string(),
                        source,
                    });
                let _ = reply.send(result);
            }
            Command::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    warn!(%addr, error = %e, "cannot dial peer");
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let ev = match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                info!(address = %full, "listening");
                self.listen_addrs.push(full);
                self.publish_status(self.driver.snapshot(Instant::now()));
                return;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                if num_established.get() == 1 {
                    self.driver.handle(Event::Connected(peer_id), now());
                }
                let (addr, dialled) = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => (address, true),
                    ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr, false),
                };
                let Some(remote) = socket_addr(addr) else {
                    return;
                };
                Event::Endpoint {
                    peer: peer_id,
                    remote,
                    dialled,
                }
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                ..
            }
            | SwarmEvent::OutgoingConnectionError {
                error: DialError::Denied { cause },
                ..
            } if is_limit(&cause) => Event::ConnectionDenied,
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => Event::Disconnected(peer_id),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, info.listen_addrs),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let Some(ev) = self.gossip_event(propagation_source, message_id, message) else {
                    return;
                };
                ev
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(event)) => {
                let Some(ev) = self.rr_event(event) else {
                    return;
                };
                ev
            }
            _ => return,
        };
        self.driver.handle(ev, now());
    }

    /// Keeps a peer's listen addresses (no relays, bounded) in the swarm and the driver.
    fn on_identify(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Event<PeerId> {
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .filter(|a| !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
            .take(MAX_ADDRS_PER_PEER)
            .collect();
        for a in &addrs {
            self.swarm.add_peer_address(peer, a.clone());
        }
        Event::PeerAddrs {
            peer,
            listen: addrs.iter().filter_map(socket_addr).collect(),
            addrs: addrs.iter().map(Multiaddr::to_vec).collect(),
        }
    }

    fn rr_event(
        &mut self,
        event: request_response::Event<Request, (Response, Bytes)>,
    ) -> Option<Event<PeerId>> {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    self.next_reply += 1;
                    let reply = ReplyId(self.next_reply);
                    self.channels.insert(reply, (request_id, channel));
                    self.reply_of.insert(request_id, reply);
                    Some(Event::Request {
                        peer,
                        reply,
                        request,
                    })
                }
                request_response::Message::Response {
                    request_id,
                    response: (response, payload),
                } => Some(Event::Response {
                    out: self.out_ids.remove(&request_id)?,
                    response,
                    payload,
                }),
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => Some(Event::RequestFailed {
                out: self.out_ids.remove(&request_id),
                peer,
                violation: matches!(&error, request_response::OutboundFailure::Io(e) if is_protocol_violation(e)),
                error: error.to_string(),
            }),
            request_response::Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => Some(Event::InboundFailed {
                peer,
                reply: self.reply_of.remove(&request_id),
                violation: matches!(&error, request_response::InboundFailure::Io(e) if is_protocol_violation(e)),
                slow_reader: matches!(&error, request_response::InboundFailure::Io(e) if SlowReader::is(e)),
                error: error.to_string(),
            }),
            request_response::Event::ResponseSent { request_id, .. } => {
                Some(Event::ReplyEnded(self.reply_of.remove(&request_id)?))
            }
        }
    }

    /// A gossip message on one of the agent's topics, for the driver to judge. Gossipsub
    /// only delivers messages on subscribed topics; anything else is ignored here.
    fn gossip_event(
        &mut self,
        relayed_by: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) -> Option<Event<PeerId>> {
        let Some(topic) = [Topic::Release, Topic::Notice, Topic::Report]
            .into_iter()
            .find(|t| message.topic == gossipsub::IdentTopic::new(topic_name(*t)).hash())
        else {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(
                    &message_id,
                    &relayed_by,
                    gossipsub::MessageAcceptance::Ignore,
                );
            return None;
        };
        self.next_gossip += 1;
        let id = GossipId(self.next_gossip);
        self.gossip_ids.insert(id, (message_id, relayed_by));
        Some(Event::Gossip {
            id,
            topic,
            source: message.source,
            data: message.data,
        })
    }

    fn publish_status(&self, s: Snapshot) {
        self.status.send_replace(AgentStatus {
            peer_id: Some(*self.swarm.local_peer_id()),
            listen_addrs: self.listen_addrs.clone(),
            peers: s.peers,
            releases: s.releases,
            stats: s.stats,
            uploaded_bytes: s.uploaded_bytes,
            chunks_served: s.chunks_served,
            chunks_verified: s.chunks_verified,
            import_target: s.import_target,
            updated: Some(Instant::now()),
            bans: s.bans,
            banned: s.banned,
            releases_evicted: s.releases_evicted,
            store_bytes: s.store_bytes,
            store_max_bytes: s.store_max_bytes,
            gossip_rejected: s.gossip_rejected,
            serves_cut: s.serves_cut,
            connections_denied: s.connections_denied,
        });
    }
}

/// The IP and TCP/UDP port an address names, if it starts with them.
fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) | Protocol::Udp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// Whether a connection was refused by one of the connection limits.
fn is_limit(cause: &ConnectionDenied) -> bool {
    cause
        .downcast_ref::<connection_limits::Exceeded>()
        .is_some()
        || cause.downcast_ref::<IpLimitExceeded>().is_some()
}

/// Whether a stream error means the peer sent bytes our codec refuses (malformed or
/// oversized frame), as opposed to a network or timeout problem.
fn is_protocol_violation(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidData
}

/// Waits for the running checkpoint pass; never resolves when none runs.
async fn join_pass(pass: &mut Option<JoinHandle<()>>) {
    match pass {
        Some(handle) => {
            let _ = handle.await;
        }
        None => std::future::pending().await,
    }
}

/// Makes every blob of `release` durable, then imports it through the configured
/// target (OCI layout or containerd). Runs off the event loop.
async fn import_release(
    store: Arc<FsStore>,
    runtime: crate::runtime::Runtime,
    release: Arc<Release>,
) -> Result<(), ImportFailed> {
    let (store2, release2) = (store.clone(), release.clone());
    tokio::task::spawn_blocking(move || {
        for b in &release2.blobs {
            store2.finalize(&b.digest, b.size)?;
        }
        Ok::<_, ImportFailed>(())
    })
    .await??;
    runtime.import(&release, &store).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refused_frames_count_as_violations() {
        let e = |kind| std::io::Error::new(kind, "x");
        assert!(is_protocol_violation(&e(std::io::ErrorKind::InvalidData)));
        assert!(!is_protocol_violation(&e(
            std::io::ErrorKind::UnexpectedEof
        )));
    }
}
