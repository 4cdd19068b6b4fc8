//! The node's inputs, outputs, commands and events: the whole vocabulary
//! between the pure core and whatever drives it (the tokio shell or the
//! simulator).

use crate::clinical::{Assignment, SignedPolicy};
use crate::header::ConversationKind;
use crate::hlc::Hlc;
use crate::ids::{ConversationId, DeviceId, MemberId, MessageId, Millis};
use crate::membership::{Revocation, RevocationTarget};
use crate::message::{Fields, Priority};
use crate::store::{StoreOp, StoredDoc};
use crate::wire::Reason;

/// Something that happened, handed to [`Node::handle`](super::Node::handle).
#[derive(Clone, Debug)]
pub enum Input {
    /// The node has been constructed from the store and may begin: it
    /// publishes its certificate and schedules maintenance.
    Start,
    /// A transport connection to `peer` is up; Noise has authenticated that
    /// the peer holds the private key of `peer`.
    PeerConnected {
        peer: DeviceId,
    },
    PeerDisconnected {
        peer: DeviceId,
    },
    /// One frame from `peer`.
    Frame {
        peer: DeviceId,
        bytes: Vec<u8>,
    },
    Timer(Timer),
    /// What the store holds of `doc`, read because the node asked for it
    /// ([`Output::Reload`]) after dropping its copy in memory; `Err` if the
    /// store could not be read.
    Reloaded {
        doc: [u8; 16],
        stored: Result<StoredDoc, String>,
    },
}

/// Timers the node asks for. Setting a timer that is already set moves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// `peer` must have sent a valid hello by now.
    Hello(DeviceId),
    /// Write the delivered receipts that have piled up.
    Receipts,
    /// Periodic: re-check peers' certificates (expiry), compact.
    Maintenance,
    /// Tell peers about documents whose heads changed by relayed changes.
    Announce,
    /// Answer the peers whose sync messages left us lacking changes, if we
    /// still lack them.
    Answer,
    /// The pull of this document is overdue (see `node/pull.rs`).
    Pull([u8; 16]),
    /// Publish our certificate in the team document, if not done yet.
    Publish,
    /// Re-notifications, escalations or reminders are due (`clinical.rs`).
    Clinical,
    /// Seal the changes written since the last envelope (`sealing.rs`).
    Seal,
}

/// An effect for the shell to carry out, in order.
///
/// Contract: outputs are carried out in the order given; a [`Output::Flush`]
/// makes every earlier `Persist` durable before any later output is carried
/// out. The node always orders `Persist…, Flush` before the events and frames
/// that depend on them. A shell may delay a flush (group commit) only by also
/// delaying everything after it. A step whose `Persist` has no `Flush` after
/// it (a peer's conversation changes taken in) claims nothing by it: its
/// writes become durable with the next flush, or when the store flushes on
/// its own, and a crash before then loses only what peers still hold.
#[derive(Clone, Debug)]
pub enum Output {
    /// A frame for `peer`, written in the order `prio` gives among the
    /// frames queued for that peer (transport.md §5.1, `sendq.rs`).
    Send {
        peer: DeviceId,
        frame: Vec<u8>,
        prio: crate::sendq::Prio,
    },
    Disconnect {
        peer: DeviceId,
        reason: Reason,
    },
    Persist(Vec<StoreOp>),
    Flush,
    Emit(Event),
    SetTimer {
        timer: Timer,
        at: Millis,
    },
    /// Read `doc` back from the store, once every earlier `Persist` has been
    /// applied, and hand it to the node as [`Input::Reloaded`] (before any
    /// input that arrives later). The node asks for it after a library
    /// panicked on that document (`node/contain.rs`): its copy in memory
    /// may be half-changed, so it is dropped and read again.
    Reload {
        doc: [u8; 16],
    },
}

/// What a user (CLI, API, test) asks the node to do.
#[derive(Clone, Debug)]
pub enum Command {
    CreateConversation {
        kind: ConversationKind,
    },
    Send {
        conversation: ConversationId,
        body: String,
        priority: Priority,
        reply_to: Option<MessageId>,
        /// Who must acknowledge, a reminder… (sync.md §7.6); an escalation
        /// entry is only ever written by the node itself.
        fields: Fields,
    },
    /// Marks occurrence `occurrence` of a reminder done, for every target.
    ReminderDone {
        conversation: ConversationId,
        message: MessageId,
        occurrence: u16,
    },
    /// Has occurrence `occurrence` of a reminder fire again at `until`.
    Snooze {
        conversation: ConversationId,
        message: MessageId,
        occurrence: u16,
        until: Millis,
    },
    /// Installs a clinical policy the team authority signed.
    SetPolicy(Box<SignedPolicy>),
    /// Puts `holders` on call for `role` from `from_ms` to `to_ms`, signed
    /// by this device (whose certificate must hold the role); it replaces
    /// the assignments for the role that overlap that time.
    OnCall {
        role: String,
        holders: Vec<MemberId>,
        from_ms: Millis,
        to_ms: Millis,
    },
    /// Installs an on-call assignment the team authority signed.
    AddAssignment(Box<Assignment>),
    /// Marks everything in the conversation as read by this member.
    MarkRead {
        conversation: ConversationId,
    },
    /// Acknowledges an urgent or STAT message written by another member
    /// (sync.md §7.2); it also counts as that message read.
    Ack {
        conversation: ConversationId,
        message: MessageId,
    },
    /// Installs an authority-signed revocation.
    Revoke(Revocation),
    /// Records a security-relevant action in this device's audit trail
    /// (sync.md §8): what the node does not see itself (an unlock, a
    /// conversation read, an export, a passphrase change). Needs no
    /// membership.
    Audit(crate::trail::Action),
}

/// The immediate answer to a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Conversation(ConversationId),
    /// The message was stored; `Event::Sent` follows once it is durable.
    Message(MessageId),
    Done,
}

/// Why a command was refused. Each message is a sentence a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("this device is not a member of a team yet: join one with `huddle team join <token>`")]
    NoMembership,
    #[error("no conversation {0}")]
    UnknownConversation(ConversationId),
    #[error("conversation {0} could not be read from this device's store (the log says why); other conversations are unaffected")]
    Unreadable(ConversationId),
    #[error("no message {0} in that conversation")]
    UnknownMessage(MessageId),
    #[error("the message is empty")]
    EmptyBody,
    #[error("the message is too long ({len} bytes; the limit is {max} bytes): split it into several messages")]
    BodyTooLong { len: usize, max: usize },
    #[error("{0}")]
    InvalidConversation(String),
    #[error("the revocation is not signed by this team's authority")]
    BadRevocation,
    #[error("only urgent messages can be acknowledged (urgent or STAT); this one is routine")]
    NotAckable(MessageId),
    #[error("you wrote this message: only the other members acknowledge it")]
    OwnMessage(MessageId),
    #[error("{0}")]
    Invalid(String),
    #[error("message {0} is not a reminder for you")]
    NotYourReminder(MessageId),
    #[error("the local document could not be changed: {0}")]
    Document(String),
}

/// Something the user interface may show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    ConversationAdded {
        conversation: ConversationId,
        title: String,
    },
    MessageAdded {
        conversation: ConversationId,
        message: MessageId,
        hlc: Hlc,
        author: MemberId,
        priority: Priority,
        /// Written on this device.
        local: bool,
    },
    /// A message written here is durable on this device.
    Sent {
        conversation: ConversationId,
        message: MessageId,
    },
    ReceiptsChanged {
        conversation: ConversationId,
    },
    /// An urgent or STAT message still awaits our member's acknowledgement:
    /// re-notification `n` of `of` (sync.md §7.6).
    Alert {
        conversation: ConversationId,
        message: MessageId,
        priority: Priority,
        author: MemberId,
        n: u16,
        of: u16,
        /// How long this device has held it unacknowledged.
        waiting_ms: Millis,
    },
    /// This device wrote escalation level `level` of `message` into the
    /// role channel `channel`, as the message `entry`.
    Escalated {
        conversation: ConversationId,
        message: MessageId,
        level: u8,
        channel: ConversationId,
        entry: MessageId,
    },
    /// Occurrence `occurrence` of a reminder for our member is due.
    Reminder {
        conversation: ConversationId,
        message: MessageId,
        occurrence: u16,
        due_ms: Millis,
    },
    /// What awaits our member changed: an acknowledgement, a reminder done
    /// or snoozed (`Node::alerts` says what is left).
    AlertsChanged,
    /// An attachment fetched from peers is now held whole here (emitted by
    /// the shell, which does the fetching: protocol/blobs.md §4).
    AttachmentHeld {
        conversation: ConversationId,
        message: MessageId,
        hash: crate::blobs::BlobHash,
    },
    PeerJoined {
        peer: DeviceId,
        member: MemberId,
        name: String,
    },
    PeerLeft {
        peer: DeviceId,
    },
    /// We refused a peer, or a peer refused us.
    PeerRefused {
        peer: DeviceId,
        reason: Reason,
        by_us: bool,
    },
    Revoked {
        target: RevocationTarget,
    },
    /// Entries in a document failed to decode or verify and were dropped.
    Rejected {
        conversation: Option<ConversationId>,
        count: usize,
    },
}
