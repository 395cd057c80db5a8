//! The driver on a virtual clock: no socket, no runtime. A small simulator plays the
//! adapter (answers requests of the peers it plays, verifies chunks) and keeps every
//! other output for the test to inspect.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use blobswarm_core::node::{ChunkOutcome, Config, HerdConfig};
use blobswarm_core::store::Resumed;
use blobswarm_core::wire::{ErrorCode, HaveUpdate, PeerRecord, Request, Response};
use blobswarm_core::{
    ChunkMap, Digest, MIN_CHUNK_SIZE, Release, ReleaseId, SignedRelease, TrustedSeeders,
    chunk_map_of, codec, release_blob,
};
use bytes::Bytes;
use libp2p::PeerId;
use libp2p::identity::Keypair;

use super::*;

mod addr_bans;
mod gossip;

const CHUNK: usize = MIN_CHUNK_SIZE as usize;

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

/// A release of `blobs` signed by `key`.
fn release(key: &Keypair, reference: &str, sequence: u64, blobs: &[&[u8]]) -> SignedRelease {
    let blobs = blobs
        .iter()
        .map(|b| release_blob(&chunk_map_of(b, MIN_CHUNK_SIZE).unwrap(), "application/x"))
        .collect();
    let r = Release {
        sequence,
        ..Release::minimal(reference, blobs, &key.public().to_peer_id())
    };
    SignedRelease::sign(&r, key).unwrap()
}

/// Plays the adapter and the peers in `holders` around one driver.
struct Sim {
    d: Driver<PeerId>,
    now: Now,
    seeder: PeerId,
    /// Blobs by digest, with their maps, as every holder serves them.
    data: HashMap<Digest, (Vec<u8>, ChunkMap)>,
    /// Peers the simulator answers for; requests to others stay in `log`.
    holders: HashSet<PeerId>,
    /// Holders whose chunks arrive with a flipped byte.
    corrupt: HashSet<PeerId>,
    /// What a holder answers to a release sync.
    offered: Vec<SignedRelease>,
    /// The store refuses chunk writes.
    disk_full: bool,
    /// Chunk requests answered, by chunk index.
    chunks_fetched: Vec<u32>,
    /// Outputs the simulator did not handle itself.
    log: Vec<Output<PeerId>>,
}

fn config(me: PeerId, seeder: PeerId) -> DriverConfig<PeerId> {
    DriverConfig {
        me,
        node: Config::default().with_rng_seed(7),
        trusted: TrustedSeeders::new([seeder]),
        max_peers: 8,
        import_target: true,
        registry_fallback: false,
        node_name: None,
        enrollment_cert: None,
        collect_reports: false,
        store_max_bytes: None,
    }
}

impl Sim {
    fn new(blobs: &[&[u8]]) -> (Self, SignedRelease) {
        Self::with(blobs, |_| {}, Startup::default())
    }

    fn with(
        blobs: &[&[u8]],
        tune: impl FnOnce(&mut DriverConfig<PeerId>),
        startup: Startup,
    ) -> (Self, SignedRelease) {
        let seeder = key(1).public().to_peer_id();
        let mut cfg = config(key(2).public().to_peer_id(), seeder);
        tune(&mut cfg);
        let now = Now {
            at: Instant::now(),
            unix_ms: 1_000,
        };
        let d = Driver::new(cfg, Box::new(NoHooks), startup, now).unwrap();
        let signed = release(&key(1), "test/image:1", 1, blobs);
        let mut sim = Self {
            d,
            now,
            seeder,
            data: HashMap::new(),
            holders: HashSet::from([seeder]),
            corrupt: HashSet::new(),
            offered: vec![signed.clone()],
            disk_full: false,
            chunks_fetched: Vec::new(),
            log: Vec::new(),
        };
        for b in blobs {
            sim.add_data(b);
        }
        (sim, signed)
    }

    fn add_data(&mut self, b: &[u8]) {
        let map = chunk_map_of(b, MIN_CHUNK_SIZE).unwrap();
        self.data.insert(map.blob(), (b.to_vec(), map));
    }

    fn handle(&mut self, event: Event<PeerId>) {
        self.d.handle(event, self.now);
        self.pump();
    }

    /// Moves the clock and fires every deadline up to it.
    fn advance(&mut self, by: Duration) {
        let until = self.now.at + by;
        while self.d.poll_timeout() <= until {
            let t = self.d.poll_timeout();
            self.now.at = self.now.at.max(t);
            self.now.unix_ms = 1_000 + (self.now.at - self.start()).as_millis() as u64;
            self.handle(Event::Timer);
        }
        self.now.at = until;
    }

    fn start(&self) -> Instant {
        self.now.at - Duration::from_millis(self.now.unix_ms - 1_000)
    }

    /// Executes outputs until the driver is idle.
    fn pump(&mut self) {
        while let Some(output) = self.d.poll_output() {
            match output {
                Output::Send { peer, out, request } if self.holders.contains(&peer) => {
                    let (response, payload) = self.answer(peer, request);
                    self.d.handle(
                        Event::Response {
                            out,
                            response,
                            payload,
                        },
                        self.now,
                    );
                }
                Output::VerifyAndStore {
                    id,
                    map,
                    index,
                    payload,
                } => {
                    let disk_full = self.disk_full;
                    let outcome = ChunkOutcome::verify_then_store(&map, index, &payload, || {
                        if disk_full { Err("disk full") } else { Ok(()) }
                    });
                    let blob = map.blob();
                    self.d
                        .handle(Event::ChunkDone { id, blob, outcome }, self.now);
                }
                other => self.log.push(other),
            }
        }
    }

    fn answer(&mut self, peer: PeerId, request: Request) -> (Response, Bytes) {
        let none = Bytes::new();
        match request {
            Request::Releases => (Response::Releases(self.offered.clone()), none),
            Request::ChunkMap { blob } => match self.data.get(&blob) {
                Some((_, map)) => (Response::ChunkMap(map.clone()), none),
                None => (Response::Error(ErrorCode::NotFound), none),
            },
            Request::Chunk { blob, index } => {
                let (bytes, map) = &self.data[&blob];
                let range = map.range(index).unwrap();
                let mut chunk = bytes[range.start as usize..range.end as usize].to_vec();
                if self.corrupt.contains(&peer) {
                    chunk[0] ^= 1;
                }
                self.chunks_fetched.push(index);
                (Response::Chunk { blob, index }, Bytes::from(chunk))
            }
            Request::Peers => (Response::Peers(vec![]), none),
            Request::Have { .. } => (Response::Ack, none),
        }
    }

    /// Drops what was logged, hands the driver `request` from `peer` and returns the
    /// responses it answered with.
    fn ask(&mut self, peer: PeerId, reply: ReplyId, request: Request) -> Vec<Response> {
        self.take();
        self.handle(Event::Request {
            peer,
            reply,
            request,
        });
        self.responses()
    }

    /// Takes the logged outputs and keeps the responses among them, in order.
    fn responses(&mut self) -> Vec<Response> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Output::Respond { response, .. } => Some(response),
                _ => None,
            })
            .collect()
    }

    /// Takes the logged outputs.
    fn take(&mut self) -> Vec<Output<PeerId>> {
        std::mem::take(&mut self.log)
    }

    fn status(&self) -> Snapshot {
        self.d.snapshot(self.now.at)
    }

    fn imports(&self) -> Vec<ReleaseId> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::Import { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn disconnects(&self) -> Vec<PeerId> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::Disconnect(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    fn complete(&self, id: &ReleaseId) -> bool {
        self.status()
            .releases
            .iter()
            .any(|r| r.id == *id && r.complete)
    }
}

#[test]
fn a_release_from_a_connected_seeder_downloads_finalizes_and_imports() {
    let data = blob(5 * CHUNK, 1);
    let (mut s, signed) = Sim::new(&[&data]);
    s.handle(Event::Connected(s.seeder));
    assert!(s.complete(&signed.id()));
    let mut fetched = s.chunks_fetched.clone();
    fetched.sort_unstable();
    assert_eq!(fetched, vec![0, 1, 2, 3, 4], "each chunk once");
    let saved = s
        .log
        .iter()
        .any(|o| matches!(o, Output::SaveRelease(r) if r.id() == signed.id()));
    assert!(saved, "an accepted release is saved for a restart");
    let finalized = s
        .log
        .iter()
        .any(|o| matches!(o, Output::FinalizeBlob(m) if m.blob() == Digest::of(&data)));
    assert!(finalized);
    assert_eq!(s.imports(), vec![signed.id()]);
    assert_eq!(s.status().chunks_verified, 5);
}

#[test]
fn a_release_arriving_on_gossip_is_accepted_and_a_refused_one_is_forgotten_once() {
    let data = blob(2 * CHUNK, 2);
    let (mut s, signed) = Sim::new(&[&data]);
    s.handle(Event::Gossip {
        id: GossipId(0),
        topic: Topic::Release,
        source: None,
        data: codec::encode(&signed).unwrap(),
    });
    let st = s.status();
    assert_eq!(st.releases.len(), 1);
    assert_eq!(st.releases[0].reference, "test/image:1");
    assert!(!st.releases[0].complete);
    // Signed by a key nobody trusts: refused, its saved copy deleted, and not judged
    // (nor logged) again when a neighbour offers it again.
    let rogue = release(&key(9), "test/image:1", 5, &[&data]);
    let gossip = || Event::Gossip {
        id: GossipId(0),
        topic: Topic::Release,
        source: None,
        data: codec::encode(&rogue).unwrap(),
    };
    s.take();
    s.handle(gossip());
    let forgot = |log: &[Output<PeerId>]| {
        log.iter()
            .filter(|o| matches!(o, Output::ForgetRelease(id) if *id == rogue.id()))
            .count()
    };
    assert_eq!(forgot(&s.take()), 1);
    s.handle(gossip());
    assert_eq!(forgot(&s.take()), 0, "a refused release is remembered");
    assert_eq!(s.status().stats.releases_rejected, 1);
}

#[test]
fn a_stored_chunk_is_served_onward_and_its_upload_slot_freed() {
    let data = blob(3 * CHUNK, 3);
    let (mut s, _) = Sim::new(&[&data]);
    s.handle(Event::Connected(s.seeder));
    let asker = PeerId::random();
    s.handle(Event::Connected(asker));
    s.take();
    let digest = Digest::of(&data);
    s.handle(Event::Request {
        peer: asker,
        reply: ReplyId(1),
        request: Request::Chunk {
            blob: digest,
            index: 1,
        },
    });
    let read = s.take();
    let Some(Output::ReadChunk {
        reply,
        index,
        range,
        ..
    }) = read
        .into_iter()
        .find(|o| matches!(o, Output::ReadChunk { .. }))
    else {
        panic!("a held chunk is read from the store");
    };
    assert_eq!((reply, index), (ReplyId(1), 1));
    let bytes = data[range.start as usize..range.end as usize].to_vec();
    s.handle(Event::ChunkRead {
        reply,
        blob: digest,
        index,
        bytes: Some(bytes.clone()),
    });
    let answered = s.take().into_iter().any(|o| {
        matches!(o, Output::Respond { reply: ReplyId(1), response: Response::Chunk { index: 1, .. }, payload }
            if payload.as_ref() == bytes.as_slice())
    });
    assert!(answered);
    assert_eq!(s.status().uploaded_bytes, CHUNK as u64);
    assert_eq!(s.status().chunks_served, 1);
    // A chunk the store cannot read is answered NotFound, not dropped.
    s.handle(Event::Request {
        peer: asker,
        reply: ReplyId(2),
        request: Request::Chunk {
            blob: digest,
            index: 2,
        },
    });
    s.handle(Event::ChunkRead {
        reply: ReplyId(2),
        blob: digest,
        index: 2,
        bytes: None,
    });
    let not_found = s.take().into_iter().any(|o| {
        matches!(
            o,
            Output::Respond {
                reply: ReplyId(2),
                response: Response::Error(ErrorCode::NotFound),
                ..
            }
        )
    });
    assert!(not_found);
    assert_eq!(s.status().chunks_served, 1);
}

#[test]
fn upload_slots_are_freed_when_a_serve_ends_however_it_ends() {
    let data = blob(8 * CHUNK, 4);
    let (mut s, _) = Sim::with(
        &[&data],
        |c| c.node = c.node.clone().with_rng_seed(1),
        Startup::default(),
    );
    s.handle(Event::Connected(s.seeder));
    let asker = PeerId::random();
    s.handle(Event::Connected(asker));
    let digest = Digest::of(&data);
    let per_peer = Config::default().max_uploads_per_peer;
    let ask = |s: &mut Sim, reply: u64, index: u32| -> bool {
        s.take();
        s.handle(Event::Request {
            peer: asker,
            reply: ReplyId(reply),
            request: Request::Chunk {
                blob: digest,
                index,
            },
        });
        s.take()
            .iter()
            .any(|o| matches!(o, Output::ReadChunk { .. }))
    };
    for i in 0..per_peer {
        assert!(ask(&mut s, i as u64 + 1, i as u32 % 8), "slot {i} free");
    }
    assert!(!ask(&mut s, 100, 0), "the peer's slots are all taken");
    // One serve was sent, another failed on the way: both slots come back.
    s.handle(Event::ReplyEnded(ReplyId(1)));
    s.handle(Event::InboundFailed {
        peer: asker,
        reply: Some(ReplyId(2)),
        error: "timeout".into(),
        violation: false,
        slow_reader: false,
    });
    s.advance(Duration::from_secs(5));
    assert!(ask(&mut s, 101, 0));
    assert!(ask(&mut s, 102, 1));
    assert!(!ask(&mut s, 103, 2));
}

#[test]
fn a_peer_serving_a_bad_chunk_is_banned_disconnected_and_refused_on_reconnect() {
    let data = blob(4 * CHUNK, 5);
    let (mut s, signed) = Sim::new(&[&data]);
    // The release comes from gossip; the only holder is a corrupting peer.
    let bad = PeerId::random();
    s.holders = HashSet::from([bad]);
    s.corrupt.insert(bad);
    s.handle(Event::Gossip {
        id: GossipId(0),
        topic: Topic::Release,
        source: None,
        data: codec::encode(&signed).unwrap(),
    });
    s.handle(Event::Connected(bad));
    s.handle(Event::Request {
        peer: bad,
        reply: ReplyId(1),
        request: Request::Have {
            blob: Digest::of(&data),
            update: HaveUpdate::Full(blobswarm_core::Bitfield::full(4)),
        },
    });
    assert!(s.disconnects().contains(&bad), "banned and disconnected");
    let st = s.status();
    assert_eq!(st.bans.bad_chunk, 1);
    assert_eq!(st.bans.active, 1);
    assert!(st.stats.chunks_rejected >= 1);
    assert_eq!(st.chunks_verified, 0, "nothing of it was stored");
    s.handle(Event::Disconnected(bad));
    s.take();
    s.handle(Event::Connected(bad));
    assert_eq!(s.disconnects(), vec![bad], "its reconnection is dropped");
    assert_eq!(s.status().peers, 0, "and it is no neighbour");
    // The ban ends after its duration.
    s.handle(Event::Disconnected(bad));
    s.advance(Config::default().ban_duration);
    s.take();
    s.handle(Event::Connected(bad));
    assert!(s.disconnects().is_empty());
}

#[test]
fn frames_the_codec_refuses_and_request_floods_ban_the_sender() {
    let (mut s, _) = Sim::new(&[&blob(CHUNK, 6)]);
    let (garbler, flooder) = (PeerId::random(), PeerId::random());
    s.handle(Event::RequestFailed {
        out: None,
        peer: garbler,
        error: "frame too large".into(),
        violation: true,
    });
    s.handle(Event::RequestFailed {
        out: None,
        peer: flooder,
        error: "timeout".into(),
        violation: false,
    });
    assert_eq!(
        s.disconnects(),
        vec![garbler],
        "a timeout is nobody's fault"
    );
    s.handle(Event::Connected(flooder));
    s.take();
    let burst = super::bans::REQUEST_BURST + 10;
    for i in 0..burst {
        s.handle(Event::Request {
            peer: flooder,
            reply: ReplyId(i),
            request: Request::Peers,
        });
    }
    let log = s.take();
    let dropped = log
        .iter()
        .filter(|o| matches!(o, Output::DropReply(_)))
        .count();
    assert!(
        dropped >= 9,
        "requests over the rate are not answered: {dropped}"
    );
    assert!(
        log.iter()
            .any(|o| matches!(o, Output::Disconnect(p) if *p == flooder))
    );
    let bans = s.status().bans;
    assert_eq!((bans.bad_frame, bans.request_rate, bans.active), (1, 1, 2));
}

#[test]
fn a_full_disk_pauses_the_download_and_it_resumes_after_the_pause() {
    let data = blob(6 * CHUNK, 7);
    let (mut s, signed) = Sim::new(&[&data]);
    s.disk_full = true;
    s.handle(Event::Connected(s.seeder));
    let failed = s.status().stats.store_errors;
    assert!(failed >= 1);
    assert!(!s.complete(&signed.id()));
    assert!(s.disconnects().is_empty(), "a local error bans nobody");
    // Still paused just before the pause ends.
    let pause = Config::default().store_error_pause;
    let asked = s.chunks_fetched.len();
    s.advance(pause - Duration::from_millis(10));
    assert_eq!(s.chunks_fetched.len(), asked, "no chunk asked while paused");
    // Space is back: the download resumes on its own.
    s.disk_full = false;
    s.advance(Duration::from_millis(20));
    assert!(s.complete(&signed.id()));
    assert_eq!(s.status().stats.store_errors, failed);
}

#[test]
fn a_successful_import_is_timed_and_shown() {
    let data = blob(2 * CHUNK, 8);
    let (mut s, signed) = Sim::new(&[&data]);
    s.handle(Event::Connected(s.seeder));
    assert_eq!(s.imports(), vec![signed.id()]);
    let before = s.status();
    assert!(!before.releases[0].imported);
    assert_eq!(
        before.releases[0].state(true),
        blobswarm_core::wire::ProgressState::Importing
    );
    s.advance(Duration::from_millis(1500));
    s.take();
    s.handle(Event::ImportDone {
        id: signed.id(),
        result: Ok(()),
    });
    let r = &s.status().releases[0];
    assert!(r.imported && r.import_error.is_none());
    assert!(r.import_time.unwrap() >= Duration::from_millis(1500));
    assert!(
        s.log
            .iter()
            .any(|o| matches!(o, Output::Status(st) if st.releases[0].imported)),
        "the status is refreshed at once"
    );
}

#[test]
fn a_failed_import_is_reported_with_its_error() {
    let data = blob(CHUNK, 9);
    let (mut s, signed) = Sim::with(
        &[&data],
        |c| c.node_name = Some("node-a".into()),
        Startup::default(),
    );
    s.handle(Event::Connected(s.seeder));
    s.take();
    s.handle(Event::ImportDone {
        id: signed.id(),
        result: Err("containerd: snapshotter missing".into()),
    });
    let r = &s.status().releases[0];
    assert!(!r.imported);
    assert_eq!(
        r.import_error.as_deref(),
        Some("containerd: snapshotter missing")
    );
    // The failure goes out in a progress report right away.
    let report = s.take().into_iter().find_map(|o| match o {
        Output::Gossip {
            topic: Topic::Report,
            data,
        } => Some(blobswarm_core::wire::ProgressReport::decode(&data).unwrap()),
        _ => None,
    });
    let report = report.expect("a report is sent");
    assert_eq!(report.node_name, "node-a");
    assert!(matches!(
        &report.releases[0].state,
        blobswarm_core::wire::ProgressState::Failed(e) if e.contains("snapshotter")
    ));
}

#[test]
fn no_import_target_means_no_import() {
    let data = blob(CHUNK, 10);
    let (mut s, signed) = Sim::with(&[&data], |c| c.import_target = false, Startup::default());
    s.handle(Event::Connected(s.seeder));
    assert!(s.complete(&signed.id()));
    assert!(s.imports().is_empty());
}

#[test]
fn a_superseded_release_is_not_imported_but_its_successor_is() {
    let (old, new) = (blob(2 * CHUNK, 11), blob(2 * CHUNK, 12));
    let (mut s, v1) = Sim::new(&[&old]);
    s.add_data(&new);
    let v2 = release(&key(1), "test/image:1", 2, &[&new]);
    // v1 is accepted; v2 arrives before v1 completes.
    for signed in [&v1, &v2] {
        s.handle(Event::Gossip {
            id: GossipId(0),
            topic: Topic::Release,
            source: None,
            data: codec::encode(signed).unwrap(),
        });
    }
    assert_eq!(s.status().releases.len(), 2);
    assert!(!s.complete(&v1.id()));
    // Then the seeder connects: both complete, only v2 is imported.
    s.handle(Event::Connected(s.seeder));
    assert!(s.complete(&v1.id()) && s.complete(&v2.id()));
    assert_eq!(s.imports(), vec![v2.id()]);
    let st = s.status();
    let v1_row = st.releases.iter().find(|r| r.id == v1.id()).unwrap();
    assert!(v1_row.imported, "a superseded release counts as settled");
    // A release sync answers with the newest only.
    let answers = s.ask(s.seeder, ReplyId(7), Request::Releases);
    let offered = answers.into_iter().find_map(|r| match r {
        Response::Releases(list) => Some(list),
        _ => None,
    });
    assert_eq!(offered, Some(vec![v2]));
}

#[test]
fn the_herd_guard_falls_back_to_the_registry_only_after_its_delay() {
    let data = blob(3 * CHUNK, 13);
    let (mut s, signed) = Sim::with(&[&data], |c| c.registry_fallback = true, Startup::default());
    // The seeder hands out the release and map, then goes away with every chunk.
    s.holders.clear();
    s.handle(Event::Gossip {
        id: GossipId(0),
        topic: Topic::Release,
        source: None,
        data: codec::encode(&signed).unwrap(),
    });
    let helper = PeerId::random();
    s.holders.insert(helper);
    s.handle(Event::Connected(helper));
    s.handle(Event::Disconnected(helper));
    s.holders.clear();
    let fetches = |log: &[Output<PeerId>]| -> Vec<(RequestId, u32)> {
        log.iter()
            .filter_map(|o| match o {
                Output::FetchRegistry {
                    id,
                    reference,
                    index,
                    ..
                } => {
                    assert_eq!(reference, "test/image:1");
                    Some((*id, *index))
                }
                _ => None,
            })
            .collect()
    };
    let cfg = HerdConfig::new(vec![]);
    s.advance(cfg.after);
    assert!(fetches(&s.log).is_empty(), "nothing while the delay runs");
    s.advance(cfg.scan_interval + cfg.grace + cfg.spread + cfg.settle + Duration::from_secs(1));
    let mut got = fetches(&s.take());
    got.sort_by_key(|(_, i)| *i);
    assert_eq!(
        got.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    for (id, index) in got {
        let r = map.range(index).unwrap();
        s.handle(Event::RegistryChunk {
            id,
            blob: map.blob(),
            index,
            result: Ok(Bytes::from(data[r.start as usize..r.end as usize].to_vec())),
        });
    }
    assert!(
        s.complete(&signed.id()),
        "registry bytes are verified and stored"
    );
    assert_eq!(s.status().stats.registry_fetches, 3);
}

#[test]
fn startup_resumes_checkpointed_chunks_and_the_saved_release() {
    let data = blob(6 * CHUNK, 14);
    let signed = release(&key(1), "test/image:1", 1, &[&data]);
    let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
    let mut have = blobswarm_core::Bitfield::new(6);
    for i in [0, 2, 3] {
        have.set(i);
    }
    let older = release(&key(1), "test/image:1", 0, &[&data]);
    let startup = Startup {
        resumed: vec![Resumed {
            map,
            have,
            dropped: 0,
        }],
        saved: vec![older.clone(), signed.clone()],
    };
    let (mut s, _) = Sim::with(&[&data], |_| {}, startup);
    s.pump();
    // The saved release is back without any peer, with the checkpointed chunks.
    let st = s.status();
    assert_eq!(st.releases.len(), 1);
    assert_eq!(st.releases[0].id, signed.id());
    assert_eq!(st.releases[0].have_bytes, 3 * CHUNK as u64);
    assert!(
        s.log
            .iter()
            .any(|o| matches!(o, Output::ForgetRelease(id) if *id == older.id())),
        "an older saved release of the image is deleted, not restored"
    );
    // Only the chunks not on disk are fetched.
    s.handle(Event::Connected(s.seeder));
    let mut fetched = s.chunks_fetched.clone();
    fetched.sort_unstable();
    assert_eq!(fetched, vec![1, 4, 5]);
    assert!(s.complete(&signed.id()));
}

#[test]
fn checkpoints_run_once_a_second_one_pass_at_a_time_and_shutdown_flushes() {
    let data = blob(4 * CHUNK, 15);
    let (mut s, _) = Sim::with(&[&data], |c| c.import_target = false, Startup::default());
    s.handle(Event::Connected(s.seeder));
    let passes = |log: &[Output<PeerId>]| -> Vec<Vec<CheckpointBlob>> {
        log.iter()
            .filter_map(|o| match o {
                Output::Checkpoint(w) => Some(w.clone()),
                _ => None,
            })
            .collect()
    };
    s.take();
    s.advance(STATUS_EVERY);
    let first = passes(&s.take());
    assert_eq!(first.len(), 1);
    assert!(
        first[0][0].map.is_some(),
        "the map goes with the first pass"
    );
    assert_eq!(first[0][0].have.count(), 4);
    // More chunks of another blob arrive while the pass runs: no second pass yet.
    let more = blob(2 * CHUNK, 16);
    s.add_data(&more);
    s.offered = vec![release(&key(1), "test/other:1", 1, &[&more])];
    s.handle(Event::Disconnected(s.seeder));
    s.handle(Event::Connected(s.seeder));
    s.advance(Duration::from_secs(2));
    assert!(passes(&s.take()).is_empty(), "one pass at a time");
    s.handle(Event::CheckpointDone);
    s.advance(STATUS_EVERY);
    let second = passes(&s.take());
    assert_eq!(second.len(), 1);
    assert_eq!(second[0][0].blob, Digest::of(&more));
    // Shutdown flushes what changed since, without waiting for the interval.
    s.handle(Event::CheckpointDone);
    let third = blob(CHUNK, 17);
    s.add_data(&third);
    s.offered = vec![release(&key(1), "test/third:1", 1, &[&third])];
    s.handle(Event::Disconnected(s.seeder));
    s.handle(Event::Connected(s.seeder));
    s.take();
    s.handle(Event::Shutdown);
    let last = passes(&s.take());
    assert_eq!(last.len(), 1);
    assert_eq!(last[0][0].blob, Digest::of(&third));
    assert!(last[0][0].have.is_full());
    // Nothing changed: nothing to flush.
    s.handle(Event::CheckpointDone);
    s.handle(Event::Shutdown);
    assert!(passes(&s.take()).is_empty());
}

#[test]
fn peers_beyond_the_bound_get_discovery_only_then_leave_or_are_promoted() {
    let (mut s, _) = Sim::with(&[&blob(CHUNK, 18)], |c| c.max_peers = 1, Startup::default());
    s.holders.clear();
    let (a, b) = (PeerId::random(), PeerId::random());
    s.handle(Event::Connected(a));
    s.handle(Event::Connected(b));
    assert_eq!(s.status().peers, 1);
    s.take();
    for (i, req) in [
        Request::Peers,
        Request::Chunk {
            blob: Digest::of(b"x"),
            index: 0,
        },
    ]
    .into_iter()
    .enumerate()
    {
        s.handle(Event::Request {
            peer: b,
            reply: ReplyId(i as u64),
            request: req,
        });
    }
    let answers = s.responses();
    assert!(matches!(answers[0], Response::Peers(_)));
    assert_eq!(answers[1], Response::Error(ErrorCode::Busy));
    // The neighbour leaves: the bootstrap-only peer takes its place.
    s.handle(Event::Disconnected(a));
    assert_eq!(s.status().peers, 1);
    // A third one over the bound is let go after the grace time.
    let c = PeerId::random();
    s.handle(Event::Connected(c));
    s.take();
    s.advance(overlay::SHED_GRACE + MAINTAIN_EVERY);
    assert_eq!(s.disconnects(), vec![c]);
}

#[test]
fn maintenance_syncs_releases_exchanges_peers_and_dials_what_it_learns() {
    let (mut s, _) = Sim::new(&[&blob(CHUNK, 19)]);
    s.holders.clear();
    s.take();
    s.advance(Duration::from_millis(1));
    assert!(
        s.take().iter().any(|o| matches!(o, Output::DialBootstrap)),
        "alone: dial the bootstrap peers"
    );
    let n = PeerId::random();
    s.handle(Event::Connected(n));
    s.handle(Event::PeerAddrs {
        peer: n,
        addrs: vec![b"addr-n".to_vec()],
        listen: Vec::new(),
    });
    s.take();
    s.advance(MAINTAIN_EVERY);
    let sent: Vec<(OutId, Request)> = s
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { peer, out, request } if peer == n => Some((out, request)),
            _ => None,
        })
        .collect();
    assert!(sent.iter().any(|(_, r)| *r == Request::Releases));
    let (px, _) = sent.iter().find(|(_, r)| *r == Request::Peers).unwrap();
    let (fresh, banned) = (PeerId::random(), PeerId::random());
    s.handle(Event::RequestFailed {
        out: None,
        peer: banned,
        error: "bad frame".into(),
        violation: true,
    });
    s.take();
    let record = |p: PeerId, addrs: Vec<Vec<u8>>| PeerRecord {
        peer: p.to_bytes(),
        addrs,
    };
    s.handle(Event::Response {
        out: *px,
        response: Response::Peers(vec![
            record(fresh, vec![b"a".to_vec()]),
            record(n, vec![b"b".to_vec()]),
            record(banned, vec![b"c".to_vec()]),
            record(s.d.config.me, vec![b"d".to_vec()]),
            record(PeerId::random(), vec![]),
            PeerRecord {
                peer: b"garbage".to_vec(),
                addrs: vec![b"e".to_vec()],
            },
        ]),
        payload: Bytes::new(),
    });
    let dials: Vec<PeerId> = s
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Output::Dial { peer, .. } => Some(peer),
            _ => None,
        })
        .collect();
    assert_eq!(
        dials,
        vec![fresh],
        "not itself, connected, banned or addressless peers"
    );
    // Its own peer list hands out connected peers with addresses, not the asker.
    let other = PeerId::random();
    s.handle(Event::Connected(other));
    let answers = s.ask(other, ReplyId(3), Request::Peers);
    let records = answers.into_iter().find_map(|r| match r {
        Response::Peers(r) => Some(r),
        _ => None,
    });
    assert_eq!(records, Some(vec![record(n, vec![b"addr-n".to_vec()])]));
}

#[test]
fn progress_reports_are_sent_when_named_and_kept_when_collecting() {
    let data = blob(CHUNK, 20);
    let (mut s, _) = Sim::with(
        &[&data],
        |c| {
            c.node_name = Some("n1".into());
            c.collect_reports = true;
        },
        Startup::default(),
    );
    s.handle(Event::Connected(s.seeder));
    s.take();
    s.advance(MAINTAIN_EVERY);
    let report = s.take().into_iter().find_map(|o| match o {
        Output::Gossip {
            topic: Topic::Report,
            data,
        } => Some(data),
        _ => None,
    });
    let report = report.expect("a named node reports");
    let from = PeerId::random();
    s.handle(Event::Gossip {
        id: GossipId(0),
        topic: Topic::Report,
        source: Some(from),
        data: report,
    });
    s.handle(Event::Gossip {
        id: GossipId(0),
        topic: Topic::Report,
        source: Some(from),
        data: b"junk".to_vec(),
    });
    let kept: Vec<PeerId> = s
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Output::KeepReport { from, report } => {
                assert_eq!(report.node_name, "n1");
                Some(from)
            }
            _ => None,
        })
        .collect();
    assert_eq!(kept, vec![from], "the malformed one is dropped");
}

#[test]
fn the_store_cap_evicts_a_superseded_imported_release() {
    let (old, new) = (blob(4 * CHUNK, 21), blob(4 * CHUNK, 22));
    let (mut s, v1) = Sim::with(
        &[&old],
        |c| c.store_max_bytes = Some(5 * CHUNK as u64),
        Startup::default(),
    );
    s.handle(Event::Connected(s.seeder));
    s.handle(Event::ImportDone {
        id: v1.id(),
        result: Ok(()),
    });
    s.add_data(&new);
    let v2 = release(&key(1), "test/image:1", 2, &[&new]);
    s.offered = vec![v2.clone()];
    s.handle(Event::Disconnected(s.seeder));
    s.handle(Event::Connected(s.seeder));
    s.handle(Event::ImportDone {
        id: v2.id(),
        result: Ok(()),
    });
    s.advance(MAINTAIN_EVERY);
    let log = s.take();
    assert!(
        log.iter()
            .any(|o| matches!(o, Output::RemoveBlobs(b) if *b == vec![Digest::of(&old)]))
    );
    assert!(
        log.iter()
            .any(|o| matches!(o, Output::ForgetRelease(id) if *id == v1.id()))
    );
    let st = s.status();
    assert_eq!(st.releases_evicted, 1);
    assert_eq!(st.releases.len(), 1);
    // What `blobswarm_store_bytes` and `blobswarm_store_max_bytes` export: the newest
    // release's blob alone now, under the cap.
    assert_eq!(st.store_bytes, 4 * CHUNK as u64);
    assert_eq!(st.store_max_bytes, Some(5 * CHUNK as u64));
}

/// The driver must stay transport-neutral: no libp2p, no sockets, no spawning. Scans
/// every source file of the driver (the test files excepted, which signs releases with
/// libp2p keys), skipping each file's own `#[cfg(test)]` module.
#[test]
fn the_driver_names_no_transport_and_spawns_nothing() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/driver");
    let banned = [
        "libp2p",
        "tokio::net",
        "tokio::spawn",
        "spawn_blocking",
        "std::net::Tcp",
        "tokio::",
    ];
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // The test files (`tests.rs`, `tests/`) use libp2p keys and ids.
        if path.file_name().is_some_and(|n| n == "tests.rs") || path.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap();
        for word in banned {
            assert!(!code.contains(word), "{} mentions `{word}`", path.display());
        }
        scanned += 1;
    }
    assert!(scanned >= 8, "the driver's files were found: {scanned}");
    // The scan itself can fail: a line naming the swarm would be caught.
    assert!(include_str!("../agent/adapter.rs").contains("libp2p"));
}

/// Gossip a test hook returns is published as it is, on the status tick; the honest
/// driver (`NoHooks`) publishes nothing of the kind.
#[test]
fn a_hook_publishes_raw_gossip_on_the_status_tick() {
    struct Raw;
    impl Hooks<PeerId> for Raw {
        fn gossip(&mut self) -> Vec<(Topic, Vec<u8>)> {
            vec![(Topic::Report, vec![0xff; 3])]
        }
    }
    let published = |hooks: Box<dyn Hooks<PeerId>>| {
        let cfg = config(key(2).public().to_peer_id(), key(1).public().to_peer_id());
        let mut now = Now {
            at: Instant::now(),
            unix_ms: 1_000,
        };
        let mut d = Driver::new(cfg, hooks, Startup::default(), now).unwrap();
        now.at += STATUS_EVERY * 2;
        d.handle(Event::Timer, now);
        std::iter::from_fn(|| d.poll_output())
            .filter(|o| matches!(o, Output::Gossip { topic: Topic::Report, data } if data == &[0xff; 3]))
            .count()
    };
    assert_eq!(published(Box::new(Raw)), 1);
    assert_eq!(published(Box::new(NoHooks)), 0);
}
