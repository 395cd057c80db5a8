//! A neighbour's have-information attacks the node's bookkeeping (issue #18, finding 1):
//! bitfields of the wrong length stored before a blob is known, then used once its chunk
//! map arrives, must neither panic nor be counted.

use std::time::Instant;

use libp2p_identity::{Keypair, PeerId};

use super::haves::MAX_UNKNOWN_HAVES;
use super::*;
use crate::wire::{HaveUpdate, Request};
use crate::{MIN_CHUNK_SIZE, Release, chunk_map_of, release_blob};

fn node_trusting(k: &Keypair) -> Node<PeerId> {
    Node::new(
        Config::default(),
        TrustedSeeders::new([k.public().to_peer_id()]),
    )
    .unwrap()
}

fn have(blob: Digest, update: HaveUpdate) -> Request {
    Request::Have { blob, update }
}

/// A bitfield of `len` chunks with every chunk present.
fn full(len: u32) -> HaveUpdate {
    HaveUpdate::Full(Bitfield::full(len))
}

fn release_of(k: &Keypair, maps: &[&ChunkMap]) -> SignedRelease {
    let blobs = maps
        .iter()
        .map(|m| release_blob(m, "application/octet-stream"))
        .collect();
    let release = Release::minimal("test/image:1", blobs, &k.public().to_peer_id());
    SignedRelease::sign(&release, k).unwrap()
}

fn drain(node: &mut Node<PeerId>) {
    while node.poll_action().is_some() {}
}

/// The availability counts of `blob` match what its neighbours' stored haves say.
fn assert_consistent(node: &Node<PeerId>, blob: &Digest) {
    let state = &node.blobs[blob];
    let Some(map) = &state.map else { return };
    assert_eq!(state.availability.len(), map.count() as usize);
    for (i, a) in state.availability.iter().enumerate() {
        let held = node
            .peers
            .values()
            .filter(|p| !p.is_seeder && p.haves.get(blob).is_some_and(|b| b.get(i as u32)))
            .count();
        assert_eq!(usize::from(*a), held, "availability of chunk {i}");
    }
}

#[test]
fn wrong_length_haves_sent_before_a_local_blob_are_dropped_not_indexed() {
    // The seeder's case from the review: haves of any length for a blob it registers later.
    let k = Keypair::generate_ed25519();
    let data = vec![7u8; 4 * MIN_CHUNK_SIZE as usize];
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let blob = map.blob();
    let mut node = node_trusting(&k);
    let (rogue, t0) = (PeerId::random(), Instant::now());
    node.handle_peer_connected(rogue, t0);
    node.handle_request(&rogue, have(blob, full(1000)), t0);
    node.add_local_blob(map, "application/octet-stream", t0);
    assert!(
        !node.peers[&rogue].haves.contains_key(&blob),
        "long bitfield dropped"
    );
    // Indices past the blob's 4 chunks: ignored, in both update forms.
    node.handle_request(
        &rogue,
        have(blob, HaveUpdate::Added(vec![3, 999, u32::MAX])),
        t0,
    );
    node.handle_request(&rogue, have(blob, full(1000)), t0);
    node.handle_request(&rogue, have(blob, full(3)), t0);
    assert_consistent(&node, &blob);
    // A correct bitfield still counts.
    node.handle_request(&rogue, have(blob, full(4)), t0);
    node.handle_request(&rogue, have(blob, HaveUpdate::Added(vec![999])), t0);
    assert_eq!(node.blobs[&blob].availability, vec![1, 1, 1, 1]);
    assert_consistent(&node, &blob);
    node.handle_peer_disconnected(&rogue, t0);
    assert_eq!(node.blobs[&blob].availability, vec![0, 0, 0, 0]);
}

#[test]
fn wrong_length_haves_sent_before_a_release_are_dropped_when_it_arrives() {
    let k = Keypair::generate_ed25519();
    let data = vec![9u8; 3 * MIN_CHUNK_SIZE as usize + 1];
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let blob = map.blob();
    let mut node = node_trusting(&k);
    let (rogue, honest, t0) = (PeerId::random(), PeerId::random(), Instant::now());
    node.handle_peer_connected(rogue, t0);
    node.handle_peer_connected(honest, t0);
    node.handle_request(&rogue, have(blob, full(77)), t0);
    node.handle_request(&honest, have(blob, full(4)), t0);
    node.handle_release(release_of(&k, &[&map]), t0, 0).unwrap();
    assert!(!node.peers[&rogue].haves.contains_key(&blob));
    assert!(node.peers[&honest].haves.contains_key(&blob));
    // Before the map: a wrong length is refused against the signed entry's chunk count.
    node.handle_request(&rogue, have(blob, full(77)), t0);
    assert!(!node.peers[&rogue].haves.contains_key(&blob));
    node.handle_request(&rogue, have(blob, HaveUpdate::Added(vec![50])), t0);
    // The map arrives (resume path installs it like a peer's would); counts stay in range.
    node.resume_blob(map, Bitfield::new(4), t0);
    node.handle_request(&rogue, have(blob, HaveUpdate::Added(vec![76, 3])), t0);
    drain(&mut node);
    assert_eq!(node.blobs[&blob].availability, vec![1, 1, 1, 1]);
    assert_consistent(&node, &blob);
}

#[test]
fn haves_for_an_empty_blob_never_index_its_empty_availability() {
    let k = Keypair::generate_ed25519();
    let map = chunk_map_of(&[], MIN_CHUNK_SIZE).unwrap();
    assert_eq!(map.count(), 0);
    let blob = map.blob();
    let mut node = node_trusting(&k);
    let (rogue, t0) = (PeerId::random(), Instant::now());
    node.handle_peer_connected(rogue, t0);
    node.handle_request(&rogue, have(blob, full(5)), t0);
    node.handle_release(release_of(&k, &[&map]), t0, 0).unwrap();
    node.handle_request(&rogue, have(blob, HaveUpdate::Added(vec![0, 4])), t0);
    node.handle_request(&rogue, have(blob, full(5)), t0);
    node.handle_request(&rogue, have(blob, full(0)), t0);
    node.handle_request(&rogue, have(blob, HaveUpdate::Added(vec![0])), t0);
    drain(&mut node);
    assert!(node.blobs[&blob].availability.is_empty());
    assert!(node.blobs[&blob].complete);
    node.handle_peer_disconnected(&rogue, t0);
}

#[test]
fn haves_for_made_up_blobs_are_kept_for_a_bounded_number_per_neighbour() {
    let k = Keypair::generate_ed25519();
    let mut node = node_trusting(&k);
    let (rogue, t0) = (PeerId::random(), Instant::now());
    node.handle_peer_connected(rogue, t0);
    for i in 0..MAX_UNKNOWN_HAVES as u32 + 100 {
        let made_up = Digest::of(&i.to_be_bytes());
        node.handle_request(&rogue, have(made_up, full(16)), t0);
    }
    // Longer than any real blob can be: refused even while there is room.
    let huge = Digest::of(b"huge");
    node.handle_request(&rogue, have(huge, full(crate::MAX_CHUNKS + 1)), t0);
    let held = &node.peers[&rogue].haves;
    assert_eq!(held.len(), MAX_UNKNOWN_HAVES);
    assert!(!held.contains_key(&huge));
    assert_eq!(node.stats().haves_refused, 101);
    // A blob already held can still be updated once the bound is reached.
    let first = *held.keys().next().unwrap();
    node.handle_request(&rogue, have(first, full(8)), t0);
    assert_eq!(node.peers[&rogue].haves[&first].len(), 8);
}

#[test]
fn long_bitfields_for_made_up_blobs_are_bounded_in_bytes_per_neighbour() {
    let k = Keypair::generate_ed25519();
    let mut node = node_trusting(&k);
    let (rogue, other, t0) = (PeerId::random(), PeerId::random(), Instant::now());
    node.handle_peer_connected(rogue, t0);
    node.handle_peer_connected(other, t0);
    // 32 KiB each (the longest a real blob's can be): the byte bound holds first.
    for i in 0u32..100 {
        let made_up = Digest::of(&i.to_be_bytes());
        node.handle_request(&rogue, have(made_up, full(crate::MAX_CHUNKS)), t0);
    }
    let bytes: usize = node.peers[&rogue]
        .haves
        .values()
        .map(|b| b.len().div_ceil(8) as usize)
        .sum();
    assert!(bytes <= super::haves::MAX_UNKNOWN_HAVE_BYTES, "{bytes}");
    assert_eq!(node.peers[&rogue].haves.len(), 32);
    // Another neighbour has its own budget.
    node.handle_request(&other, have(Digest::of(b"x"), full(crate::MAX_CHUNKS)), t0);
    assert_eq!(node.peers[&other].haves.len(), 1);
}
