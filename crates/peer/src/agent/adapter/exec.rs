//! Executes driver outputs: swarm calls on the loop, disk and hashing on blocking
//! threads, imports and registry reads as tasks; results come back as driver events.

use std::sync::Arc;

use blobswarm_core::ReleaseId;
use blobswarm_core::node::ChunkOutcome;
use bytes::Bytes;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, gossipsub};
use tracing::{debug, warn};

use super::{EventLoop, import_release};
use crate::behaviour::topic_name;
use crate::driver::{Event, GossipId, Output, RejectReason, ReplyId, Topic, Verdict};

impl EventLoop {
    /// Drains and executes every driver output (executing one may feed the driver).
    pub(super) fn run_outputs(&mut self) {
        while let Some(output) = self.driver.poll_output() {
            self.exec(output);
        }
    }

    fn exec(&mut self, output: Output<PeerId>) {
        match output {
            Output::Send { peer, out, request } => {
                let id = self.swarm.behaviour_mut().rr.send_request(&peer, request);
                self.out_ids.insert(id, out);
            }
            Output::Respond {
                reply,
                response,
                payload,
            } => self.respond(reply, response, payload),
            Output::DropReply(reply) => {
                if let Some((id, _channel)) = self.channels.remove(&reply) {
                    self.reply_of.remove(&id);
                }
            }
            Output::ReadChunk {
                reply,
                blob,
                index,
                range,
            } => {
                let (store, tx) = (self.store.clone(), self.internal_tx.clone());
                let pool = self.pool.clone();
                tokio::task::spawn_blocking(move || {
                    let bytes = store.read_range_with(&blob, range, |n| pool.take(n)).ok();
                    let _ = tx.blocking_send(Event::ChunkRead {
                        reply,
                        blob,
                        index,
                        bytes,
                    });
                });
            }
            Output::VerifyAndStore {
                id,
                map,
                index,
                payload,
            } => {
                let (store, tx) = (self.store.clone(), self.internal_tx.clone());
                let pool = self.pool.clone();
                tokio::task::spawn_blocking(move || {
                    let outcome = ChunkOutcome::verify_then_store(&map, index, &payload, || {
                        store.write_chunk(&map, index, &payload)
                    });
                    // Stored or refused, the bytes are done with: the buffer takes the next chunk.
                    pool.put_bytes(payload);
                    let blob = map.blob();
                    let _ = tx.blocking_send(Event::ChunkDone { id, blob, outcome });
                });
            }
            Output::FetchRegistry {
                id,
                reference,
                blob,
                index,
                range,
            } => self.fetch_registry(id, reference, blob, index, range),
            Output::Gossip { topic, data } => self.gossip(topic, data),
            Output::GossipVerdict { id, verdict } => self.report_verdict(id, verdict),
            Output::KeepReport { from, report } => {
                if let Some(agg) = &self.aggregator {
                    agg.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(from, report, super::super::now().unix_ms);
                }
            }
            Output::Dial { peer, addrs } => self.dial(peer, addrs),
            Output::DialBootstrap => {
                for addr in self.bootstrap.clone() {
                    let _ = self.swarm.dial(addr);
                }
            }
            Output::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            other => self.exec_store(other),
        }
    }

    /// The outputs that touch the store, the import targets or the status.
    fn exec_store(&mut self, output: Output<PeerId>) {
        match output {
            Output::SaveRelease(signed) => {
                let root = self.store.root().to_owned();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = crate::saved_releases::save(&root, &signed) {
                        warn!(release = %signed.id().short(), error = %e, "cannot save release for a restart");
                    }
                });
            }
            Output::ForgetRelease(id) => crate::saved_releases::forget(self.store.root(), &id),
            Output::FinalizeBlob(map) => {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || {
                    // The map first, so a restart finds the complete blob resumable.
                    let blob = map.blob();
                    let saved = store.save_map(&map);
                    if let Err(e) =
                        saved.and_then(|()| store.finalize(&blob, map.size()).map(|_| ()))
                    {
                        warn!(%blob, error = %e, "cannot finalize blob");
                    }
                });
            }
            Output::RemoveBlobs(blobs) => {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || {
                    for blob in blobs {
                        store.remove_blob(&blob);
                    }
                });
            }
            Output::Checkpoint(work) => {
                let store = self.store.clone();
                self.checkpoint = Some(tokio::task::spawn_blocking(move || {
                    crate::checkpoint::run_pass(&store, work);
                }));
            }
            Output::Import { id, release } => self.import(id, release),
            Output::Status(snapshot) => self.publish_status(*snapshot),
            _ => {}
        }
    }

    fn respond(
        &mut self,
        reply: ReplyId,
        response: blobswarm_core::wire::Response,
        payload: Bytes,
    ) {
        let Some((id, channel)) = self.channels.remove(&reply) else {
            return;
        };
        if self
            .swarm
            .behaviour_mut()
            .rr
            .send_response(channel, (response, payload))
            .is_err()
        {
            // The requester is gone; no ResponseSent or InboundFailure may follow.
            self.reply_of.remove(&id);
            self.driver
                .handle(Event::ReplyEnded(reply), super::super::now());
        }
    }

    /// Herd guard: reads a chunk from the registry on a task.
    fn fetch_registry(
        &mut self,
        id: blobswarm_core::node::RequestId,
        reference: String,
        blob: blobswarm_core::Digest,
        index: u32,
        range: std::ops::Range<u64>,
    ) {
        let Some(fallback) = self.registry_fallback.clone() else {
            // The driver only asks when one is configured.
            return;
        };
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = fallback
                .read_range(reference, blob, range)
                .await
                .map_err(|e| e.source.to_string());
            let event = Event::RegistryChunk {
                id,
                blob,
                index,
                result,
            };
            let _ = tx.send(event).await;
        });
    }

    fn gossip(&mut self, topic: Topic, data: Vec<u8>) {
        let t = gossipsub::IdentTopic::new(topic_name(topic));
        match self.swarm.behaviour_mut().gossipsub.publish(t, data) {
            Ok(_) => {}
            Err(gossipsub::PublishError::Duplicate) if topic == Topic::Release => {}
            // Releases: peers that join later learn them through the sync on connect.
            Err(e) if topic == Topic::Release => debug!(error = %e, "release gossip not sent"),
            // No subscribed neighbour yet (InsufficientPeers): the next heartbeat retries.
            Err(e) if topic == Topic::Notice => debug!(error = %e, "swarm notice not sent"),
            Err(e) => debug!(error = %e, "progress report not sent"),
        }
    }

    /// Tells gossipsub whether to forward a message (and how to score its relayer).
    fn report_verdict(&mut self, id: GossipId, verdict: Verdict) {
        let Some((message_id, relayed_by)) = self.gossip_ids.remove(&id) else {
            return;
        };
        let acceptance = match verdict {
            Verdict::Accept => gossipsub::MessageAcceptance::Accept,
            // Counted, never forwarded, but no penalty for the relayer: while a seeder key
            // is rotated, honest nodes may trust different keys and relay in good faith.
            Verdict::Reject(RejectReason::Untrusted) => gossipsub::MessageAcceptance::Ignore,
            Verdict::Reject(_) => gossipsub::MessageAcceptance::Reject,
            Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &relayed_by, acceptance);
    }

    /// Dials a peer from peer exchange at the addresses that parse.
    fn dial(&mut self, peer: PeerId, addrs: Vec<Vec<u8>>) {
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .filter_map(|a| Multiaddr::try_from(a).ok())
            .collect();
        if addrs.is_empty() {
            return;
        }
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, error = %e, "peer exchange dial failed");
        }
    }

    fn import(&mut self, id: ReleaseId, release: Arc<blobswarm_core::Release>) {
        let runtime = self.runtime.clone();
        let store = self.store.clone();
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            // The driver keeps the error's text for status and reports.
            let result = import_release(store, runtime, release)
                .await
                .map_err(|e| e.to_string());
            let _ = tx.send(Event::ImportDone { id, result }).await;
        });
    }
}
