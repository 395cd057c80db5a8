//! The driver's side of the network: neighbours and their bound, inbound requests,
//! answers, peer exchange, release sync and gossip.

use blobswarm_core::node::{ChunkOutcome, Inbound, RequestId};
use blobswarm_core::wire::{ErrorCode, MAX_PEER_RECORDS, PeerRecord, Request, Response};
use blobswarm_core::{Digest, SignedRelease};
use bytes::Bytes;
use rand::Rng;
use tracing::{debug, info, warn};

use super::{Driver, Now, Origin, OutId, Output, PeerIdentity, ReplyId, overlay};
use crate::status::BanKind;

impl<P: PeerIdentity> Driver<P> {
    pub(super) fn on_connected(&mut self, peer: P, now: Now) {
        self.connected.insert(peer);
        if self.refuse_banned(peer, now.at) {
            return;
        }
        if self.node.peer_count() >= self.config.max_peers {
            // Neighbour set full: answer its discovery requests, then let it go.
            debug!(%peer, "neighbour set full; peer is bootstrap-only");
            self.bootstrap_only.admit(peer, now.at);
            return;
        }
        debug!(%peer, "connected");
        self.node.handle_peer_connected(peer, now.at);
        self.send(peer, Request::Peers, Origin::PeerExchange);
    }

    pub(super) fn on_disconnected(&mut self, peer: P, now: Now) {
        self.connected.remove(&peer);
        self.addr_book.remove(&peer);
        self.addr_bans.forget(&peer);
        if self.bootstrap_only.remove(&peer) {
            return;
        }
        debug!(%peer, "disconnected");
        self.node.handle_peer_disconnected(&peer, now.at);
        // A neighbour left (not a bootstrap-only peer whose grace ran out).
        if self.node.peer_count() < self.config.max_peers
            && let Some(next) = self.bootstrap_only.promote()
        {
            debug!(peer = %next, "bootstrap-only peer promoted to neighbour");
            self.node.handle_peer_connected(next, now.at);
        }
    }

    /// Hands a release to the node; a refused one is remembered (boundedly) so the
    /// periodic release sync does not re-verify and re-log it every few seconds.
    pub(super) fn accept_release(&mut self, signed: SignedRelease, now: Now) {
        if self.refused.contains(&signed.id()) {
            return;
        }
        // A refusal is logged when the node's `ReleaseRefused` action is drained.
        let _ = self.node.handle_release(signed, now.at, now.unix_ms);
    }

    pub(super) fn on_request(&mut self, peer: P, reply: ReplyId, request: Request, now: Now) {
        if !self.admit_request(peer, now.at) {
            self.outputs.push_back(Output::DropReply(reply));
            return;
        }
        if self.bootstrap_only.contains(&peer) && !overlay::answered_when_bootstrap_only(&request) {
            let answer = match request {
                Request::Have { .. } => Response::Ack,
                _ => Response::Error(ErrorCode::Busy),
            };
            self.respond(reply, answer, Bytes::new());
            return;
        }
        match self.node.handle_request(&peer, request, now.at) {
            Inbound::Respond(mut response) => {
                let mut payload = Bytes::new();
                self.hooks.answer(&mut response, &mut payload);
                self.respond(reply, response, payload);
            }
            Inbound::Peers => {
                let records = self.peer_records(&peer);
                self.respond(reply, Response::Peers(records), Bytes::new());
            }
            Inbound::ServeChunk { blob, index, range } => {
                self.serving.insert(reply, peer);
                self.outputs.push_back(Output::ReadChunk {
                    reply,
                    blob,
                    index,
                    range,
                });
            }
        }
    }

    fn respond(&mut self, reply: ReplyId, response: Response, payload: Bytes) {
        self.outputs.push_back(Output::Respond {
            reply,
            response,
            payload,
        });
    }

    /// The store read for a chunk serve finished: answer with the chunk or `NotFound`.
    pub(super) fn on_chunk_read(
        &mut self,
        reply: ReplyId,
        blob: Digest,
        index: u32,
        bytes: Option<Vec<u8>>,
        now: Now,
    ) {
        let Some(bytes) = bytes else {
            return self.respond(reply, Response::Error(ErrorCode::NotFound), Bytes::new());
        };
        self.store_cap.served(blob, now.at);
        self.uploaded_bytes += bytes.len() as u64;
        self.chunks_served += 1;
        let mut response = Response::Chunk { blob, index };
        let mut payload = Bytes::from(bytes);
        self.hooks.answer(&mut response, &mut payload);
        self.respond(reply, response, payload);
    }

    /// Frees the upload slot of a chunk serve, whichever way it ended; once per serve.
    pub(super) fn finish_upload(&mut self, reply: ReplyId, now: Now) {
        if let Some(peer) = self.serving.remove(&reply) {
            self.node.handle_upload_done(&peer, now.at);
        }
    }

    pub(super) fn on_inbound_failed(
        &mut self,
        peer: P,
        reply: Option<ReplyId>,
        error: &str,
        violation: bool,
        now: Now,
    ) {
        debug!(%peer, %error, "inbound request failed");
        if let Some(reply) = reply {
            self.finish_upload(reply, now);
        }
        if violation {
            let reason = format!("sent a frame we refuse: {error}");
            self.ban_peer(peer, BanKind::BadFrame, &reason, now.at);
        }
    }

    pub(super) fn on_response(&mut self, out: OutId, response: Response, payload: Bytes, now: Now) {
        match self.outbound.remove(&out) {
            Some(Origin::Node(id)) => match response {
                Response::Chunk { .. } => self.verify_and_store(id, payload),
                other => self.node.handle_response(id, other, now.at, now.unix_ms),
            },
            Some(Origin::Hook(peer)) => {
                for (to, request) in self.hooks.answered(peer, true) {
                    self.send(to, request, Origin::Hook(to));
                }
            }
            Some(Origin::PeerExchange) => {
                if let Response::Peers(records) = response {
                    self.dial_records(records, now);
                }
            }
            Some(Origin::ReleaseSync) => {
                if let Response::Releases(list) = response {
                    for signed in list {
                        self.accept_release(signed, now);
                    }
                }
            }
            None => {}
        }
    }

    pub(super) fn on_request_failed(
        &mut self,
        out: Option<OutId>,
        peer: P,
        error: &str,
        violation: bool,
        now: Now,
    ) {
        match out.and_then(|out| self.outbound.remove(&out)) {
            Some(Origin::Node(id)) => {
                debug!(%peer, %error, "request failed");
                self.node.handle_failure(id, now.at);
            }
            Some(Origin::Hook(p)) => {
                for (to, request) in self.hooks.answered(p, false) {
                    self.send(to, request, Origin::Hook(to));
                }
            }
            _ => {}
        }
        if violation {
            let reason = format!("sent a frame we refuse: {error}");
            self.ban_peer(peer, BanKind::BadFrame, &reason, now.at);
        }
    }

    /// Asks the adapter to hash the chunk against its map and store it if it matches.
    pub(super) fn verify_and_store(&mut self, id: RequestId, payload: Bytes) {
        let Some((map, index)) = self.node.chunk_target(id) else {
            return;
        };
        self.outputs.push_back(Output::VerifyAndStore {
            id,
            map,
            index,
            payload,
        });
    }

    /// The outcome of a verify-and-store: count it, checkpoint it, tell the node.
    pub(super) fn on_chunk_done(
        &mut self,
        id: RequestId,
        blob: Digest,
        outcome: ChunkOutcome,
        now: Now,
    ) {
        match &outcome {
            ChunkOutcome::LocalError(e) => warn!(
                error = %e,
                pause_secs = self.config.node.store_error_pause.as_secs_f64(),
                "cannot store chunk; download paused"
            ),
            ChunkOutcome::Stored => {
                self.checkpoints.chunk_stored(blob);
                self.chunks_verified += 1;
            }
            ChunkOutcome::Corrupt(_) => {}
        }
        self.node.handle_chunk(id, outcome, now.at);
    }

    /// Peers to hand `asking`: connected ones with known addresses, bounded.
    fn peer_records(&self, asking: &P) -> Vec<PeerRecord> {
        self.addr_book
            .iter()
            .filter(|(p, addrs)| *p != asking && !addrs.is_empty() && self.connected.contains(*p))
            .take(MAX_PEER_RECORDS)
            .map(|(p, addrs)| PeerRecord {
                peer: p.key_bytes(),
                addrs: addrs.clone(),
            })
            .collect()
    }

    /// Dials peers from a peer-exchange answer until the neighbour bound is reached.
    fn dial_records(&mut self, records: Vec<PeerRecord>, now: Now) {
        for r in records {
            if self.connected.len() >= self.config.max_peers {
                return;
            }
            let Some(peer) = P::from_key_bytes(&r.peer) else {
                continue;
            };
            if peer == self.config.me
                || self.connected.contains(&peer)
                || self.bans.is_banned(&peer, now.at)
                || r.addrs.is_empty()
            {
                continue;
            }
            self.outputs.push_back(Output::Dial {
                peer,
                addrs: r.addrs,
            });
        }
    }

    /// Periodic upkeep: re-dial bootstrap peers when alone, ask a neighbour for releases
    /// (covers gossip sent before we were subscribed), and refresh peer exchange.
    pub(super) fn maintain(&mut self, now: Now) {
        self.log_progress();
        self.enforce_store_cap(now.at);
        for peer in self.bootstrap_only.take_due(now.at) {
            debug!(%peer, "closing bootstrap-only connection");
            self.outputs.push_back(Output::Disconnect(peer));
        }
        self.send_report(now);
        if self.connected.is_empty() {
            self.outputs.push_back(Output::DialBootstrap);
            return;
        }
        let pick_at = self.rng.gen_range(0..self.connected.len());
        let Some(pick) = self.connected.iter().nth(pick_at).copied() else {
            return;
        };
        self.send(pick, Request::Releases, Origin::ReleaseSync);
        if self.connected.len() < self.config.max_peers {
            self.send(pick, Request::Peers, Origin::PeerExchange);
        }
    }

    /// One structured line per release still downloading, so a long transfer shows
    /// progress.
    fn log_progress(&self) {
        for r in self.release_statuses().iter().filter(|r| !r.complete) {
            info!(
                release = %r.id.short(),
                reference = %r.reference,
                have = r.have_bytes,
                total = r.total_bytes,
                percent = format_args!("{:.1}", 100.0 * r.have_bytes as f64 / r.total_bytes.max(1) as f64),
                peers = self.node.peer_count(),
                "downloading"
            );
        }
    }

    /// The status tick for test hooks: requests they want sent now.
    pub(super) fn hook_tick(&mut self) {
        let holds = self
            .node
            .release_ids()
            .any(|id| self.node.release_complete(id));
        let connected: Vec<P> = self.connected.iter().copied().collect();
        for (to, request) in self.hooks.tick(&connected, holds) {
            self.send(to, request, Origin::Hook(to));
        }
        for (topic, data) in self.hooks.gossip() {
            self.outputs.push_back(Output::Gossip { topic, data });
        }
    }
}
