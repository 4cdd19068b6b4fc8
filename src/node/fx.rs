//! One step's effects, gathered as the node works and then put in the
//! order the output contract requires (see `node/mod.rs`).

use super::{Event, Output, Timer};
use crate::ids::{DeviceId, Millis};
use crate::replica::Persist;
use crate::sendq::Prio;
use crate::store::{keys, StoreOp};
use crate::wire::Reason;

/// Accumulates one step's effects, then orders them (see the module docs).
#[derive(Default)]
pub(crate) struct Fx {
    pub(super) persist: Vec<StoreOp>,
    /// How many of `persist`'s writes (counted from the first) claim
    /// nothing: changes received from a peer, which that peer still holds.
    /// A step whose writes are all like that asks for no flush; they become
    /// durable with the next flush, or when the store flushes on its own.
    pub(super) lazy: usize,
    pub(super) emit: Vec<Event>,
    /// Frames to send, each with its lane and rank (`sendq.rs`).
    pub(super) send: Vec<(DeviceId, Vec<u8>, Prio)>,
    pub(super) disconnect: Vec<(DeviceId, Reason)>,
    pub(super) timers: Vec<(Timer, Millis)>,
    /// Documents to read back from the store (`contain.rs`).
    pub(super) reload: Vec<[u8; 16]>,
}

impl Fx {
    pub(super) fn into_outputs(self) -> Vec<Output> {
        let mut out = Vec::with_capacity(
            2 + self.emit.len()
                + self.send.len()
                + self.disconnect.len()
                + self.timers.len()
                + self.reload.len(),
        );
        if !self.persist.is_empty() {
            let claims = self.persist.len() > self.lazy;
            out.push(Output::Persist(self.persist));
            if claims {
                out.push(Output::Flush);
            }
        }
        out.extend(self.emit.into_iter().map(Output::Emit));
        out.extend(
            self.send
                .into_iter()
                .map(|(peer, frame, prio)| Output::Send { peer, frame, prio }),
        );
        out.extend(
            self.disconnect
                .into_iter()
                .map(|(peer, reason)| Output::Disconnect { peer, reason }),
        );
        out.extend(
            self.timers
                .into_iter()
                .map(|(timer, at)| Output::SetTimer { timer, at }),
        );
        out.extend(self.reload.into_iter().map(|doc| Output::Reload { doc }));
        out
    }
}

/// The store writes for what a document's replica asks to persist.
pub(super) fn persist_ops(doc: &[u8; 16], p: Persist, out: &mut Vec<StoreOp>) {
    match p {
        Persist::Chunk { seq, bytes } => out.push(StoreOp::Put {
            key: keys::chunk(doc, seq),
            value: bytes,
        }),
        Persist::Snapshot { bytes, upto } => {
            out.push(StoreOp::Put {
                key: keys::snapshot(doc),
                value: bytes,
            });
            out.push(StoreOp::DeleteRange {
                from: keys::chunk(doc, 0),
                to: keys::chunk(doc, upto),
            });
            if upto == u64::MAX {
                out.push(StoreOp::Delete {
                    key: keys::chunk(doc, u64::MAX),
                });
            }
        }
    }
}
