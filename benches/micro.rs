//! Micro-benchmarks of the per-chunk CPU paths: chunk hashing against plain `sha2` on the
//! same buffer (the rate to stay close to), the wire codec on chunk messages, one
//! scheduler decision at 1,000 chunks × 32 neighbours, and the ways a store could write
//! a blob's chunks to disk.
//!
//! `cargo bench --bench micro` (add `-- hash` etc. to filter). Nothing here touches the
//! network; `store_write` writes 64 MiB files under the temporary directory.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
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

/// Chunks per written blob in `store_write`: 64 MiB, enough to leave the CPU caches.
const BLOB_CHUNKS: u64 = 16;

/// How `store_write` puts a blob's chunks on disk.
#[derive(Clone, Copy)]
enum WriteMode {
    /// Today's `FsStore::write_chunk`: a sparse file (`set_len`), a `pwrite` per chunk
    /// into fresh page-cache pages.
    Sparse,
    /// The blob's extents reserved up front with `fallocate`, then `pwrite` as today.
    Fallocate,
    /// `fallocate`, then `O_DIRECT` writes from a 4 KiB-aligned buffer: no page cache.
    Direct,
    /// `pwrite` over a file whose pages are already in the page cache (what reusing an
    /// already-faulted region would cost).
    Overwrite,
}

/// Writes one blob of `BLOB_CHUNKS` chunks as `mode` does, then `fsync`s it as
/// `FsStore::finalize` does.
fn write_blob(path: &Path, mode: WriteMode, chunk: &[u8]) {
    let size = BLOB_CHUNKS * chunk.len() as u64;
    let mut opts = OpenOptions::new();
    opts.create(true).truncate(false).write(true);
    if matches!(mode, WriteMode::Direct) {
        opts.custom_flags(rustix::fs::OFlags::DIRECT.bits().cast_signed());
    }
    let file = opts.open(path).expect("open blob file");
    match mode {
        WriteMode::Sparse => file.set_len(size).expect("set_len"),
        WriteMode::Fallocate | WriteMode::Direct => {
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)
                .expect("fallocate");
        }
        WriteMode::Overwrite => {}
    }
    for i in 0..BLOB_CHUNKS {
        file.write_all_at(black_box(chunk), i * chunk.len() as u64)
            .expect("pwrite");
    }
    file.sync_all().expect("fsync");
    if !matches!(mode, WriteMode::Overwrite) {
        std::fs::remove_file(path).expect("remove blob file");
    }
}

/// This thread's time on a CPU so far (`/proc/thread-self/schedstat`, first field).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok());
    Duration::from_nanos(ns.expect("schedstat's first field"))
}

/// A chunk of bytes in a 4 KiB-aligned buffer, as `O_DIRECT` needs.
fn aligned_chunk(backing: &mut Vec<u8>) -> &[u8] {
    let len = DEFAULT_CHUNK_SIZE as usize;
    *backing = vec![0u8; len + 4096];
    let start = backing.as_ptr().align_offset(4096);
    let chunk = &mut backing[start..start + len];
    blobswarm_testkit::PseudoRandom::new(1).fill(chunk);
    chunk
}

fn store_write(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("bswb-micro-")
        .tempdir()
        .expect("tempdir");
    let mut backing = Vec::new();
    let chunk = aligned_chunk(&mut backing);
    let reused = dir.path().join("reused");
    write_blob(&reused, WriteMode::Overwrite, chunk);
    let modes = [
        ("pwrite_sparse", WriteMode::Sparse),
        ("fallocate_pwrite", WriteMode::Fallocate),
        ("fallocate_o_direct", WriteMode::Direct),
        ("pwrite_overwrite_cached", WriteMode::Overwrite),
    ];
    // Wall time (the chunk's latency) and this thread's CPU time (what an agent pays).
    for (clock, cpu) in [("wall", false), ("thread_cpu", true)] {
        let mut g = c.benchmark_group(format!("store_write_64MiB_{clock}"));
        g.throughput(Throughput::Bytes(BLOB_CHUNKS * DEFAULT_CHUNK_SIZE as u64));
        g.sample_size(10);
        for (name, mode) in modes {
            let path = if matches!(mode, WriteMode::Overwrite) {
                reused.clone()
            } else {
                dir.path().join(name)
            };
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let (wall, cpu0) = (Instant::now(), thread_cpu());
                    for _ in 0..iters {
                        write_blob(&path, mode, chunk);
                    }
                    if cpu {
                        thread_cpu() - cpu0
                    } else {
                        wall.elapsed()
                    }
                });
            });
        }
        g.finish();
    }
}

criterion_group!(benches, hashing, codec_benches, scheduler, store_write);
criterion_main!(benches);
