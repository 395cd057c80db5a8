//! Events of the simulation, ordered by virtual time then insertion.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::SignedRelease;
use crate::node::RequestId;
use crate::wire::{Request, Response};

pub(super) enum Msg {
    Request {
        to: u32,
        from: u32,
        id: RequestId,
        request: Request,
    },
    Response {
        to: u32,
        id: RequestId,
        response: Response,
    },
    UploadDone {
        node: u32,
        to: u32,
    },
    Gossip {
        to: u32,
        signed: SignedRelease,
    },
    Timer {
        node: u32,
    },
    /// A swarm notice reaching every live node (gossip), from `from`.
    Notice {
        from: u32,
        notice: crate::wire::SwarmNotice,
    },
    /// A chunk range fetched from the registry arrives.
    RegistryChunk {
        to: u32,
        id: RequestId,
    },
    /// The seeder publishes the release (after its registry read, if modelled).
    Publish {
        signed: SignedRelease,
    },
    Kill {
        node: u32,
    },
    Disconnect {
        node: u32,
        gone: u32,
    },
}

/// The pending events: a heap of small keys ordered by virtual time then insertion,
/// with the messages themselves in a slab, so heap moves stay cheap.
#[derive(Default)]
pub(super) struct EventQueue {
    heap: BinaryHeap<Reverse<(Duration, u64, u32)>>,
    slots: Vec<Option<Msg>>,
    free: Vec<u32>,
    seq: u64,
}

impl EventQueue {
    pub(super) fn push(&mut self, at: Duration, msg: Msg) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(msg);
                slot
            }
            None => {
                self.slots.push(Some(msg));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 pending events")
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, slot)));
    }

    /// The earliest event (ties in insertion order).
    pub(super) fn pop(&mut self) -> Option<(Duration, Msg)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        self.free.push(slot);
        let msg = self.slots[slot as usize]
            .take()
            .expect("queued slot holds a message");
        Some((at, msg))
    }
}
