//! The local HTTP API of a running node: JSON over HTTP/1.1 on a loopback
//! address, guarded by a bearer token, plus a live event stream (SSE). The
//! CLI uses it to talk to `huddle run`; a local web UI can too. README.md
//! documents every endpoint.
//!
//! Invariants: the server binds loopback addresses only, and answers nothing
//! without the token; it reads node state only through `NodeHandle::query`
//! and changes it only through `NodeHandle::command`, so a `POST` that
//! answers `200` has been carried out durably.

pub mod client;
pub mod types;
pub mod views;

pub mod audit;
mod blobs;
mod clinical;
mod server;

pub use blobs::{enrich as enrich_attachments, enrich_one as enrich_view, guess_media_type};
pub use clinical::policy_view as clinical_policy_view;
pub use server::{start, start_with, ApiError, ApiServer, BODY_LIMIT};

/// Generates a fresh bearer token: 32 bytes from the OS generator, hex.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    data_encoding::HEXLOWER.encode(&b)
}
