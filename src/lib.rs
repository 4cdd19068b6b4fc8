//! huddle: a peer-to-peer, offline-first mesh messenger for care teams.
//!
//! Crate map (see ARCHITECTURE.md for the bird's-eye view):
//!
//! - Core, always built, no I/O: [`ids`], [`hlc`], [`codec`], [`crypto`],
//!   [`membership`] (certificates, revocations, tokens), [`message`]
//!   (signed messages and receipts), [`header`] (conversation headers),
//!   [`replica`] (one Automerge document), [`conversation`], [`team`],
//!   [`wire`] (frames), [`store`] (the storage trait, the in-memory store,
//!   the key layout) and [`node`] (the sans-IO state machine).
//! - Behind the `store-sled` feature: the sled store and [`private_dir`]
//!   (the data directory kept owner-only).
//! - Behind `net`: the tokio/libp2p/mdns-sd shell. Behind `cli`: the binary.

#[cfg(feature = "cli")]
pub mod api;
#[cfg(feature = "store-sled")]
pub mod atrest;
pub mod blobs;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clinical;
pub mod codec;
pub mod conversation;
pub mod crypto;
#[cfg(feature = "cli")]
pub mod datadir;
#[cfg(feature = "cli")]
pub mod export;
pub mod header;
pub mod hlc;
pub mod ids;
pub mod membership;
pub mod message;
#[cfg(feature = "net")]
pub mod net;
pub mod node;
#[cfg(feature = "store-sled")]
pub mod private_dir;
pub mod replica;
pub mod sealed;
pub mod sendq;
pub mod store;
pub mod team;
pub mod trail;
#[cfg(feature = "cli")]
pub mod web;
pub mod wire;

pub use header::{ConversationHeader, ConversationKind};
pub use ids::{ConversationId, DeviceId, MemberId, MessageId, Millis, TeamId};
pub use message::Priority;
pub use node::{Command, Event, Input, Node, NodeConfig, Output, Reply};
