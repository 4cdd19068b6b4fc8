//! The conversations a node holds: each one's header from the start, its
//! document from first use.
//!
//! At start the node reads only the store's index (protocol/storage.md §2):
//! per conversation its header and a [`DocMeta`] — heads digest, clock,
//! counts for the conversation list — rewritten in every batch that writes
//! the document. Catalogs, the conversation list and the membership gate
//! need nothing more, so a device with a thousand conversations serves its
//! user at once and loads a document only when a command, a view or a peer's
//! differing heads need it.
//!
//! Invariants:
//! - a document is loaded before anything writes to it, so the loader reads
//!   exactly what the store held at start (`store::DocLoader`);
//! - the stored [`DocMeta`] describes the stored document: it is written in
//!   the same batch as every chunk or snapshot (`Node::persist_conv`), and in
//!   the batch that first writes the header.

use std::cell::OnceCell;

use automerge::ChangeHash;

use super::{Fx, Node};
use crate::conversation::Conversation;
use crate::header::ConversationHeader;
use crate::ids::ConversationId;
use crate::replica::heads_digest;
use crate::store::{keys, DocMeta, StoreOp, StoredDoc};

/// One conversation: its header, and its document once loaded.
#[derive(Clone)]
pub(super) struct Slot {
    pub header: ConversationHeader,
    /// The index entry read at start; stale once the document is loaded.
    meta: Option<DocMeta>,
    /// `Some(None)`: loading failed (logged); the conversation is then
    /// unavailable until the next start rather than taking the node down.
    doc: OnceCell<Option<Conversation>>,
}

impl Slot {
    pub fn loaded(conv: Conversation) -> Slot {
        Slot {
            header: conv.header.clone(),
            meta: None,
            doc: OnceCell::from(Some(conv)),
        }
    }

    pub fn deferred(header: ConversationHeader, meta: DocMeta) -> Slot {
        Slot {
            header,
            meta: Some(meta),
            doc: OnceCell::new(),
        }
    }

    /// Drops the document from memory and leaves it unavailable (never
    /// loaded from the index again) until it is put back whole
    /// (`contain.rs`).
    pub fn drop_doc(&mut self) {
        self.meta = None;
        self.doc = OnceCell::from(None);
    }

    /// The document if it is loaded (never loads).
    pub fn if_loaded(&self) -> Option<&Conversation> {
        self.doc.get().and_then(Option::as_ref)
    }

    pub fn if_loaded_mut(&mut self) -> Option<&mut Conversation> {
        self.doc.get_mut().and_then(Option::as_mut)
    }

    /// The index entry, while the document is not loaded.
    pub fn stored_meta(&self) -> Option<&DocMeta> {
        if self.doc.get().is_some() {
            None
        } else {
            self.meta.as_ref()
        }
    }
}

impl Node {
    /// The conversation, loading its document on first use.
    pub fn conversation(&self, id: &ConversationId) -> Option<&Conversation> {
        let slot = self.convs.get(id)?;
        slot.doc
            .get_or_init(|| self.load_conversation(id, slot))
            .as_ref()
    }

    pub(super) fn conversation_mut(&mut self, id: &ConversationId) -> Option<&mut Conversation> {
        self.conversation(id)?;
        self.convs.get_mut(id)?.if_loaded_mut()
    }

    /// Why [`Node::conversation`] gave nothing, for a command's error.
    pub fn missing(&self, id: ConversationId) -> crate::node::CommandError {
        if self.convs.contains_key(&id) || self.damaged.contains_key(&id) {
            crate::node::CommandError::Unreadable(id)
        } else {
            crate::node::CommandError::UnknownConversation(id)
        }
    }

    pub(super) fn header_of(&self, id: &ConversationId) -> Option<&ConversationHeader> {
        self.convs.get(id).map(|s| &s.header)
    }

    /// How many conversations have their document in memory (for tests and
    /// benchmarks).
    pub fn loaded_conversations(&self) -> usize {
        self.convs
            .values()
            .filter(|s| s.if_loaded().is_some())
            .count()
    }

    /// The heads of a conversation, from the index while it is not loaded.
    pub(super) fn conversation_heads(&self, id: &ConversationId) -> Option<Vec<ChangeHash>> {
        let slot = self.convs.get(id)?;
        match slot.stored_meta() {
            Some(m) => Some(m.heads.iter().map(|h| ChangeHash(*h)).collect()),
            None => self.conversation(id).map(|c| c.replica().heads()),
        }
    }

    /// The heads digest of a conversation, from the index while it is not
    /// loaded.
    pub(super) fn conversation_digest(&self, id: &ConversationId) -> Option<[u8; 16]> {
        self.conversation_heads(id).map(|h| heads_digest(&h))
    }

    fn load_conversation(&self, id: &ConversationId, slot: &Slot) -> Option<Conversation> {
        let Some(loader) = &self.loader else {
            tracing::error!(conversation = %id, "no store to load the conversation from");
            return None;
        };
        let stored = match loader.0.load_doc(&id.0) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(conversation = %id, "cannot read the conversation: {e}");
                return None;
            }
        };
        match Conversation::load(
            slot.header.clone(),
            &self.actor,
            stored.snapshot.as_deref(),
            &stored.chunks,
            &stored.rejected,
        ) {
            Ok((c, _)) => {
                // A document that loads whole may still be short of what
                // the index recorded (a chunk lost with its key): the
                // index says where it must end up.
                let expected = slot.meta.as_ref().map(|m| &m.heads);
                let got: Vec<[u8; 32]> = c.replica().heads().iter().map(|h| h.0).collect();
                if expected.is_some_and(|e| *e != got) {
                    tracing::error!(conversation = %id, "the stored conversation is damaged: it does not reach the heads its index recorded");
                    return None;
                }
                tracing::debug!(conversation = %id, messages = c.len(), "loaded");
                Some(c)
            }
            Err(e) => {
                tracing::error!(conversation = %id, "the stored conversation is damaged: {e}");
                None
            }
        }
    }

    /// Builds the slot for a stored conversation at start.
    pub(super) fn slot_from_store(
        &mut self,
        id: ConversationId,
        header: ConversationHeader,
        doc: StoredDoc,
    ) -> Result<Slot, String> {
        if doc.deferred {
            // The index entry's clock was observed by `open_stored`.
            let meta = doc
                .meta
                .ok_or("a deferred conversation has no index entry")?;
            return Ok(Slot::deferred(header, meta));
        }
        let loaded = Conversation::load(
            header.clone(),
            &self.actor,
            doc.snapshot.as_deref(),
            &doc.chunks,
            &doc.rejected,
        )
        .map_err(|e| e.to_string())?;
        let (conv, applied) = self
            .audit_conversation(loaded, &header, &doc)
            .map_err(|e| e.to_string())?;
        for m in applied
            .messages
            .iter()
            .filter(|m| m.author_device == self.device)
        {
            self.clock.observe(u64::MAX, m.hlc);
        }
        if doc.meta.is_none() {
            // Written by a store upgrade, or never: write a real one at start.
            self.unindexed.insert(id);
        }
        Ok(Slot::loaded(conv))
    }

    /// A conversation this node starts holding: its header and index entry
    /// go to the store in this step's batch. Returns false, and writes
    /// nothing, if its id is set aside as damaged or the store already
    /// holds records under it that were not read at start (its index entry
    /// was lost or damaged): a fresh document written there would overwrite
    /// its chunks, so it is set aside instead, its records kept.
    pub(super) fn add_conversation(&mut self, header: ConversationHeader, fx: &mut Fx) -> bool {
        let id = header.id;
        if self.damaged.contains_key(&id) {
            // Set aside already (a direct conversation's id is fixed, so
            // the user may well open it again).
            return false;
        }
        if let Some(loader) = &self.loader {
            let why = match loader.0.load_doc(&id.0) {
                Ok(d) if d.header.is_none()
                    && d.snapshot.is_none()
                    && d.chunks.is_empty()
                    && d.rejected.is_empty() =>
                {
                    None
                }
                Ok(_) => Some("its records are in the store but were not read at start (its index entry is missing)".to_owned()),
                Err(e) => Some(format!("its records cannot be read: {e}")),
            };
            if let Some(why) = why {
                tracing::error!(conversation = %id, "the stored conversation is damaged and set aside (its records are kept): {why}");
                self.damaged.insert(id, why);
                return false;
            }
        }
        fx.persist.push(StoreOp::Put {
            key: keys::header(&id.0),
            value: header.encode(),
        });
        let conv = Conversation::new(header, &self.actor);
        self.convs.insert(id, Slot::loaded(conv));
        self.persist_index(&id, fx);
        true
    }

    /// Writes the index entry of a loaded conversation.
    pub(super) fn persist_index(&mut self, id: &ConversationId, fx: &mut Fx) {
        let Some(c) = self.convs.get(id).and_then(Slot::if_loaded) else {
            return;
        };
        let counts = self.list_counts(c);
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let meta = DocMeta {
            heads: c.replica().heads().iter().map(|h| h.0).collect(),
            clock: self.clock.last().0,
            messages: count(counts.messages),
            unread: count(counts.unread),
            last_activity: counts.last_activity.unwrap_or(0),
            to_ack: count(counts.to_ack),
            stat_to_ack: count(counts.stat_to_ack),
            last: counts.last,
        };
        fx.persist.push(StoreOp::Put {
            key: keys::index(&id.0),
            value: meta.encode(),
        });
    }
}

impl Node {
    /// Adds a stored conversation at start, or says why it cannot be read.
    pub(super) fn open_stored(&mut self, id: ConversationId, doc: StoredDoc) -> Result<(), String> {
        if let Some(meta) = &doc.meta {
            // Never issue a timestamp below one this device wrote, even
            // into a conversation that turns out damaged.
            self.clock.observe(u64::MAX, crate::hlc::Hlc(meta.clock));
        }
        let bytes = doc.header.as_deref().ok_or("its header is missing")?;
        let header = ConversationHeader::decode(bytes).map_err(|e| e.to_string())?;
        if header.id != id {
            return Err("its header names another conversation".into());
        }
        let slot = self.slot_from_store(id, header, doc)?;
        self.convs.insert(id, slot);
        Ok(())
    }
}
