//! What the soak checks on V after a restart, through V's own API.
//!
//! Invariant: a confirmed message counts as found only when V's history
//! lists its id; a conversation whose message count is below what V
//! confirmed in it is a failure even where its history is not read.

use std::collections::{BTreeSet, HashSet};

use huddle::api::client::ApiClient;
use huddle::{ConversationId, MessageId};

use crate::writers::Ledger;

/// What one check found.
#[derive(Default)]
pub struct Found {
    /// Confirmed ids whose conversations were read, and found there.
    pub found: usize,
    /// Confirmed ids in the conversations read.
    pub looked_for: usize,
    /// Each failure, one sentence.
    pub problems: Vec<String>,
}

/// The ids in V's history of `conv`.
pub fn history_ids(api: &ApiClient, conv: &ConversationId) -> Result<HashSet<MessageId>, String> {
    Ok(api
        .history(conv, None)
        .map_err(|e| format!("history of {conv}: {e}"))?
        .into_iter()
        .map(|m| m.id)
        .collect())
}

/// Checks that V holds every message of `ledger`: by count in every
/// conversation, and id by id in the conversations of `read`.
pub fn check(
    api: &ApiClient,
    ledger: &Ledger,
    read: &BTreeSet<ConversationId>,
) -> Result<Found, String> {
    let mut f = Found::default();
    // A conversation set aside at start is one the store did not give back
    // whole: a failure even if no confirmed message of ours was in it.
    let status = api.status().map_err(|e| format!("status: {e}"))?;
    for d in &status.damaged {
        f.problems.push(format!(
            "conversation {} was set aside as damaged at start: {}",
            d.conversation, d.why
        ));
    }
    if !f.problems.is_empty() {
        return Ok(f);
    }
    let chats = api.chats().map_err(|e| format!("conversations: {e}"))?;
    for (conv, ids) in ledger {
        let held = chats.iter().find(|c| c.id == *conv).map(|c| c.messages);
        match held {
            None => f.problems.push(format!(
                "conversation {conv} ({} confirmed) is missing",
                ids.len()
            )),
            Some(n) if n < ids.len() => f.problems.push(format!(
                "conversation {conv} holds {n} messages, {} were confirmed in it",
                ids.len()
            )),
            Some(_) => {}
        }
        if !read.contains(conv) {
            continue;
        }
        let have = history_ids(api, conv)?;
        f.looked_for += ids.len();
        for id in ids {
            if have.contains(id) {
                f.found += 1;
            } else {
                f.problems
                    .push(format!("confirmed message {id} is missing from {conv}"));
            }
        }
    }
    Ok(f)
}

/// How many of the ids of `ledger` V's history holds.
pub fn count_found(api: &ApiClient, ledger: &Ledger) -> Result<(usize, usize), String> {
    let (mut found, mut total) = (0, 0);
    for (conv, ids) in ledger {
        let have = history_ids(api, conv)?;
        total += ids.len();
        found += ids.iter().filter(|id| have.contains(id)).count();
    }
    Ok((found, total))
}
