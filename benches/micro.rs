//! Micro-benchmarks of the per-chunk CPU paths: chunk hashing against plain `sha2` on the
//! same buffer (the rate to stay close to), the wire codec on chunk messages, and one
//! scheduler decision at 1,000 chunks × 32 neighbours.
//!
//! `cargo bench --bench micro` (add `-- hash` etc. to filter). Nothing here touches the
//! network or the disk.

use std::hint::black_box;
use std::time::{Duration, Instant};

use blobswarm_core::node::{Action, ChunkOutcome, Config, Node, PeerKey, RequestId};
use blobswarm_core::wire::{HaveUpdate, Request, Response};
use blobswarm_core::{
    Bitfield, ChunkHasher, ChunkMap, DEFAULT_CHUNK_SIZE, Digest, Release, SignedRelease,
    TrustedSeeders, chunk_map_of, codec, release_blob,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use libp2p::identity::Keypair;
use sha2::Digest as _;

/// One chunk of pseudo-random bytes: the unit every hashing and codec path works on.
fn chunk() -> Vec<u8> {
    let mut buf = vec![0u8; DEFAULT_CHUNK_SIZE as usize];
    blobswarm_testkit::PseudoRandom::new(1).fill(&mut buf);
    buf
}

fn hashing(c: &mut Criterion) {
    let buf = chunk();
    let map = chunk_map_of(&buf, DEFAULT_CHUNK_SIZE).expect("one-chunk map");
    let mut g = c.benchmark_group("hash_4MiB");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("sha2_digest", |b| {
        b.iter(|| sha2::Sha256::digest(black_box(&buf)));
    });
    // What a seeder runs per chunk on ingest (fed in 64 KiB pieces as from a socket).
    g.bench_function("chunk_hasher_64KiB_updates", |b| {
        b.iter(|| {
            let mut h = ChunkHasher::new(DEFAULT_CHUNK_SIZE).expect("chunk size");
            for piece in buf.chunks(64 << 10) {
                h.update(black_box(piece));
            }
            h.finish(map.blob()).expect("map")
        });
    });
    // What a peer runs on every chunk it receives.
    g.bench_function("chunk_map_verify", |b| {
        b.iter(|| map.verify(0, black_box(&buf)).expect("verifies"));
    });
    g.finish();
}

fn codec_benches(c: &mut Criterion) {
    let payload = chunk();
    let blob = Digest::of(b"blob");
    let mut g = c.benchmark_group("codec");
    let req = Request::Chunk { blob, index: 123 };
    g.bench_function("encode_chunk_request", |b| {
        b.iter(|| codec::encode_frame(black_box(&req), &[]).expect("encodes"));
    });
    let req_frame = codec::encode_frame(&req, &[]).expect("encodes");
    g.bench_function("decode_chunk_request", |b| {
        b.iter(|| codec::decode_frame::<Request>(black_box(&req_frame)).expect("decodes"));
    });
    // The chunk response header alone: what the agent's stream code encodes, the
    // payload is written after it without passing through serde.
    let resp = Response::Chunk { blob, index: 123 };
    g.bench_function("encode_chunk_response_header", |b| {
        b.iter(|| codec::encode(black_box(&resp)).expect("encodes"));
    });
    // Decoding borrows the payload, so it costs the header only (no throughput figure).
    let resp_frame = codec::encode_frame(&resp, &payload).expect("encodes");
    g.bench_function("decode_chunk_response_frame_4MiB", |b| {
        b.iter(|| {
            let (h, p) = codec::decode_frame::<Response>(black_box(&resp_frame)).expect("decodes");
            (h, p.len())
        });
    });
    // Encoding a whole frame copies the chunk into one buffer.
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("encode_chunk_response_frame_4MiB", |b| {
        b.iter(|| codec::encode_frame(black_box(&resp), black_box(&payload)).expect("encodes"));
    });
    g.finish();
    let mut g = c.benchmark_group("codec_have");
    let full = Request::Have {
        blob,
        update: HaveUpdate::Full(Bitfield::full(1000)),
    };
    g.bench_function("encode_decode_full_have_1000", |b| {
        b.iter(|| {
            let f = codec::encode_frame(black_box(&full), &[]).expect("encodes");
            codec::decode_frame::<Request>(&f).expect("decodes").0
        });
    });
    g.finish();
}

/// A neighbour in the scheduler benchmark: a small integer, or the seeder's real key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Peer(u32, Vec<u8>);

impl PeerKey for Peer {
    fn key_bytes(&self) -> Vec<u8> {
        self.1.clone()
    }
}

const CHUNKS: u32 = 1000;
const NEIGHBOURS: u32 = 32;

/// A node mid-download of one 1,000-chunk blob with 32 neighbours that each hold a
/// different pseudo-random half of it, a quarter already stored locally, and its request
/// slots full. Returns the node and its outstanding chunk request ids.
fn busy_node() -> (Node<Peer>, Vec<RequestId>) {
    let now = Instant::now();
    let key = Keypair::generate_ed25519();
    let seeder_id = key.public().to_peer_id();
    let blob = Digest::of(b"bench blob");
    let chunks = (0..CHUNKS)
        .map(|i| Digest::of(&i.to_le_bytes()))
        .collect::<Vec<_>>();
    let size = u64::from(CHUNKS) * u64::from(DEFAULT_CHUNK_SIZE);
    let map = ChunkMap::new(blob, size, DEFAULT_CHUNK_SIZE, chunks).expect("map");
    let blobs = vec![release_blob(&map, "application/octet-stream")];
    let release = Release::minimal("bench/image:1", blobs, &seeder_id);
    let signed = SignedRelease::sign(&release, &key).expect("signs");
    let mut node = Node::new(
        Config::default().with_rng_seed(7),
        TrustedSeeders::new([seeder_id]),
    )
    .expect("config");
    node.handle_release(signed, now, 0).expect("trusted");
    let peers: Vec<Peer> = (0..NEIGHBOURS)
        .map(|i| Peer(i, format!("peer-{i}").into_bytes()))
        .collect();
    let mut rng = blobswarm_testkit::PseudoRandom::new(3);
    for p in &peers {
        node.handle_peer_connected(p.clone(), now);
        let mut bits = Bitfield::new(CHUNKS);
        for i in 0..CHUNKS {
            if rng.next_u64() & 1 == 0 {
                bits.set(i);
            }
        }
        let update = HaveUpdate::Full(bits);
        node.handle_request(p, Request::Have { blob, update }, now);
    }
    // Answer the chunk-map request, then store a quarter of the chunks.
    let mut stored = 0;
    let mut outstanding = Vec::new();
    let mut map = Some(map);
    loop {
        let mut sent = Vec::new();
        while let Some(a) = node.poll_action() {
            if let Action::Send { id, request, .. } = a {
                sent.push((id, request));
            }
        }
        let mut progressed = false;
        for (id, request) in sent {
            match request {
                Request::ChunkMap { .. } => {
                    let m = map.take().expect("map requested once");
                    node.handle_response(id, Response::ChunkMap(m), now, 0);
                    progressed = true;
                }
                Request::Chunk { .. } if stored < CHUNKS / 4 => {
                    node.handle_chunk(id, ChunkOutcome::Stored, now);
                    stored += 1;
                    progressed = true;
                }
                Request::Chunk { .. } => outstanding.push(id),
                _ => {}
            }
        }
        if !progressed {
            break;
        }
    }
    assert!(!outstanding.is_empty(), "node has chunk requests in flight");
    (node, outstanding)
}

/// Drains actions and returns the id of the chunk request the node made, if any.
fn next_chunk_request(node: &mut Node<Peer>) -> Option<RequestId> {
    let mut found = None;
    while let Some(a) = node.poll_action() {
        if let Action::Send {
            id,
            request: Request::Chunk { .. },
            ..
        } = a
        {
            found = Some(id);
        }
    }
    found
}

fn scheduler(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler_1000_chunks_32_neighbours");
    // Steady state: a chunk could not be stored locally, so its slot is free and nothing
    // else changed; the node picks the rarest chunk some neighbour offers and asks for it.
    let (mut node, mut ids) = busy_node();
    g.bench_function("refill_one_slot", |b| {
        b.iter(|| {
            let id = ids.pop().expect("one outstanding request");
            node.handle_chunk(id, ChunkOutcome::LocalError("bench".into()), Instant::now());
            ids.push(next_chunk_request(&mut node).expect("a new request"));
        });
    });
    // The common input: a chunk was verified and stored. The node records it, queues
    // have-announcements to 32 neighbours and refills the slot. State moves on with each
    // one, so only the decision is timed, and a fresh mid-download node replaces the
    // current one after 250 chunks (the node stays between 25% and 50% complete).
    g.bench_function("chunk_stored_and_refill", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let (mut node, mut ids) = busy_node();
            let mut used = 0;
            for _ in 0..iters {
                if used == CHUNKS / 4 || ids.is_empty() {
                    (node, ids) = busy_node();
                    used = 0;
                }
                let id = ids.pop().expect("checked above");
                let start = Instant::now();
                node.handle_chunk(id, ChunkOutcome::Stored, start);
                let next = next_chunk_request(&mut node);
                timed += start.elapsed();
                ids.extend(next);
                used += 1;
            }
            timed
        });
    });
    g.finish();
}

criterion_group!(benches, hashing, codec_benches, scheduler);
criterion_main!(benches);
