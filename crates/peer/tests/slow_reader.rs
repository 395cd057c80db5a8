//! A requester that reads its chunk at a trickle cannot hold a seeder's upload slot:
//! the answer is cut off at its deadline (a grace plus its size at the minimum rate,
//! well before the request timeout) and the slot goes back to the pool. A real agent
//! on one side, a raw libp2p swarm with a slow-reading codec on the other, over TCP on
//! loopback.

mod common;

use common::{prepare, raw_swarm, wait_for};
use std::io;
use std::time::{Duration, Instant};

use blobswarm_core::Digest;
use blobswarm_core::codec::{self, PREFIX_LEN};
use blobswarm_core::wire::{PROTOCOL, Request};
use blobswarm_peer::{AgentConfig, AgentHandle};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::mpsc;

/// One chunk of 2 MiB: far more than a Yamux stream window, so the seeder's write
/// stalls on the slow reader. Its deadline is 4 s + 2 s.
const CHUNK: u32 = 2 << 20;
/// Bytes the slow reader takes per read, and the pause between reads (10 KiB/s).
const TRICKLE: usize = 1024;
const TRICKLE_PAUSE: Duration = Duration::from_millis(100);

/// Writes chunk requests and reads answers slowly; returns the payload bytes read.
#[derive(Clone, Default)]
struct SlowCodec;

impl request_response::Codec for SlowCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = usize;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Request> {
        Err(io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<usize> {
        let mut prefix = [0u8; PREFIX_LEN];
        io.read_exact(&mut prefix).await?;
        let (h, p) = codec::parse_prefix(prefix).map_err(io::Error::other)?;
        io.read_exact(&mut vec![0u8; h]).await?;
        let mut left = p;
        let mut buf = [0u8; TRICKLE];
        while left > 0 {
            let n = io.read(&mut buf[..left.min(TRICKLE)]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            left -= n;
            tokio::time::sleep(TRICKLE_PAUSE).await;
        }
        Ok(p)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()> {
        let header = codec::encode(&req).map_err(io::Error::other)?;
        let prefix = codec::frame_prefix(header.len(), 0).map_err(io::Error::other)?;
        io.write_all(&prefix).await?;
        io.write_all(&header).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: usize,
    ) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Starts the slow reader, connected to `seeder`; requests sent on the returned channel
/// go to the seeder.
async fn slow_reader(seeder: PeerId, addr: Multiaddr) -> mpsc::Sender<Request> {
    let behaviour = request_response::Behaviour::with_codec(
        SlowCodec,
        [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Outbound)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(120)),
    );
    let mut swarm = raw_swarm(
        Keypair::generate_ed25519(),
        behaviour,
        Duration::from_secs(120),
    );
    swarm.dial(addr).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
            break;
        }
    }
    let (tx, mut rx) = mpsc::channel::<Request>(4);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(req) = rx.recv() => {
                    swarm.behaviour_mut().send_request(&seeder, req);
                }
                _ = swarm.select_next_some() => {}
            }
        }
    });
    tx
}

/// A seeder with one upload slot holding a two-chunk blob.
async fn seeder(dir: &std::path::Path) -> (AgentHandle, Digest) {
    let key = Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let data: Vec<u8> = (0..2 * CHUNK as usize).map(|i| (i * 7) as u8).collect();
    let (local, signed) = prepare(
        &dir.join("store"),
        &key,
        &[data],
        CHUNK,
        "127.0.0.1/test/slow:v1",
    );
    let blob = local[0].map.blob();
    let mut cfg = AgentConfig::new(key, dir.join("store"));
    cfg.trusted = vec![me];
    cfg.node.max_uploads = 1;
    cfg.node.max_uploads_per_peer = 1;
    // Far beyond the answer deadline: only the deadline can free the slot in time.
    cfg.node.request_timeout = Duration::from_secs(60);
    let (agent, _task) = blobswarm_peer::spawn(cfg).await.unwrap();
    agent.publish(local, signed).await.unwrap();
    (agent, blob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_loses_its_upload_slot_at_the_answer_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let (agent, blob) = seeder(tmp.path()).await;
    let addr = agent.listen_addrs().await.unwrap()[0].clone();
    let requests = slow_reader(agent.peer_id(), addr).await;

    let asked = Instant::now();
    requests
        .send(Request::Chunk { blob, index: 0 })
        .await
        .unwrap();
    wait_for(
        &agent,
        "the first chunk served",
        Duration::from_secs(10),
        |s| s.chunks_served == 1,
    )
    .await;
    // The only slot is held by the slow answer: a second request is turned away.
    requests
        .send(Request::Chunk { blob, index: 1 })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(agent.status().borrow().chunks_served, 1, "no second slot");

    // 2 MiB at 10 KiB/s would take minutes; the deadline is 4 s + 2 s.
    let s = wait_for(
        &agent,
        "the slow answer cut off",
        Duration::from_secs(12),
        |s| s.serves_cut == 1,
    )
    .await;
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "cut at the deadline, not before: {took:?}"
    );
    let metrics = blobswarm_peer::Metrics::new();
    metrics.observe(&s);
    let text = metrics.encode();
    assert!(
        text.contains("blobswarm_serves_cut_total{reason=\"slow_reader\"} 1"),
        "{text}"
    );

    // The slot is free again: the next request is served.
    requests
        .send(Request::Chunk { blob, index: 1 })
        .await
        .unwrap();
    wait_for(&agent, "the freed slot used", Duration::from_secs(5), |s| {
        s.chunks_served == 2
    })
    .await;
}
