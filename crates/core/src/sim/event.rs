//! Events of the simulation, ordered by virtual time then insertion.

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
    Kill {
        node: u32,
    },
    Disconnect {
        node: u32,
        gone: u32,
    },
}

pub(super) struct Event {
    pub(super) at: Duration,
    pub(super) seq: u64,
    pub(super) msg: Msg,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}
