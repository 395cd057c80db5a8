//! Scripted swarms of `Node`s with instant in-memory delivery and real chunk verification.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p_identity::{Keypair, PeerId};

use super::state::BlobState;
use super::*;
use crate::wire::{ErrorCode, HaveUpdate, Request, Response, SwarmNotice};
use crate::{MIN_CHUNK_SIZE, Release, chunk_map_of, release_blob};

struct Swarm {
    ids: Vec<PeerId>,
    nodes: Vec<Node<PeerId>>,
    data: HashMap<Digest, Vec<u8>>,
    corrupt: HashSet<usize>,
    /// Nodes whose store refuses writes (disk full).
    disk_full: HashSet<usize>,
    dead: HashSet<usize>,
    /// Requests to dead nodes, held so a test can fail or time them out.
    black_holed: Vec<(usize, RequestId)>,
    served: Vec<u64>,
    misbehaved: Vec<(usize, PeerId)>,
    complete: Vec<Vec<ReleaseId>>,
    dropped_answers: usize,
    now: Instant,
}

const SEEDER: usize = 0;

impl Swarm {
    /// Node 0 is the seeder holding `blobs`; nodes 1..n start empty; all connected.
    fn new(
        n: usize,
        blobs: &[Vec<u8>],
        seeder_key: &Keypair,
        trust: PeerId,
    ) -> (Self, SignedRelease) {
        let now = Instant::now();
        let mut ids = vec![seeder_key.public().to_peer_id()];
        ids.extend((1..n).map(|_| PeerId::random()));
        let nodes = (0..n)
            .map(|i| {
                Node::new(
                    Config::default().with_rng_seed(i as u64),
                    TrustedSeeders::new([trust]),
                )
                .unwrap()
            })
            .collect();
        let mut s = Self {
            ids,
            nodes,
            data: HashMap::new(),
            corrupt: HashSet::new(),
            disk_full: HashSet::new(),
            dead: HashSet::new(),
            black_holed: Vec::new(),
            served: vec![0; n],
            misbehaved: Vec::new(),
            complete: vec![Vec::new(); n],
            dropped_answers: 0,
            now,
        };
        let mut entries = Vec::new();
        for b in blobs {
            let map = chunk_map_of(b, MIN_CHUNK_SIZE).unwrap();
            entries.push(release_blob(&map, "application/octet-stream"));
            s.data.insert(map.blob(), b.clone());
            s.nodes[SEEDER].add_local_blob(map, "application/octet-stream", now);
        }
        let release = Release::minimal("test/image:1", entries, &seeder_key.public().to_peer_id());
        let signed = SignedRelease::sign(&release, seeder_key).unwrap();
        (s, signed)
    }

    fn idx(&self, p: &PeerId) -> usize {
        self.ids.iter().position(|x| x == p).unwrap()
    }

    fn connect_all(&mut self) {
        let n = self.nodes.len();
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let pid = self.ids[j];
                    self.nodes[i].handle_peer_connected(pid, self.now);
                }
            }
        }
    }

    /// Delivers actions until every node is idle; fails on livelock.
    fn drive(&mut self) {
        for _round in 0..100_000 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(a) = self.nodes[i].poll_action() {
                    any = true;
                    self.apply(i, a);
                }
            }
            if !any {
                return;
            }
        }
        panic!("swarm did not go idle");
    }

    fn apply(&mut self, i: usize, action: Action<PeerId>) {
        let now = self.now;
        match action {
            Action::Send { peer, id, request } => {
                let j = self.idx(&peer);
                if self.dead.contains(&j) {
                    self.black_holed.push((i, id));
                    return;
                }
                let from = self.ids[i];
                match self.nodes[j].handle_request(&from, request.clone(), now) {
                    Inbound::Respond(r) => self.nodes[i].handle_response(id, r, now, 0),
                    Inbound::Peers => {
                        self.nodes[i].handle_response(id, Response::Peers(vec![]), now, 0)
                    }
                    Inbound::ServeChunk { blob, range, .. } => {
                        // Delivery is instant: the upload is over as soon as it starts.
                        self.nodes[j].handle_upload_done(&from, now);
                        self.served[j] += range.end - range.start;
                        let mut bytes =
                            self.data[&blob][range.start as usize..range.end as usize].to_vec();
                        if self.corrupt.contains(&j) {
                            bytes[0] ^= 0x40;
                        }
                        // An endgame duplicate whose twin already arrived: dropped unhashed.
                        let Some((map, index)) = self.nodes[i].chunk_target(id) else {
                            self.dropped_answers += 1;
                            return;
                        };
                        assert!(matches!(request, Request::Chunk { .. }));
                        let outcome = match map.verify(index, &bytes) {
                            Ok(()) if self.disk_full.contains(&i) => {
                                ChunkOutcome::LocalError("no space left on device".into())
                            }
                            Ok(()) => ChunkOutcome::Stored,
                            Err(e) => ChunkOutcome::Corrupt(e),
                        };
                        self.nodes[i].handle_chunk(id, outcome, now);
                    }
                }
            }
            Action::Publish(signed) => {
                for j in 0..self.nodes.len() {
                    if j != i && !self.dead.contains(&j) {
                        let _ = self.nodes[j].handle_release(signed.clone(), now, 0);
                    }
                }
            }
            Action::ReleaseComplete(id) => self.complete[i].push(id),
            Action::Misbehaved { peer, .. } => self.misbehaved.push((i, peer)),
            Action::ReleaseAccepted(_)
            | Action::ReleaseRefused { .. }
            | Action::BlobComplete(_)
            | Action::Notice(_) => {}
            Action::FetchRegistry { .. } => panic!("these swarms have no herd guard"),
        }
    }
}

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect()
}

fn key() -> Keypair {
    Keypair::generate_ed25519()
}

#[test]
fn every_peer_completes_and_peers_serve_each_other() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let blobs = vec![
        blob(20 * cs + 7, 3),
        blob(5 * cs, 5),
        blob(0, 1),
        blob(100, 9),
    ];
    let (mut s, signed) = Swarm::new(6, &blobs, &k, k.public().to_peer_id());
    s.connect_all();
    let id = s.nodes[SEEDER].publish_release(signed, s.now, 0).unwrap();
    s.drive();
    let total: u64 = blobs.iter().map(|b| b.len() as u64).sum();
    for i in 1..6 {
        assert_eq!(s.complete[i], vec![id], "node {i} did not complete");
        let st = s.nodes[i].stats();
        assert_eq!(
            st.bytes_from_seeders + st.bytes_from_peers,
            total,
            "node {i}"
        );
        assert_eq!(st.chunks_rejected, 0);
    }
    let peer_served: u64 = s.served[1..].iter().sum();
    assert!(peer_served > 0, "peers never served each other");
    // With instant delivery the first node to ask drains the seeder; what matters here is
    // that the seeder never sends more than one copy per peer.
    assert!(s.served[SEEDER] <= 5 * total);
}

#[test]
fn corrupting_peer_is_banned_and_chunks_come_from_elsewhere() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let blobs = vec![blob(16 * cs, 7)];
    let (mut s, signed) = Swarm::new(4, &blobs, &k, k.public().to_peer_id());
    // Node 1 completes first, then turns hostile.
    s.nodes[SEEDER].handle_peer_connected(s.ids[1], s.now);
    s.nodes[1].handle_peer_connected(s.ids[SEEDER], s.now);
    s.nodes[SEEDER].publish_release(signed, s.now, 0).unwrap();
    s.drive();
    assert_eq!(s.complete[1].len(), 1);
    s.corrupt.insert(1);
    s.connect_all();
    s.drive();
    for i in 2..4 {
        assert_eq!(s.complete[i].len(), 1, "node {i} incomplete");
        assert!(
            s.nodes[i].stats().chunks_rejected >= 1,
            "node {i} never met the corrupt peer"
        );
        assert!(s.misbehaved.contains(&(i, s.ids[1])));
    }
}

#[test]
fn release_from_untrusted_seeder_is_ignored() {
    let k = key();
    let other = key();
    let (mut s, signed) = Swarm::new(3, &[blob(1000, 1)], &k, other.public().to_peer_id());
    s.connect_all();
    assert!(matches!(
        s.nodes[SEEDER].publish_release(signed.clone(), s.now, 0),
        Err(ReleaseError::Untrusted(_))
    ));
    assert!(matches!(
        s.nodes[1].handle_release(signed, s.now, 0),
        Err(ReleaseError::Untrusted(_))
    ));
    s.drive();
    assert_eq!(s.nodes[1].release_ids().count(), 0);
    assert_eq!(s.nodes[1].stats().releases_rejected, 1);
}

/// Node 1 downloads everything from the seeder, then dies silently; node 2 then connects
/// to both and sends requests into the void.
fn node_one_dies_after_completing(chunks: usize, seed: u8) -> Swarm {
    let k = key();
    let blobs = vec![blob(chunks * MIN_CHUNK_SIZE as usize, seed)];
    let (mut s, signed) = Swarm::new(3, &blobs, &k, k.public().to_peer_id());
    s.nodes[SEEDER].handle_peer_connected(s.ids[1], s.now);
    s.nodes[1].handle_peer_connected(s.ids[SEEDER], s.now);
    s.nodes[SEEDER].publish_release(signed, s.now, 0).unwrap();
    s.drive();
    assert_eq!(s.complete[1].len(), 1, "node 1 should complete first");
    s.dead.insert(1);
    s.nodes[2].handle_peer_connected(s.ids[1], s.now);
    s.nodes[2].handle_peer_connected(s.ids[SEEDER], s.now);
    s.nodes[SEEDER].handle_peer_connected(s.ids[2], s.now);
    s.drive();
    s
}

#[test]
fn requests_to_a_dead_peer_time_out_and_go_elsewhere() {
    let mut s = node_one_dies_after_completing(8, 11);
    assert!(s.complete[2].is_empty() || !s.black_holed.is_empty());
    // Node 2 learned node 1 has chunks only if a Have got through; either way, after the
    // request timeout everything must come from the seeder.
    let deadline = s.nodes[2].poll_timeout().expect("a timer is armed");
    assert!(deadline <= s.now + Config::default().request_timeout);
    s.now += Config::default().request_timeout + Duration::from_millis(1);
    s.nodes[2].handle_timeout(s.now);
    s.drive();
    assert_eq!(
        s.complete[2].len(),
        1,
        "node 2 did not complete after timeouts"
    );
}

#[test]
fn disconnect_requeues_outstanding_chunks() {
    let mut s = node_one_dies_after_completing(6, 13);
    s.nodes[2].handle_peer_disconnected(&s.ids[1], s.now);
    s.drive();
    assert_eq!(s.complete[2].len(), 1);
}

#[test]
fn super_seeder_hands_each_chunk_out_once_before_any_twice() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let (mut s, signed) = Swarm::new(1, &[blob(3 * cs, 17)], &k, k.public().to_peer_id());
    let mut seeder = Node::new(
        Config::default().with_super_seed(true),
        TrustedSeeders::new([k.public().to_peer_id()]),
    )
    .unwrap();
    let map = chunk_map_of(&blob(3 * cs, 17), MIN_CHUNK_SIZE).unwrap();
    let b = map.blob();
    seeder.add_local_blob(map, "x", s.now);
    seeder.publish_release(signed, s.now, 0).unwrap();
    let (a, c) = (PeerId::random(), PeerId::random());
    let ask = |n: &mut Node<PeerId>, p: &PeerId, index: u32, now: Instant| {
        n.handle_request(p, Request::Chunk { blob: b, index }, now)
    };
    assert!(matches!(
        ask(&mut seeder, &a, 0, s.now),
        Inbound::ServeChunk { index: 0, .. }
    ));
    // Chunk 0 was handed out and chunks 1 and 2 never were: decline.
    assert_eq!(
        ask(&mut seeder, &c, 0, s.now),
        Inbound::Respond(Response::Error(ErrorCode::Busy))
    );
    assert!(matches!(
        ask(&mut seeder, &c, 1, s.now),
        Inbound::ServeChunk { index: 1, .. }
    ));
    assert!(matches!(
        ask(&mut seeder, &c, 2, s.now),
        Inbound::ServeChunk { index: 2, .. }
    ));
    // Every chunk out once: a second copy of any is fine.
    assert!(matches!(
        ask(&mut seeder, &c, 0, s.now),
        Inbound::ServeChunk { index: 0, .. }
    ));
    // Chunk 0 now twice, others once: declined again, but only within the window.
    assert_eq!(
        ask(&mut seeder, &a, 0, s.now),
        Inbound::Respond(Response::Error(ErrorCode::Busy))
    );
    s.now += Config::default().super_seed_window;
    assert!(matches!(
        ask(&mut seeder, &a, 0, s.now),
        Inbound::ServeChunk { index: 0, .. }
    ));
    // Without super-seeding, nothing is ever declined.
    let mut plain = Node::new(Config::default(), TrustedSeeders::default()).unwrap();
    plain.add_local_blob(
        chunk_map_of(&blob(3 * cs, 17), MIN_CHUNK_SIZE).unwrap(),
        "x",
        s.now,
    );
    for _ in 0..3 {
        assert!(matches!(
            ask(&mut plain, &a, 0, s.now),
            Inbound::ServeChunk { .. }
        ));
    }
}

#[test]
fn busy_answer_moves_on_to_another_chunk_without_backing_off_the_peer() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let (mut s, signed) = Swarm::new(2, &[blob(4 * cs, 19)], &k, k.public().to_peer_id());
    let now = s.now;
    let seeder = s.ids[SEEDER];
    let node = &mut s.nodes[1];
    node.handle_peer_connected(seeder, now);
    node.handle_release(signed, now, 0).unwrap();
    // Drain: releases sync and chunk-map request; answer the map request.
    let map_req = chunk_map_request(node);
    let map = chunk_map_of(&blob(4 * cs, 19), MIN_CHUNK_SIZE).unwrap();
    node.handle_response(map_req, Response::ChunkMap(map), now, 0);
    let mut asked = Vec::new();
    while let Some(a) = node.poll_action() {
        if let Action::Send {
            id,
            request: Request::Chunk { index, .. },
            ..
        } = a
        {
            asked.push((id, index));
        }
    }
    assert_eq!(
        asked.len(),
        Config::default().max_requests_per_peer,
        "pipelined requests to the seeder"
    );
    let (busy_id, busy_index) = asked[0];
    node.handle_response(busy_id, Response::Error(ErrorCode::Busy), now, 0);
    let next: Vec<u32> = std::iter::from_fn(|| node.poll_action())
        .filter_map(|a| match a {
            Action::Send {
                request: Request::Chunk { index, .. },
                ..
            } => Some(index),
            _ => None,
        })
        .collect();
    assert_eq!(
        next.len(),
        1,
        "the freed slot is reused at once (no back-off)"
    );
    assert_ne!(
        next[0], busy_index,
        "the declined chunk is not asked again right away"
    );
    assert!(
        node.poll_timeout()
            .is_some_and(|t| t <= now + Config::default().busy_backoff)
    );
    assert_eq!(node.stats().requests_failed, 0, "Busy is not a failure");
}

#[test]
fn endgame_duplicates_the_last_chunk_and_drops_the_loser() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let data = blob(3 * cs, 23);
    let (s, signed) = Swarm::new(1, std::slice::from_ref(&data), &k, k.public().to_peer_id());
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let mut fresh = Node::new(
        Config::default(),
        TrustedSeeders::new([k.public().to_peer_id()]),
    )
    .unwrap();
    let node = &mut fresh;
    let now = s.now;
    let (slow, fast) = (PeerId::random(), PeerId::random());
    node.handle_release(signed, now, 0).unwrap();
    node.handle_peer_connected(slow, now);
    let drain = |n: &mut Node<PeerId>| -> Vec<(PeerId, RequestId, Request)> {
        std::iter::from_fn(|| n.poll_action())
            .filter_map(|a| match a {
                Action::Send { peer, id, request } => Some((peer, id, request)),
                _ => None,
            })
            .collect()
    };
    let have_all = |n: &mut Node<PeerId>, p: PeerId| {
        n.handle_request(
            &p,
            Request::Have {
                blob: map.blob(),
                update: HaveUpdate::Full(Bitfield::full(3)),
            },
            now,
        );
    };
    have_all(node, slow);
    let map_req = drain(node)
        .into_iter()
        .find(|(_, _, r)| matches!(r, Request::ChunkMap { .. }))
        .expect("chunk map requested")
        .1;
    node.handle_response(map_req, Response::ChunkMap(map.clone()), now, 0);
    // Two slots at the slow peer: chunks A and B go out; the third waits for a slot.
    let first = drain(node);
    assert_eq!(first.len(), 2);
    let chunk_of = |r: &Request| match r {
        Request::Chunk { index, .. } => *index,
        other => panic!("expected a chunk request, got {other:?}"),
    };
    // Answer one: the last chunk is requested, now all three are in flight at the slow peer.
    node.handle_chunk(first[0].1, ChunkOutcome::Stored, now);
    let third = drain(node);
    assert_eq!(third.len(), 1);
    // A fast peer arrives holding everything: endgame duplicates outstanding chunks to it.
    node.handle_peer_connected(fast, now);
    have_all(node, fast);
    let dups: Vec<_> = drain(node)
        .into_iter()
        .filter(|(p, _, r)| *p == fast && matches!(r, Request::Chunk { .. }))
        .collect();
    assert_eq!(
        dups.len(),
        2,
        "both outstanding chunks duplicated to the idle fast peer"
    );
    let slow_ids: Vec<(RequestId, u32)> = std::iter::once(&first[1])
        .chain(&third)
        .map(|(_, id, r)| (*id, chunk_of(r)))
        .collect();
    for (_, id, r) in &dups {
        assert!(slow_ids.iter().any(|(_, i)| *i == chunk_of(r)));
        node.handle_chunk(*id, ChunkOutcome::Stored, now);
    }
    // The slow peer's answers are now unwanted: no target, so the driver never hashes them.
    for (id, _) in &slow_ids {
        assert!(
            node.chunk_target(*id).is_none(),
            "loser of the endgame race is dropped"
        );
        node.handle_chunk(*id, ChunkOutcome::Stored, now); // a late answer changes nothing
    }
    assert!(node.release_complete(&node.release_ids().next().copied().unwrap()));
    assert_eq!(
        node.stats().bytes_from_peers,
        data.len() as u64,
        "each chunk counted once"
    );
}

#[test]
fn upload_slots_cap_serving_per_peer_and_in_total_until_uploads_finish() {
    let (mut node, b, now) = serving_node(3, 2, 29);
    let (a, c) = (PeerId::random(), PeerId::random());
    node.handle_peer_connected(a, now);
    node.handle_peer_connected(c, now);
    let mut ask = |p: &PeerId, index: u32| node_ask(&mut node, p, b, index, now);
    assert!(ask(&a, 0));
    assert!(ask(&a, 1));
    assert!(
        !ask(&a, 2),
        "third upload to one peer exceeds the per-peer cap"
    );
    assert!(ask(&c, 2));
    assert!(!ask(&c, 3), "fourth upload exceeds the total cap");
    node.handle_upload_done(&a, now);
    assert!(
        node_ask(&mut node, &c, b, 3, now),
        "a finished upload frees a slot"
    );
}

/// Drains the node's actions and returns its one chunk-map request.
fn chunk_map_request(node: &mut Node<PeerId>) -> RequestId {
    let ids: Vec<RequestId> = std::iter::from_fn(|| node.poll_action())
        .filter_map(|a| match a {
            Action::Send {
                id,
                request: Request::ChunkMap { .. },
                ..
            } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "one chunk-map request");
    ids[0]
}

/// A node serving one locally held blob of 8 chunks, with the given upload-slot caps.
fn serving_node(max_uploads: usize, per_peer: usize, seed: u8) -> (Node<PeerId>, Digest, Instant) {
    let data = blob(8 * MIN_CHUNK_SIZE as usize, seed);
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let b = map.blob();
    let config = Config {
        max_uploads,
        max_uploads_per_peer: per_peer,
        ..Config::default()
    };
    let mut node = Node::new(config, TrustedSeeders::default()).unwrap();
    let now = Instant::now();
    node.add_local_blob(map, "x", now);
    (node, b, now)
}

fn node_ask(node: &mut Node<PeerId>, p: &PeerId, blob: Digest, index: u32, now: Instant) -> bool {
    match node.handle_request(p, Request::Chunk { blob, index }, now) {
        Inbound::ServeChunk { .. } => true,
        Inbound::Respond(Response::Error(ErrorCode::Overloaded)) => false,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn overloaded_answer_backs_the_peer_off_briefly_without_failure() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let data = blob(4 * cs, 31);
    let (s, signed) = Swarm::new(1, std::slice::from_ref(&data), &k, k.public().to_peer_id());
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let mut node = Node::new(
        Config::default(),
        TrustedSeeders::new([k.public().to_peer_id()]),
    )
    .unwrap();
    let now = s.now;
    let seeder = k.public().to_peer_id();
    node.handle_peer_connected(seeder, now);
    node.handle_release(signed, now, 0).unwrap();
    let map_req = chunk_map_request(&mut node);
    node.handle_response(map_req, Response::ChunkMap(map), now, 0);
    let chunk_reqs: Vec<RequestId> = std::iter::from_fn(|| node.poll_action())
        .filter_map(|a| match a {
            Action::Send {
                id,
                request: Request::Chunk { .. },
                ..
            } => Some(id),
            _ => None,
        })
        .collect();
    assert!(!chunk_reqs.is_empty());
    node.handle_response(
        chunk_reqs[0],
        Response::Error(ErrorCode::Overloaded),
        now,
        0,
    );
    assert!(
        std::iter::from_fn(|| node.poll_action()).all(|a| !matches!(
            a,
            Action::Send {
                request: Request::Chunk { .. },
                ..
            }
        )),
        "no new request to an overloaded peer right away"
    );
    let wake = node.poll_timeout().expect("back-off timer armed");
    assert!(wake <= now + Config::default().overload_backoff);
    node.handle_timeout(now + Config::default().overload_backoff);
    let again = std::iter::from_fn(|| node.poll_action())
        .filter(|a| {
            matches!(
                a,
                Action::Send {
                    request: Request::Chunk { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(again, 1, "asked again after the short back-off");
    assert_eq!(node.stats().requests_failed, 0);
}

/// Chunk requests in the order the node sent them, as (peer, index).
fn chunk_sends(node: &mut Node<PeerId>) -> Vec<(PeerId, RequestId, u32)> {
    std::iter::from_fn(|| node.poll_action())
        .filter_map(|a| match a {
            Action::Send {
                peer,
                id,
                request: Request::Chunk { index, .. },
            } => Some((peer, id, index)),
            _ => None,
        })
        .collect()
}

#[test]
fn rarest_chunks_are_asked_first() {
    // Three neighbours: `a` holds chunks 0..8, `b` 0..4, `c` 0..2, so chunks 4..8 are the
    // rarest (1 holder), 2..4 next (2), 0..2 the most common (3).
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let data = blob(8 * cs, 37);
    let (s, signed) = Swarm::new(1, std::slice::from_ref(&data), &k, k.public().to_peer_id());
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let digest = map.blob();
    let config = Config {
        max_requests_per_peer: 1,
        max_requests_total: 3,
        ..Config::default()
    };
    let mut node = Node::new(config, TrustedSeeders::new([k.public().to_peer_id()])).unwrap();
    let now = s.now;
    let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
    for (p, held) in [(a, 8u32), (b, 4), (c, 2)] {
        node.handle_peer_connected(p, now);
        let mut bits = Bitfield::new(8);
        for i in 0..held {
            bits.set(i);
        }
        let have = Request::Have {
            blob: digest,
            update: HaveUpdate::Full(bits),
        };
        assert_eq!(
            node.handle_request(&p, have, now),
            Inbound::Respond(Response::Ack)
        );
    }
    node.handle_release(signed, now, 0).unwrap();
    let map_req = chunk_map_request(&mut node);
    node.handle_response(map_req, Response::ChunkMap(map), now, 0);
    let first = chunk_sends(&mut node);
    assert_eq!(first.len(), 3, "one request per neighbour: {first:?}");
    for (peer, _, index) in &first {
        let expected = if *peer == a {
            4..8
        } else if *peer == b {
            2..4
        } else {
            0..2
        };
        assert!(
            expected.contains(index),
            "each neighbour is asked for the rarest chunk it holds: {first:?}"
        );
    }
    // Feed `a`'s answers back: it keeps being asked for the rare chunks 4..8 first, each
    // once, and only then for the commoner chunks the others do not have in flight.
    let mut from_a = vec![first.iter().find(|(p, ..)| *p == a).unwrap().2];
    let mut pending = first.iter().find(|(p, ..)| *p == a).unwrap().1;
    for _ in 0..3 {
        node.handle_chunk(pending, ChunkOutcome::Stored, now);
        let next = chunk_sends(&mut node);
        assert_eq!(next.len(), 1, "{next:?}");
        assert_eq!(next[0].0, a);
        from_a.push(next[0].2);
        pending = next[0].1;
    }
    from_a.sort_unstable();
    assert_eq!(from_a, vec![4, 5, 6, 7], "rare chunks first, none twice");
}

#[test]
fn super_seeder_least_served_count_tracks_every_level() {
    // The least-served level is kept incrementally; check it against a recount as chunks
    // are handed out unevenly.
    let cs = MIN_CHUNK_SIZE as usize;
    let data = blob(5 * cs, 41);
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let mut state = BlobState::new(release_blob(&map, "x"));
    state.have = Bitfield::full(5);
    let now = Instant::now();
    let window = Duration::from_secs(5);
    let later = now + 2 * window;
    for (index, at) in [(0, now), (0, later), (1, now), (2, now), (3, now), (4, now)] {
        state.super_seed_admit(index, at, window, None);
        let recount = state.served.iter().map(|(n, _)| *n).min().unwrap();
        assert_eq!(state.served_least, recount);
    }
    assert_eq!(state.served_least, 1);
    assert!(
        state.super_seed_admit(1, now, window, None),
        "every chunk is at the least level, so any may go out again"
    );
    assert!(
        !state.super_seed_admit(1, now, window, None),
        "chunk 1 is now above the least level and was just handed out"
    );
}

/// A node with the herd guard that knows the release and chunk map of `data` but has no
/// neighbours left (its only one served the map and went away): every chunk is an orphan.
fn orphaned_node(data: &[u8], seed: u8) -> (Node<PeerId>, PeerId, Digest, Instant) {
    let k = key();
    let (s, signed) = Swarm::new(1, &[data.to_vec()], &k, k.public().to_peer_id());
    let map = chunk_map_of(data, MIN_CHUNK_SIZE).unwrap();
    let me = PeerId::random();
    let config = Config {
        herd: Some(HerdConfig::new(me.to_bytes())),
        rng_seed: u64::from(seed),
        ..Config::default()
    };
    let mut node = Node::new(config, TrustedSeeders::new([k.public().to_peer_id()])).unwrap();
    let now = s.now;
    let helper = PeerId::random();
    node.handle_peer_connected(helper, now);
    node.handle_release(signed, now, 0).unwrap();
    let map_req = chunk_map_request(&mut node);
    let digest = map.blob();
    node.handle_response(map_req, Response::ChunkMap(map), now, 0);
    node.handle_peer_disconnected(&helper, now);
    while node.poll_action().is_some() {}
    (node, me, digest, now)
}

/// Runs the node's timers up to `until`, returning its claims and registry fetches.
fn run_timers(node: &mut Node<PeerId>, until: Instant) -> (Vec<u32>, Vec<(RequestId, u32)>) {
    let (mut claims, mut fetches) = (Vec::new(), Vec::new());
    while let Some(t) = node.poll_timeout().filter(|t| *t <= until) {
        node.handle_timeout(t);
        while let Some(a) = node.poll_action() {
            match a {
                Action::Notice(SwarmNotice::Claim { indices, .. }) => claims.extend(indices),
                Action::FetchRegistry { id, index, .. } => fetches.push((id, index)),
                _ => {}
            }
        }
    }
    (claims, fetches)
}

#[test]
fn herd_guard_claims_then_fetches_each_orphan_once_and_completes() {
    let data = blob(5 * MIN_CHUNK_SIZE as usize, 43);
    let (mut node, _, _, start) = orphaned_node(&data, 1);
    let cfg = HerdConfig::new(vec![]);
    // Nothing before the seeder has been silent for `after` plus the grace time.
    let (claims, fetches) = run_timers(&mut node, start + cfg.after);
    assert!(claims.is_empty() && fetches.is_empty());
    let end = start + cfg.after + cfg.scan_interval + cfg.grace + cfg.spread + cfg.settle;
    let (mut claims, fetches) = run_timers(&mut node, end + Duration::from_secs(1));
    claims.sort_unstable();
    assert_eq!(claims, vec![0, 1, 2, 3, 4], "every orphan claimed once");
    let mut fetched: Vec<u32> = fetches.iter().map(|(_, i)| *i).collect();
    fetched.sort_unstable();
    assert_eq!(fetched, vec![0, 1, 2, 3, 4], "and fetched once");
    let now = end + Duration::from_secs(1);
    for (id, _) in fetches {
        assert!(
            node.chunk_target(id).is_some(),
            "a registry fetch is verified like a chunk"
        );
        node.handle_chunk(id, ChunkOutcome::Stored, now);
    }
    let done =
        std::iter::from_fn(|| node.poll_action()).any(|a| matches!(a, Action::ReleaseComplete(_)));
    assert!(done);
    assert_eq!(node.stats().registry_fetches, 5);
    assert_eq!(node.stats().bytes_from_registry, data.len() as u64);
    // Nothing more to claim or fetch once complete.
    let (claims, fetches) = run_timers(&mut node, now + Duration::from_secs(120));
    assert!(claims.is_empty() && fetches.is_empty());
}

#[test]
fn herd_guard_yields_to_a_higher_scoring_claim_and_waits_for_an_earlier_one() {
    let data = blob(16 * MIN_CHUNK_SIZE as usize, 47);
    let (mut node, me, digest, start) = orphaned_node(&data, 2);
    let cfg = HerdConfig::new(vec![]);
    // A rival whose scores beat ours on some of chunks 8..16 and lose on others.
    let wins = |r: &PeerId| {
        (8..16)
            .filter(|i| {
                claim_score(&me.to_bytes(), &digest, *i) > claim_score(&r.to_bytes(), &digest, *i)
            })
            .count()
    };
    let rival = std::iter::repeat_with(PeerId::random)
        .find(|r| (1..8).contains(&wins(r)))
        .unwrap();
    // The rival claims every chunk early, before this node is due for any: this node must
    // wait for it on every chunk, whatever the scores.
    let early = start + cfg.after;
    run_timers(&mut node, early);
    node.handle_notice(
        &rival,
        SwarmNotice::Claim {
            blob: digest,
            indices: (0..8).collect(),
        },
        early,
    );
    // Chunks 8..16: the rival claims each one the moment this node does (gossip crossing
    // in flight); only chunks where our score is higher may be fetched by us.
    let due_all = early + cfg.scan_interval + cfg.grace + cfg.spread + cfg.settle;
    let mut t = early;
    let mut fetched = Vec::new();
    while t < due_all + cfg.scan_interval {
        t += Duration::from_millis(50);
        let (claims, fetches) = run_timers(&mut node, t);
        assert!(
            claims.iter().all(|i| *i >= 8),
            "claimed a chunk someone else claimed first: {claims:?}"
        );
        if !claims.is_empty() {
            node.handle_notice(
                &rival,
                SwarmNotice::Claim {
                    blob: digest,
                    indices: claims,
                },
                t,
            );
        }
        fetched.extend(fetches.iter().map(|(_, i)| *i));
    }
    fetched.sort_unstable();
    let expected: Vec<u32> = (8..16)
        .filter(|i| {
            claim_score(&me.to_bytes(), &digest, *i) > claim_score(&rival.to_bytes(), &digest, *i)
        })
        .collect();
    assert!(
        !expected.is_empty() && expected.len() < 8,
        "scores split the chunks"
    );
    assert_eq!(
        fetched, expected,
        "fetch only where our claim out-scores the rival's"
    );
    // The rival never delivers: after the claim TTL this node claims the rest itself.
    let (claims, _) = run_timers(
        &mut node,
        due_all + cfg.claim_ttl + cfg.spread + cfg.grace + 2 * cfg.settle,
    );
    assert!(
        claims.iter().any(|i| *i < 8),
        "a void claim is taken over: {claims:?}"
    );
}

#[test]
fn herd_guard_stops_yielding_to_claims_that_never_deliver() {
    // Issue #18 finding 8: a rogue grinds keys until its score beats ours, then claims
    // the orphan again each time its claim goes void, and never fetches.
    let data = blob(MIN_CHUNK_SIZE as usize, 53);
    let (mut node, me, digest, start) = orphaned_node(&data, 3);
    let cfg = HerdConfig::new(vec![]);
    let mine = claim_score(&me.to_bytes(), &digest, 0);
    let rogue = std::iter::repeat_with(PeerId::random)
        .find(|r| claim_score(&r.to_bytes(), &digest, 0) > mine)
        .unwrap();
    let bound = start
        + cfg.after
        + cfg.scan_interval
        + cfg.grace
        + cfg.spread
        + cfg.claim_ttl * u32::from(super::herd::MAX_YIELDS)
        + cfg.settle
        + Duration::from_secs(2);
    let (mut t, mut fetched_at) = (start, None);
    while t < bound + cfg.claim_ttl && fetched_at.is_none() {
        t += Duration::from_millis(500);
        node.handle_notice(
            &rogue,
            SwarmNotice::Claim {
                blob: digest,
                indices: vec![0],
            },
            t,
        );
        let (_, fetches) = run_timers(&mut node, t);
        if !fetches.is_empty() {
            fetched_at = Some(t);
        }
    }
    let at = fetched_at.expect("the orphan is fetched despite the rogue's claims");
    assert!(
        at <= bound,
        "fetched {:?} after the start, bound {:?}",
        at - start,
        bound - start
    ); // Each claim waited for went void; the last live one was gone past, and counted.
    let stats = node.stats();
    assert!(
        stats.herd_claims_expired >= 1,
        "expired claims {}",
        stats.herd_claims_expired
    );
    assert!(stats.herd_claims_overridden >= 1, "{stats:?}");
}

#[test]
fn herd_guard_sleeps_while_the_seeder_is_heard() {
    let data = blob(3 * MIN_CHUNK_SIZE as usize, 53);
    let (mut node, _, _, start) = orphaned_node(&data, 3);
    // orphaned_node signs with its own fresh key; learn that seeder id from the release.
    let seeder = {
        let id = *node.release_ids().next().unwrap();
        PeerId::from_bytes(&node.release(&id).unwrap().seeder).unwrap()
    };
    let mut now = start;
    for _ in 0..60 {
        now += Duration::from_secs(2);
        node.handle_notice(&seeder, SwarmNotice::SeederAlive, now);
        let (claims, fetches) = run_timers(&mut node, now);
        assert!(
            claims.is_empty() && fetches.is_empty(),
            "claimed while the seeder is alive"
        );
    }
    // A stranger's "alive" notice does not count.
    let stranger = PeerId::random();
    for _ in 0..30 {
        now += Duration::from_secs(1);
        node.handle_notice(&stranger, SwarmNotice::SeederAlive, now);
    }
    let (claims, _) = run_timers(&mut node, now + Duration::from_secs(30));
    assert!(
        !claims.is_empty(),
        "the guard woke once the seeder went silent"
    );
}

#[test]
fn freed_upload_slots_rotate_to_refused_peers_in_turn() {
    let (mut node, b, now) = serving_node(2, 2, 59);
    let reservation = Config::default().slot_reservation;
    let (a, bp, c) = (PeerId::random(), PeerId::random(), PeerId::random());
    for p in [a, bp, c] {
        node.handle_peer_connected(p, now);
    }
    // `a` takes both slots; `bp` then `c` are refused and queue up in that order.
    assert!(node_ask(&mut node, &a, b, 0, now));
    assert!(node_ask(&mut node, &a, b, 1, now));
    assert!(!node_ask(&mut node, &bp, b, 2, now));
    assert!(!node_ask(&mut node, &c, b, 3, now));
    // A slot frees: it is held for `bp`, the peer refused first; `a` asking again at once
    // (the greedy pattern) and `c` are refused.
    node.handle_upload_done(&a, now);
    assert!(
        !node_ask(&mut node, &a, b, 4, now),
        "the freed slot is held"
    );
    assert!(!node_ask(&mut node, &c, b, 3, now), "not c's turn yet");
    assert!(node_ask(&mut node, &bp, b, 2, now), "bp gets its turn");
    // Next freed slot goes to `c`, then `a` (refused while the slots were held).
    node.handle_upload_done(&a, now);
    assert!(!node_ask(&mut node, &bp, b, 5, now));
    assert!(node_ask(&mut node, &c, b, 3, now), "c's turn");
    node.handle_upload_done(&bp, now);
    assert!(node_ask(&mut node, &a, b, 4, now), "a's turn after waiting");
    // A held slot whose peer does not come back in time goes to whoever asks.
    node.handle_upload_done(&c, now);
    let later = now + reservation + Duration::from_millis(1);
    assert!(
        node_ask(&mut node, &c, b, 6, later),
        "an expired hold goes to whoever asks"
    );
}

#[test]
fn blob_cap_finishes_started_blobs_before_starting_more() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let blobs = [blob(6 * cs, 61), blob(6 * cs, 62), blob(6 * cs, 63)];
    let (s, signed) = Swarm::new(1, &blobs, &k, k.public().to_peer_id());
    let config = Config {
        max_active_blobs: Some(1),
        max_requests_per_peer: 4,
        max_requests_total: 4,
        ..Config::default()
    };
    let mut node = Node::new(config, TrustedSeeders::new([k.public().to_peer_id()])).unwrap();
    let now = s.now;
    let seeder = k.public().to_peer_id();
    node.handle_peer_connected(seeder, now);
    node.handle_release(signed, now, 0).unwrap();
    let maps: HashMap<Digest, ChunkMap> = blobs
        .iter()
        .map(|b| {
            let m = chunk_map_of(b, MIN_CHUNK_SIZE).unwrap();
            (m.blob(), m)
        })
        .collect();
    let map_reqs: Vec<(RequestId, Digest)> = std::iter::from_fn(|| node.poll_action())
        .filter_map(|a| match a {
            Action::Send {
                id,
                request: Request::ChunkMap { blob },
                ..
            } => Some((id, blob)),
            _ => None,
        })
        .collect();
    assert_eq!(map_reqs.len(), 3);
    for (id, b) in map_reqs {
        node.handle_response(id, Response::ChunkMap(maps[&b].clone()), now, 0);
    }
    // Answer every request as it comes; the order of blobs completed must be strict.
    let mut order: Vec<Digest> = Vec::new();
    let mut pending: VecDeque<(RequestId, Digest)> = VecDeque::new();
    loop {
        while let Some(a) = node.poll_action() {
            match a {
                Action::Send {
                    id,
                    request: Request::Chunk { blob, .. },
                    ..
                } => {
                    if order.last() != Some(&blob) {
                        assert!(!order.contains(&blob), "went back to a blob");
                        order.push(blob);
                    }
                    pending.push_back((id, blob));
                }
                Action::BlobComplete(b) => assert_eq!(order.last(), Some(&b)),
                _ => {}
            }
        }
        let Some((id, _)) = pending.pop_front() else {
            break;
        };
        node.handle_chunk(id, ChunkOutcome::Stored, now);
    }
    assert_eq!(order.len(), 3, "each blob in turn, one at a time");
    assert!(node.progress().iter().all(|p| p.complete));
}

#[test]
fn claims_are_kept_only_for_chunks_being_downloaded() {
    let data = blob(4 * MIN_CHUNK_SIZE as usize, 67);
    let (mut node, _, digest, now) = orphaned_node(&data, 4);
    let stranger = PeerId::random();
    let claim = |blob, indices| SwarmNotice::Claim { blob, indices };
    node.handle_notice(
        &stranger,
        claim(Digest::of(b"made up"), (0..4096).collect()),
        now,
    );
    node.handle_notice(&stranger, claim(digest, vec![4, 5, 4095]), now);
    assert_eq!(
        node.claims_known(),
        0,
        "unknown blob and out-of-range indices ignored"
    );
    node.handle_notice(&stranger, claim(digest, vec![0, 3]), now);
    assert_eq!(node.claims_known(), 2);
}

/// Drains the node's actions and returns the have-updates it sent to `to`.
fn haves_to(node: &mut Node<PeerId>, to: &PeerId) -> Vec<HaveUpdate> {
    std::iter::from_fn(|| node.poll_action())
        .filter_map(|a| match a {
            Action::Send {
                peer,
                request: Request::Have { update, .. },
                ..
            } if peer == *to => Some(update),
            _ => None,
        })
        .collect()
}

#[test]
fn chunks_verified_within_the_have_batch_window_are_announced_in_one_update() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let data = blob(8 * cs, 43);
    let (s, signed) = Swarm::new(1, std::slice::from_ref(&data), &k, k.public().to_peer_id());
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let digest = map.blob();
    let batch = Duration::from_millis(100);
    let config = Config {
        have_batch: batch,
        max_requests_per_peer: 4,
        max_requests_total: 4,
        ..Config::default()
    };
    let mut node = Node::new(config, TrustedSeeders::new([k.public().to_peer_id()])).unwrap();
    let t0 = s.now;
    // `a` holds everything; `n` holds nothing and only listens to our announcements.
    let (a, n) = (PeerId::random(), PeerId::random());
    node.handle_peer_connected(a, t0);
    node.handle_peer_connected(n, t0);
    let full = Request::Have {
        blob: digest,
        update: HaveUpdate::Full(Bitfield::full(8)),
    };
    node.handle_request(&a, full, t0);
    node.handle_release(signed, t0, 0).unwrap();
    let map_req = chunk_map_request(&mut node);
    node.handle_response(map_req, Response::ChunkMap(map), t0, 0);
    let asked = chunk_sends(&mut node);
    assert_eq!(asked.len(), 4);

    // The first chunk goes out at once (as the full bitfield `n` is owed).
    node.handle_chunk(asked[0].1, ChunkOutcome::Stored, t0);
    let first = haves_to(&mut node, &n);
    assert!(
        matches!(first.as_slice(), [HaveUpdate::Full(b)] if b.count() == 1),
        "{first:?}"
    );
    // Three more within the window: held back, with a timer at the window's end.
    for (i, (_, id, _)) in asked[1..].iter().enumerate() {
        node.handle_chunk(
            *id,
            ChunkOutcome::Stored,
            t0 + Duration::from_millis(10 * (i as u64 + 1)),
        );
    }
    assert!(
        haves_to(&mut node, &n).is_empty(),
        "held back within the window"
    );
    assert!(node.poll_timeout().is_some_and(|t| t <= t0 + batch));
    node.handle_timeout(t0 + batch);
    let batched = haves_to(&mut node, &n);
    let mut got: Vec<u32> = match batched.as_slice() {
        [HaveUpdate::Added(v)] => v.clone(),
        other => panic!("one update with the three chunks expected, got {other:?}"),
    };
    got.sort_unstable();
    let mut want: Vec<u32> = asked[1..].iter().map(|(_, _, i)| *i).collect();
    want.sort_unstable();
    assert_eq!(got, want);
}

/// A two-node swarm and two releases of one image: `v1` (sequence 1) and `v2`
/// (sequence 2, otherwise the same body, also signed by `k`), with v2's body.
fn two_sequences(k: &Keypair) -> (Swarm, SignedRelease, SignedRelease, Release) {
    let (s, v1) = Swarm::new(2, &[blob(1000, 1)], k, k.public().to_peer_id());
    let trusted = TrustedSeeders::new([k.public().to_peer_id()]);
    let mut newer = v1.verify(&trusted, 0).unwrap();
    newer.sequence = 2;
    let v2 = SignedRelease::sign(&newer, k).unwrap();
    (s, v1, v2, newer)
}

#[test]
fn replayed_older_release_is_refused_and_counted() {
    let k = key();
    let (mut s, v1, v2, newer) = two_sequences(&k);
    let node = &mut s.nodes[1];
    let id2 = node.handle_release(v2.clone(), s.now, 0).unwrap();
    assert!(matches!(
        node.handle_release(v1, s.now, 0),
        Err(ReleaseError::Replayed {
            sequence: 1,
            newest: 2,
            ..
        })
    ));
    // The newer release again is a re-announcement, not a replay.
    assert_eq!(node.handle_release(v2, s.now, 0).unwrap(), id2);
    assert_eq!(node.release_ids().copied().collect::<Vec<_>>(), vec![id2]);
    assert_eq!(node.stats().releases_rejected, 1);
    assert_eq!(node.stats().releases_replayed, 1);
    assert_eq!(
        node.replay_guard().newest(&newer.seeder, &newer.reference),
        Some(2)
    );
}

#[test]
fn a_restarted_node_fetches_only_the_chunks_it_had_not_verified() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let data = blob(10 * cs + 3, 23);
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let (mut s, signed) = Swarm::new(2, std::slice::from_ref(&data), &k, k.public().to_peer_id());
    let mut have = Bitfield::new(map.count());
    for i in [0, 2, 5, 10] {
        have.set(i);
    }
    // The last chunk is the short one: 3 bytes.
    let resumed = 3 * cs as u64 + 3;
    s.nodes[1].resume_blob(map.clone(), have, s.now);
    s.connect_all();
    let id = s.nodes[SEEDER].publish_release(signed, s.now, 0).unwrap();
    s.drive();
    assert_eq!(s.complete[1], vec![id]);
    let st = s.nodes[1].stats();
    assert_eq!(st.bytes_resumed, resumed);
    assert_eq!(st.bytes_from_seeders, data.len() as u64 - resumed);
    assert_eq!(s.served[SEEDER], data.len() as u64 - resumed);
}

#[test]
fn a_fully_resumed_blob_completes_without_requests_and_a_foreign_map_is_ignored() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let (a, b) = (blob(4 * cs, 29), blob(3 * cs, 31));
    let (map_a, map_b) = (
        chunk_map_of(&a, MIN_CHUNK_SIZE).unwrap(),
        chunk_map_of(&b, MIN_CHUNK_SIZE).unwrap(),
    );
    let (mut s, signed) = Swarm::new(2, &[a.clone(), b.clone()], &k, k.public().to_peer_id());
    s.nodes[1].resume_blob(map_a.clone(), Bitfield::full(map_a.count()), s.now);
    // Same blob and size as b, but chunk hashes the release does not sign.
    let forged = ChunkMap::new(
        map_b.blob(),
        map_b.size(),
        MIN_CHUNK_SIZE,
        vec![Digest::of(b"x"); map_b.count() as usize],
    )
    .unwrap();
    s.nodes[1].resume_blob(forged, Bitfield::full(map_b.count()), s.now);
    s.connect_all();
    let id = s.nodes[SEEDER].publish_release(signed, s.now, 0).unwrap();
    s.drive();
    assert_eq!(s.complete[1], vec![id]);
    let st = s.nodes[1].stats();
    assert_eq!(st.bytes_resumed, a.len() as u64);
    assert_eq!(st.bytes_from_seeders, b.len() as u64);
}

#[test]
fn a_full_disk_pauses_the_download_without_blaming_peers_and_it_resumes_later() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let data = blob(12 * cs, 37);
    let (mut s, signed) = Swarm::new(2, std::slice::from_ref(&data), &k, k.public().to_peer_id());
    s.disk_full.insert(1);
    s.connect_all();
    let id = s.nodes[SEEDER].publish_release(signed, s.now, 0).unwrap();
    s.drive();
    let failed = s.nodes[1].stats().store_errors;
    assert!(failed >= 1);
    assert!(
        failed <= Config::default().max_requests_total as u64,
        "paused after the first failures, not spinning: {failed}"
    );
    assert!(s.complete[1].is_empty());
    assert!(s.misbehaved.is_empty(), "a local error is nobody's fault");
    let pause = Config::default().store_error_pause;
    // Still paused just before the pause ends, even when a timer fires.
    s.now += pause - Duration::from_millis(1);
    s.nodes[1].handle_timeout(s.now);
    s.drive();
    assert_eq!(s.nodes[1].stats().store_errors, failed);
    // Space is back: the next timer resumes the download.
    s.disk_full.clear();
    let wake = s.nodes[1].poll_timeout().expect("the pause arms a timer");
    s.now = s.now.max(wake);
    s.nodes[1].handle_timeout(s.now);
    s.drive();
    assert_eq!(s.complete[1], vec![id]);
    assert_eq!(s.nodes[1].stats().bytes_from_seeders, data.len() as u64);
}

#[test]
fn removing_a_complete_release_frees_only_blobs_no_other_release_lists() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let (a, shared, b) = (blob(3 * cs, 51), blob(2 * cs + 5, 52), blob(cs, 53));
    let (mut s, v1) = Swarm::new(2, &[a.clone(), shared.clone()], &k, k.public().to_peer_id());
    let map_b = chunk_map_of(&b, MIN_CHUNK_SIZE).unwrap();
    let map_shared = chunk_map_of(&shared, MIN_CHUNK_SIZE).unwrap();
    s.data.insert(map_b.blob(), b.clone());
    s.nodes[SEEDER].add_local_blob(map_b.clone(), "application/octet-stream", s.now);
    let mut other = v1
        .verify(&TrustedSeeders::new([k.public().to_peer_id()]), 0)
        .unwrap();
    other.reference = "test/image:2".into();
    other.blobs = vec![
        release_blob(&map_b, "application/octet-stream"),
        release_blob(&map_shared, "application/octet-stream"),
    ];
    let v2 = SignedRelease::sign(&other, &k).unwrap();
    s.connect_all();
    let id1 = s.nodes[SEEDER].publish_release(v1, s.now, 0).unwrap();
    let id2 = s.nodes[SEEDER].publish_release(v2, s.now, 0).unwrap();
    s.drive();
    assert!(s.complete[1].contains(&id1) && s.complete[1].contains(&id2));

    let node = &mut s.nodes[1];
    assert!(node.remove_release(&Digest::of(b"unknown")).is_empty());
    let map_a = chunk_map_of(&a, MIN_CHUNK_SIZE).unwrap();
    assert_eq!(
        node.remove_release(&id1),
        vec![map_a.blob()],
        "shared blob kept"
    );
    assert_eq!(node.release_ids().copied().collect::<Vec<_>>(), vec![id2]);
    let mut carried: Vec<Digest> = node.progress().iter().map(|p| p.blob).collect();
    carried.sort();
    let mut want = vec![map_b.blob(), map_shared.blob()];
    want.sort();
    assert_eq!(carried, want);
    // The evicted blob is no longer served; the shared one still is.
    let peer = s.ids[SEEDER];
    let ask = |node: &mut Node<PeerId>, blob| {
        node.handle_request(&peer, Request::Chunk { blob, index: 0 }, s.now)
    };
    assert!(matches!(
        ask(node, map_a.blob()),
        Inbound::Respond(Response::Error(ErrorCode::NotFound))
    ));
    assert!(!matches!(
        ask(node, map_shared.blob()),
        Inbound::Respond(Response::Error(ErrorCode::NotFound))
    ));
}

#[test]
fn an_incomplete_release_is_never_removed() {
    let k = key();
    let (mut s, signed) = Swarm::new(2, &[blob(1000, 61)], &k, k.public().to_peer_id());
    // Node 1 accepts the release but is not connected: nothing downloads.
    let id = s.nodes[1].handle_release(signed, s.now, 0).unwrap();
    assert!(s.nodes[1].remove_release(&id).is_empty());
    assert_eq!(
        s.nodes[1].release_ids().copied().collect::<Vec<_>>(),
        vec![id]
    );
}

#[test]
fn a_superseded_release_is_flagged_and_no_longer_offered_to_peers() {
    let k = key();
    let (mut s, v1, v2, _) = two_sequences(&k);
    let node = &mut s.nodes[1];
    let id1 = node.handle_release(v1.clone(), s.now, 0).unwrap();
    assert!(!node.is_superseded(&id1), "the only release is the newest");
    let offered = |node: &mut Node<PeerId>| -> Vec<SignedRelease> {
        let from = PeerId::random();
        match node.handle_request(&from, Request::Releases, s.now) {
            Inbound::Respond(Response::Releases(list)) => list,
            other => panic!("a release list expected, got {other:?}"),
        }
    };
    assert_eq!(offered(node), vec![v1]);
    let id2 = node.handle_release(v2.clone(), s.now, 0).unwrap();
    assert!(node.is_superseded(&id1));
    assert!(!node.is_superseded(&id2));
    assert!(
        !node.is_superseded(&Digest::of(b"unknown")),
        "unknown is not superseded"
    );
    // Both are still carried (v1 may be half-imported elsewhere), only v2 is offered.
    assert_eq!(node.release_ids().count(), 2);
    assert_eq!(offered(node), vec![v2]);
}

#[test]
fn an_upload_once_seeder_declines_a_chunk_while_its_holder_is_connected() {
    let k = key();
    let cs = MIN_CHUNK_SIZE as usize;
    let data = blob(3 * cs, 19);
    let (s, signed) = Swarm::new(1, std::slice::from_ref(&data), &k, k.public().to_peer_id());
    let mut seeder = Node::new(
        Config::default().with_super_seed(true),
        TrustedSeeders::new([k.public().to_peer_id()]),
    )
    .unwrap();
    assert!(seeder.config.upload_once, "on by default");
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let b = map.blob();
    seeder.add_local_blob(map, "x", s.now);
    seeder.publish_release(signed, s.now, 0).unwrap();
    let (a, c) = (PeerId::random(), PeerId::random());
    seeder.handle_peer_connected(a, s.now);
    seeder.handle_peer_connected(c, s.now);
    let ask = |n: &mut Node<PeerId>, p: &PeerId, index: u32, now: Instant| {
        n.handle_request(p, Request::Chunk { blob: b, index }, now)
    };
    let busy = Inbound::Respond(Response::Error(ErrorCode::Busy));
    let served = |i: &Inbound| matches!(i, Inbound::ServeChunk { .. });
    assert!(served(&ask(&mut seeder, &a, 0, s.now)));
    seeder.handle_upload_done(&a, s.now);
    assert!(served(&ask(&mut seeder, &c, 1, s.now)));
    seeder.handle_upload_done(&c, s.now);
    assert!(served(&ask(&mut seeder, &c, 2, s.now)));
    seeder.handle_upload_done(&c, s.now);
    // Every chunk went out once; plain super-seeding would now hand chunk 0 to c, but
    // its holder a is connected: c gets it from a.
    assert_eq!(ask(&mut seeder, &c, 0, s.now), busy);
    // Once the holder is gone, the chunk is free at once.
    seeder.handle_peer_disconnected(&a, s.now);
    assert!(served(&ask(&mut seeder, &c, 0, s.now)));
    seeder.handle_upload_done(&c, s.now);
    // A reconnect is a new connection: what c got before no longer blocks anyone...
    seeder.handle_peer_connected(a, s.now);
    assert_eq!(ask(&mut seeder, &a, 1, s.now), busy, "c holds chunk 1");
    // ...but the window ends the hold even for a connected holder.
    let later = s.now + Config::default().super_seed_window;
    assert!(served(&ask(&mut seeder, &a, 1, later)));
    // Off, plain super-seeding serves a second copy once every chunk had one.
    let mut plain_cfg = Config::default().with_super_seed(true);
    plain_cfg.upload_once = false;
    let mut plain = Node::new(plain_cfg, TrustedSeeders::default()).unwrap();
    plain.add_local_blob(chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap(), "x", s.now);
    plain.handle_peer_connected(a, s.now);
    plain.handle_peer_connected(c, s.now);
    for (p, i) in [(&a, 0), (&c, 1), (&c, 2), (&c, 0)] {
        assert!(served(&ask(&mut plain, p, i, s.now)), "chunk {i}");
        plain.handle_upload_done(p, s.now);
    }
}
