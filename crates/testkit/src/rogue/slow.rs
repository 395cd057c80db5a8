//! The slow reader (issue #18, finding 6): a second, raw libp2p identity of the rogue
//! that asks the seeder for chunks and reads the answers at a trickle, keeping
//! [`IN_FLIGHT`] requests open, to hold the seeder's upload slots. The agent's own
//! request-response codec reads at full speed, so this one speaks the wire protocol
//! itself (same framing, `blobswarm_core::codec`) and only ever reads slowly.

use std::io;
use std::time::Duration;

use blobswarm_core::Digest;
use blobswarm_core::codec;
use blobswarm_core::wire::{PROTOCOL, Request};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, noise, tcp, yamux};

/// Chunk requests kept open at once (the seeder has 6 upload slots by default).
const IN_FLIGHT: usize = 8;
/// Bytes read per trickle step, and the pause after each: 128 bytes a second.
const TRICKLE_BYTES: usize = 64;
const TRICKLE_PAUSE: Duration = Duration::from_millis(500);
/// How long the slow reader waits for an answer before giving up on its side.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A codec that writes requests like the agent's and reads answers at a trickle.
#[derive(Debug, Clone, Default)]
struct SlowCodec;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl request_response::Codec for SlowCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = usize;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(invalid("the slow reader serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<usize>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = [0u8; TRICKLE_BYTES];
        let mut total = 0;
        loop {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
            tokio::time::sleep(TRICKLE_PAUSE).await;
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = codec::encode_frame(&req, &[]).map_err(invalid)?;
        io.write_all(&frame).await?;
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, _: &mut T, _: usize) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(invalid("the slow reader serves nothing"))
    }
}

/// Dials `seeder` with a fresh identity (again each second while not connected) and
/// keeps [`IN_FLIGHT`] slow chunk reads of `blobs` open until the process ends. Gives up
/// quietly when no swarm can be built.
pub(super) async fn run(seeder: Multiaddr, blobs: Vec<Digest>) {
    let Ok(builder) = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
    else {
        return;
    };
    let protocols = [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Outbound)];
    let config = request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT);
    let builder = match builder
        .with_behaviour(|_| request_response::Behaviour::with_codec(SlowCodec, protocols, config))
    {
        Ok(b) => b,
        Err(never) => match never {},
    };
    let mut swarm = builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(REQUEST_TIMEOUT))
        .build();
    if blobs.is_empty() {
        return;
    }
    let target = seeder;
    let _ = swarm.dial(target.clone());
    let mut seeder = None;
    let mut in_flight = 0usize;
    let mut next = 0usize;
    // Tops up once a second, so quick refusals (before the seeder holds the blob) never
    // add up to a request flood.
    let mut top_up = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    tracing::warn!(seeder = %peer_id, "reading chunk answers slowly");
                    seeder = Some(peer_id);
                }
                SwarmEvent::ConnectionClosed { .. } => (seeder, in_flight) = (None, 0),
                SwarmEvent::Behaviour(
                    request_response::Event::Message { .. }
                    | request_response::Event::OutboundFailure { .. },
                ) => in_flight = in_flight.saturating_sub(1),
                _ => {}
            },
            _ = top_up.tick() => {
                let Some(peer) = seeder else {
                    // Refused at the door (the test's connection flood fills the
                    // seeder's pending slots) or cut off: dial again, once a second.
                    let _ = swarm.dial(target.clone());
                    continue;
                };
                while in_flight < IN_FLIGHT {
                    next += 1;
                    let blob = blobs[next % blobs.len()];
                    swarm.behaviour_mut().send_request(&peer, Request::Chunk { blob, index: 0 });
                    in_flight += 1;
                }
            }
        }
    }
}
