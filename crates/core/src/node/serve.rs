//! Answering neighbours: release syncs, chunk maps, have-information and chunks, with
//! the upload slots and the super-seeding and upload-once rules deciding who is served.

use std::time::Instant;

use super::{Inbound, Node, PeerKey};
use crate::Digest;
use crate::wire::{ErrorCode, Request, Response};

impl<P: PeerKey> Node<P> {
    /// Answers an inbound request from `from`.
    pub fn handle_request(&mut self, from: &P, request: Request, now: Instant) -> Inbound {
        let inbound = match request {
            // Only the newest release of each image: a superseded one is no use to a
            // joining node, and offering it would make every node download it first.
            Request::Releases => Inbound::Respond(Response::Releases(
                self.releases
                    .iter()
                    .filter(|(id, r)| self.replay.is_newest(&r.release, **id))
                    .take(crate::wire::MAX_RELEASES)
                    .map(|(_, r)| r.signed.clone())
                    .collect(),
            )),
            Request::Peers => Inbound::Peers,
            Request::ChunkMap { blob } => {
                match self.blobs.get(&blob).and_then(|b| b.map.as_ref()) {
                    Some(map) => Inbound::Respond(Response::ChunkMap((**map).clone())),
                    None => Inbound::Respond(Response::Error(ErrorCode::NotFound)),
                }
            }
            Request::Chunk { blob, index } => self.serve_chunk(from, blob, index, now),
            Request::Have { blob, update } => {
                self.apply_have(from, blob, update);
                // Only what `from` offers changed: schedule just that peer.
                self.request_chunk_maps(now);
                self.schedule_chunks(now, Some(from));
                return Inbound::Respond(Response::Ack);
            }
        };
        self.after_input(now);
        inbound
    }

    fn serve_chunk(&mut self, from: &P, blob: Digest, index: u32, now: Instant) -> Inbound {
        let (super_seed, window) = (self.config.super_seed, self.config.super_seed_window);
        let Some(b) = self.blobs.get_mut(&blob).filter(|b| b.have.get(index)) else {
            return Inbound::Respond(Response::Error(ErrorCode::NotFound));
        };
        let Some(Ok(range)) = b.map.as_ref().map(|m| m.range(index)) else {
            return Inbound::Respond(Response::Error(ErrorCode::BadRequest));
        };
        let peer_uploads = self.peers.get(from).map_or(0, |p| p.uploads);
        self.upload_reserved.retain(|(_, until)| *until > now);
        let mine = self.upload_reserved.iter().position(|(p, _)| p == from);
        let held_for_others = self.upload_reserved.len() - usize::from(mine.is_some());
        if self.uploads + held_for_others >= self.config.max_uploads
            || peer_uploads >= self.config.max_uploads_per_peer
        {
            if peer_uploads < self.config.max_uploads_per_peer
                && !self.upload_waiting.contains(from)
                && mine.is_none()
            {
                self.upload_waiting.push_back(from.clone());
            }
            return Inbound::Respond(Response::Error(ErrorCode::Overloaded));
        }
        if self.up_rate.as_mut().is_some_and(|r| !r.ready(now)) {
            return Inbound::Respond(Response::Error(ErrorCode::Overloaded));
        }
        let peers = &self.peers;
        let connected = |session: u64| peers.values().any(|p| p.session == session);
        let once = self.config.upload_once.then(|| {
            let session = peers.get(from).map_or(0, |p| p.session);
            (session, &connected as &dyn Fn(u64) -> bool)
        });
        if super_seed && !b.super_seed_admit(index, now, window, once) {
            return Inbound::Respond(Response::Error(ErrorCode::Busy));
        }
        if let Some(r) = self.up_rate.as_mut() {
            r.take(range.end - range.start);
        }
        if let Some(i) = mine {
            self.upload_reserved.swap_remove(i);
        }
        self.uploads += 1;
        if let Some(p) = self.peers.get_mut(from) {
            p.uploads += 1;
        }
        Inbound::ServeChunk { blob, index, range }
    }

    /// A chunk handed out with [`Inbound::ServeChunk`] was sent, or could not be: frees
    /// its upload slot, which is held briefly for the peer refused longest ago (fair
    /// rotation). The driver must report every `ServeChunk` exactly once.
    pub fn handle_upload_done(&mut self, to: &P, now: Instant) {
        self.uploads = self.uploads.saturating_sub(1);
        if let Some(p) = self.peers.get_mut(to) {
            p.uploads = p.uploads.saturating_sub(1);
        }
        self.upload_reserved.retain(|(_, until)| *until > now);
        while let Some(next) = self.upload_waiting.pop_front() {
            if self.peers.contains_key(&next) {
                let until = now + self.config.slot_reservation;
                self.upload_reserved.push((next, until));
                break;
            }
        }
    }
}
