//! The membership gate for blobs (protocol/blobs.md §3.2): the same as for
//! the document that references them, never looser.

use super::Node;
use crate::blobs::{Attachment, BlobHash};
use crate::ids::{ConversationId, DeviceId, MessageId};

impl Node {
    /// The attachment `hash` of message `message` in `conversation`, if
    /// `peer` may have it: the peer proved a valid, unrevoked certificate of
    /// our team in this session, the conversation admits it, and an indexed
    /// message of that conversation references the blob. Any failure is
    /// `None`, whatever its reason.
    pub fn blob_gate(
        &self,
        peer: &DeviceId,
        conversation: &ConversationId,
        message: &MessageId,
        hash: &BlobHash,
    ) -> Option<Attachment> {
        if !self.may_share(&conversation.0, peer) {
            return None;
        }
        self.attachment(conversation, message, hash)
    }

    /// The attachment `hash` of an indexed message, for our own use.
    pub fn attachment(
        &self,
        conversation: &ConversationId,
        message: &MessageId,
        hash: &BlobHash,
    ) -> Option<Attachment> {
        self.conversation(conversation)?
            .get(message)?
            .fields
            .attachments
            .iter()
            .find(|a| a.hash == *hash)
            .cloned()
    }

    /// Every attachment of an indexed message.
    pub fn attachments_of(
        &self,
        conversation: &ConversationId,
        message: &MessageId,
    ) -> Vec<Attachment> {
        self.conversation(conversation)
            .and_then(|c| c.get(message))
            .map(|m| m.fields.attachments.clone())
            .unwrap_or_default()
    }

    /// The largest attachment this device sends, fetches or serves: the
    /// team policy's (protocol/blobs.md §5).
    pub fn attachment_limit(&self) -> u64 {
        self.clinical_policy().attachments.limit
    }

    /// Attachments up to this size are fetched when their message arrives.
    pub fn auto_fetch_bytes(&self) -> u64 {
        self.clinical_policy().attachments.auto_fetch
    }

    /// The connected devices that may hold `conversation`: where its blobs
    /// can be fetched from.
    pub fn blob_sources(&self, conversation: &ConversationId) -> Vec<DeviceId> {
        self.peers
            .keys()
            .filter(|d| self.may_share(&conversation.0, d))
            .copied()
            .collect()
    }

    /// The conversation holding message `id`, among those we hold.
    pub fn find_message(&self, id: &MessageId) -> Option<ConversationId> {
        self.conversation_ids()
            .find(|c| {
                self.conversation(c)
                    .is_some_and(|conv| conv.get(id).is_some())
            })
            .copied()
    }
}
