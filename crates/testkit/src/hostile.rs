//! Hostile agents for the chaos, hostile-peer and rogue tests: [`Hooks`] that make a real
//! agent corrupt chunks, send unparseable answers, flood neighbours with requests, or hand
//! out superseded releases. Started with `blobswarm_peer::spawn_with_hooks` (in process,
//! or by the `blobswarm-rogue` binary); the production agent cannot reach any of this:
//! its crate holds only the `Hooks` seam and `NoHooks`.

use std::collections::HashMap;

use blobswarm_core::SignedRelease;
use blobswarm_core::wire::{Request, Response};
use bytes::Bytes;
use libp2p::PeerId;

use blobswarm_peer::{Hooks, NoHooks};

/// Requests a flooding test agent keeps in flight per neighbour.
const FLOOD_CHAINS: usize = 16;
/// Releases a replaying test agent keeps to hand out again.
const MAX_REPLAYED: usize = 8;

/// What a misbehaving agent does when serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeFault {
    /// Flip one byte of every chunk served.
    FlipByte,
    /// Serve every chunk with a megabyte of extra bytes.
    Oversized,
    /// Answer chunk requests with a frame the codec refuses (a payload on a non-chunk answer).
    Malformed,
    /// Send every neighbour requests far above the rate limit.
    Flood,
}

/// The hooks of a hostile agent: `fault` when serving, and with `replay` it answers
/// release syncs with every release it ever accepted, superseded ones included. Honest
/// hooks (`NoHooks`) when neither is set.
pub fn hooks(fault: Option<ServeFault>, replay: bool) -> Box<dyn Hooks<PeerId>> {
    if fault.is_none() && !replay {
        return Box::new(NoHooks);
    }
    Box::new(Hostile {
        fault,
        replay,
        stash: Vec::new(),
        in_flight: HashMap::new(),
    })
}

struct Hostile {
    fault: Option<ServeFault>,
    /// Answer release syncs with every release ever accepted, superseded ones included.
    replay: bool,
    /// Releases a replaying agent hands out again, oldest first.
    stash: Vec<SignedRelease>,
    /// Flood requests in flight per neighbour.
    in_flight: HashMap<PeerId, usize>,
}

impl Hooks<PeerId> for Hostile {
    fn release_accepted(&mut self, signed: &SignedRelease) {
        if !self.replay {
            return;
        }
        if self.stash.len() >= MAX_REPLAYED {
            self.stash.remove(0);
        }
        self.stash.push(signed.clone());
    }

    fn answer(&mut self, response: &mut Response, payload: &mut Bytes) {
        match response {
            Response::Releases(list) if self.replay => list.clone_from(&self.stash),
            Response::Chunk { .. } => fault_chunk(self.fault, response, payload),
            _ => {}
        }
    }

    fn tick(&mut self, connected: &[PeerId], holds_release: bool) -> Vec<(PeerId, Request)> {
        // Floods only once it holds an image, so it first downloads like anyone else.
        if self.fault != Some(ServeFault::Flood) || !holds_release {
            return Vec::new();
        }
        // Keeps FLOOD_CHAINS requests in flight per neighbour, each answer sending the
        // next: as fast as the connection allows, yet under libp2p's stream cap (which
        // would drop a plain burst before the victim ever counted it).
        let mut out = Vec::new();
        for peer in connected {
            let n = self.in_flight.entry(*peer).or_default();
            let more = FLOOD_CHAINS.saturating_sub(*n);
            *n += more;
            out.extend((0..more).map(|_| (*peer, Request::Peers)));
        }
        out
    }

    fn answered(&mut self, peer: PeerId, ok: bool) -> Vec<(PeerId, Request)> {
        let n = self.in_flight.entry(peer).or_default();
        if ok {
            return vec![(peer, Request::Peers)];
        }
        *n = n.saturating_sub(1);
        Vec::new()
    }
}

/// The hostile modes that change a chunk answer.
fn fault_chunk(fault: Option<ServeFault>, response: &mut Response, payload: &mut Bytes) {
    match fault {
        None | Some(ServeFault::Flood) => {}
        Some(ServeFault::FlipByte) => {
            let mut bytes = payload.to_vec();
            if let Some(b) = bytes.get_mut(payload.len() / 2) {
                *b ^= 0x01;
            }
            *payload = Bytes::from(bytes);
        }
        Some(ServeFault::Oversized) => {
            // Longer than the chunk map says: fails verification like a wrong hash.
            let mut bytes = payload.to_vec();
            bytes.resize(bytes.len() + (1 << 20), 0xAA);
            *payload = Bytes::from(bytes);
        }
        Some(ServeFault::Malformed) => {
            // A payload on a response that must not carry one: the codec refuses it.
            *response = Response::Ack;
        }
    }
}
