//! The upgrade pass for documents stored before they were append-only by
//! schema (protocol/storage.md §5, sync.md §7.5): every stored change is
//! replayed through the rules, in causal order, onto a fresh genesis; a
//! change that breaks them is set aside, and so is every change built on
//! one (it cannot be applied without it), and both are reported. The
//! document is then what the honest changes make.
//!
//! Invariant: nothing is deleted. What is set aside is kept in the store
//! (`doc/<id>/x/<hash>`), and the caller writes again, as changes of its
//! own, the genuine entries of changes set aside only for what they were
//! built on, so honest history is not stranded silently.

use std::collections::HashSet;

use automerge::ChangeHash;

use super::rules::Mode;
use super::{genesis, Replica, ReplicaError};

/// What an audit found, when it found anything.
#[derive(Clone, Debug)]
pub struct Audit {
    /// The document the honest changes make, saved whole.
    pub rebuilt: Vec<u8>,
    /// Changes set aside: those that break the rules, then those built on
    /// them, in causal order.
    pub aside: Vec<automerge::Change>,
    /// Why each change that broke the rules was set aside.
    pub breaches: Vec<String>,
}

impl Audit {
    /// How many changes were set aside only for what they were built on.
    pub fn stranded(&self) -> usize {
        self.aside.len() - self.breaches.len()
    }
}

impl Replica {
    /// Replays every change through the rules (`Mode::Stored`: list
    /// entries were checked one by one when they arrived and are read as
    /// entries anyway; structure and puts are checked); `None` if every
    /// change keeps them.
    pub fn audit(&self) -> Result<Option<Audit>, ReplicaError> {
        let (doc, roots) = genesis(&self.doc_id, self.schema);
        let genesis_hash = doc.get_heads();
        let mut fresh = Replica::with_doc(&self.doc_id, self.schema, doc, roots);
        fresh.rule = self.rule.clone();
        let mut aside = Vec::new();
        let mut aside_hashes: HashSet<ChangeHash> = HashSet::new();
        let mut breaches = Vec::new();
        for change in self.doc.get_changes(&[]) {
            if genesis_hash.contains(&change.hash()) {
                continue;
            }
            if change.deps().iter().any(|d| aside_hashes.contains(d)) {
                aside_hashes.insert(change.hash());
                aside.push(change);
                continue;
            }
            match fresh.check_changes_as(vec![change.clone()], None, Mode::Stored) {
                Ok(()) => {
                    let is_page = fresh.page_root_of(change.actor_id()).is_some();
                    fresh.doc.apply_changes([change])?;
                    if is_page {
                        fresh.find_objects();
                    }
                }
                Err(breach) => {
                    breaches.push(breach.0);
                    aside_hashes.insert(change.hash());
                    aside.push(change);
                }
            }
        }
        if aside.is_empty() {
            return Ok(None);
        }
        Ok(Some(Audit {
            rebuilt: fresh.doc.save(),
            aside,
            breaches,
        }))
    }
}
