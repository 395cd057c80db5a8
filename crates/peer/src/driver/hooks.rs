//! A seam for test builds that make an agent misbehave (corrupt chunks, replayed
//! releases, request floods), so the chaos tests can attack real agents while the
//! production driver carries no hostile code path: it uses [`NoHooks`].

use blobswarm_core::SignedRelease;
use blobswarm_core::wire::{Request, Response};
use bytes::Bytes;

use super::Topic;

/// Calls the driver makes at the points a hostile agent would act differently. Every
/// method defaults to doing nothing.
pub trait Hooks<P>: Send {
    /// A release was accepted.
    fn release_accepted(&mut self, _signed: &SignedRelease) {}

    /// An answer is about to be sent (chunks with their payload); may rewrite it.
    fn answer(&mut self, _response: &mut Response, _payload: &mut Bytes) {}

    /// The status tick: requests to send now, given the peers connected and whether this
    /// node holds a complete release. Their answers come back through [`Hooks::answered`].
    fn tick(&mut self, _connected: &[P], _holds_release: bool) -> Vec<(P, Request)> {
        Vec::new()
    }

    /// The status tick: raw messages to publish now, as they are (a test agent's forged,
    /// oversized or undecodable gossip, which the honest driver never builds).
    fn gossip(&mut self) -> Vec<(Topic, Vec<u8>)> {
        Vec::new()
    }

    /// A request sent for the hook was answered (`ok`) or failed; returns more to send.
    fn answered(&mut self, _peer: P, _ok: bool) -> Vec<(P, Request)> {
        Vec::new()
    }
}

/// The production agent: no hooks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl<P> Hooks<P> for NoHooks {}
