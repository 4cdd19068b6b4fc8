//! Pages of a list root (protocol/sync.md §7.1): the page change every
//! replica makes alike, finding the pages a document holds (and the objects
//! a conflicting put hides), and making the next page when the newest is
//! full.

use std::collections::HashSet;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjType, ReadDoc, Value, ROOT};

use super::{genesis, Replica, Schema};
use crate::crypto;

/// Page `k` (≥ 1) of list root `name`: its root key.
pub fn page_key(name: &str, k: u64) -> String {
    format!("{name}.{k}")
}

/// The actor of the changes creating the pages of root `name` of document
/// `doc_id` (sync.md §7.1).
pub fn page_actor(doc_id: &[u8; 16], name: &str) -> ActorId {
    let d = crypto::sha256(&[
        b"huddle/page/v1",
        doc_id,
        &(name.len() as u64).to_be_bytes(),
        name.as_bytes(),
    ]);
    ActorId::from(&d[..16])
}

/// Pages `1..=upto` of list root `name`: genesis and the page changes, a
/// document of their own from which the next page change is made.
pub fn page_chain(doc_id: &[u8; 16], schema: Schema, name: &str, upto: u64) -> Automerge {
    let (doc, _) = genesis(doc_id, schema);
    let mut chain = doc.with_actor(page_actor(doc_id, name));
    for k in 1..=upto {
        next_page(&mut chain, name, k);
    }
    chain
}

/// Makes page `k` on a chain holding pages `1..k`.
fn next_page(chain: &mut Automerge, name: &str, k: u64) -> automerge::Change {
    let mut tx = chain.transaction();
    tx.put_object(ROOT, page_key(name, k), ObjType::List)
        .expect("a fresh key");
    tx.commit_with(CommitOptions::default().with_time(0));
    chain.get_last_local_change().expect("the change just made")
}

/// The change creating page `k` (≥ 1) of list root `name`: every replica
/// makes it byte for byte alike (actor from [`page_actor`], seq `k`, time 0,
/// depending on page `k - 1`'s change, or on genesis for page 1, one op
/// creating the list under [`page_key`]), so replicas that fill a page
/// concurrently create the same page, not two conflicting ones. The pages
/// share one actor and their object ids grow with `k`, so a document with
/// many pages has few actors and keeps its newest page last.
pub fn page_change(doc_id: &[u8; 16], schema: Schema, name: &str, k: u64) -> automerge::Change {
    let mut chain = page_chain(doc_id, schema, name, k - 1);
    next_page(&mut chain, name, k)
}

/// `name.k` with `k` ≥ 1 in canonical decimal, for list root `name`.
fn parse_page_key(schema: Schema, key: &str) -> Option<(usize, u64)> {
    let (name, k) = key.rsplit_once('.')?;
    let root = schema
        .roots
        .iter()
        .position(|(n, t)| *n == name && *t == ObjType::List)?;
    if k.starts_with('0') || !k.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let k: u64 = k.parse().ok()?;
    Some((root, k))
}

/// The newest page of a root.
#[derive(Clone, Debug)]
pub(super) struct Tail {
    pub(super) k: u64,
    pub(super) obj: automerge::ObjId,
    /// How many elements it holds, counted from our inserts and the
    /// patches of others' (Automerge's `length` walks the whole list), or
    /// `None` until first needed. Off only through a faulty peer, and then
    /// harmlessly: a deletion (huddle never deletes) makes the next page
    /// early, inserts into a page a conflicting put hides (no patches) let
    /// it grow past the page length.
    pub(super) len: Option<usize>,
}

impl Tail {
    pub(super) fn new(k: u64, obj: automerge::ObjId) -> Tail {
        Tail { k, obj, len: None }
    }
}

impl Replica {
    /// Finds the pages of every paged root and the objects a put under a
    /// root or page key hides. Returns the page changes found for the
    /// first time, oldest first.
    ///
    /// A page made by its page change is found by that change, never by
    /// its key: a member's put under the key, concurrent with the page or
    /// made after it, or a deletion of the key, takes the page out of the
    /// document's tree but cannot take it out of the document, so the page
    /// is still read (by object id) and still takes our inserts. Objects
    /// others put under a page key are read too.
    pub(super) fn find_objects(&mut self) -> Vec<automerge::Change> {
        let mut new = Vec::new();
        for root in 0..self.schema.roots.len() {
            if self.schema.page_len == 0 || self.schema.roots[root].1 != ObjType::List {
                continue;
            }
            loop {
                let k = self.made[root].len() as u64 + 1;
                let change = self.page_change_cached(root, k);
                if self.doc.get_change_meta_by_hash(&change.hash()).is_none() {
                    break;
                }
                self.take_page(root, &change);
                new.push(change);
            }
        }
        let mut hidden = Vec::new();
        for (root, ((name, _), obj)) in self.schema.roots.iter().zip(&self.roots).enumerate() {
            if !self.shows(name, obj) {
                hidden.push((obj.clone(), root));
            }
        }
        for (root, made) in self.made.iter().enumerate() {
            let name = self.schema.roots[root].0;
            for (k, obj) in (1..).zip(made) {
                if !self.shows(&page_key(name, k), obj) {
                    hidden.push((obj.clone(), root));
                }
            }
        }
        let made: HashSet<automerge::ObjId> = self.made.iter().flatten().cloned().collect();
        let keys: Vec<String> = self
            .doc
            .map_range(ROOT, ..)
            .map(|i| i.key.to_string())
            .collect();
        for key in keys {
            if let Some((root, _)) = parse_page_key(self.schema, &key) {
                self.others_under(root, &key, |o| made.contains(o), &mut hidden);
            }
        }
        self.hidden = hidden;
        new
    }

    /// Whether the change making the next page of some paged root is in
    /// the document (a cached hash lookup per root).
    pub(super) fn next_page_arrived(&mut self) -> bool {
        (0..self.schema.roots.len()).any(|root| {
            if self.schema.page_len == 0 || self.schema.roots[root].1 != ObjType::List {
                return false;
            }
            let k = self.made[root].len() as u64 + 1;
            let hash = self.page_change_cached(root, k).hash();
            self.doc.get_change_meta_by_hash(&hash).is_some()
        })
    }

    /// Takes in the page a page change of `root` made (the next one).
    fn take_page(&mut self, root: usize, change: &automerge::Change) {
        // The change's one op makes the page: its id is the page's.
        let obj = automerge::ObjId::Id(change.start_op().get(), change.actor_id().clone(), 0);
        self.made[root].push(obj.clone());
        self.pages.insert(obj.clone(), root);
        self.tails[root] = Tail::new(self.made[root].len() as u64, obj);
    }

    /// Does root key `key` show `obj` (rather than another value, or none)?
    fn shows(&self, key: &str, obj: &automerge::ObjId) -> bool {
        matches!(self.doc.get(ROOT, key), Ok(Some((_, o))) if o == *obj)
    }

    /// Lists that others put under page key `key` (not by a page change):
    /// read too, and hidden unless shown.
    fn others_under(
        &mut self,
        root: usize,
        key: &str,
        by_page_change: impl Fn(&automerge::ObjId) -> bool,
        hidden: &mut Vec<(automerge::ObjId, usize)>,
    ) {
        let Ok(values) = self.doc.get_all(ROOT, key) else {
            return;
        };
        for (v, obj) in values {
            if !matches!(v, Value::Object(ObjType::List)) || by_page_change(&obj) {
                continue;
            }
            if !self.shows(key, &obj) {
                hidden.push((obj.clone(), root));
            }
            self.pages.insert(obj, root);
        }
    }

    /// The change making page `k` of `root`, from the cached page chain
    /// (one new change when pages are made in order, as they are).
    pub(super) fn page_change_cached(&mut self, root: usize, k: u64) -> automerge::Change {
        let name = self.schema.roots[root].0;
        let mut chain = match self.chains[root].take() {
            Some((upto, chain, change)) if upto == k => {
                self.chains[root] = Some((upto, chain, change.clone()));
                return change;
            }
            Some((upto, chain, _)) if upto + 1 == k => chain,
            _ => page_chain(&self.doc_id, self.schema, name, k - 1),
        };
        let change = next_page(&mut chain, name, k);
        self.chains[root] = Some((k, chain, change.clone()));
        change
    }

    /// Root `root`'s objects: the root, then its pages.
    pub(super) fn objects_of(&self, root: usize) -> Vec<automerge::ObjId> {
        let mut pages: Vec<_> = self
            .pages
            .iter()
            .filter(|(_, r)| **r == root)
            .map(|(o, _)| o.clone())
            .collect();
        pages.sort();
        std::iter::once(self.roots[root].clone())
            .chain(pages)
            .collect()
    }

    /// How many page objects the document holds (for tests and benchmarks).
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Makes the next page of `root` if its newest one is full; returns the
    /// change that made it.
    pub(super) fn next_page_if_full(&mut self, root: usize) -> Option<automerge::Change> {
        if self.schema.page_len == 0 {
            return None;
        }
        let tail = &mut self.tails[root];
        let len = *tail.len.get_or_insert_with(|| self.doc.length(&tail.obj));
        if len < self.schema.page_len {
            return None;
        }
        let (name, k) = (self.schema.roots[root].0, tail.k);
        let change = self.page_change_cached(root, k + 1);
        if self.doc.get_change_meta_by_hash(&change.hash()).is_some() {
            return None; // made: `find_objects` made it our newest page
        }
        if let Err(e) = self.doc.apply_changes([change.clone()]) {
            // Only a peer that forged a change under the page's actor can
            // cause this; the newest page then simply keeps growing.
            tracing::warn!("cannot make page {} of {name}: {e}", k + 1);
            return None;
        }
        // Our page change touches only its own key: take in its page and
        // whatever a member put under that key, not every page again
        // (O(pages), a millisecond at 100k messages).
        self.take_page(root, &change);
        let key = page_key(name, k + 1);
        let page = self.made[root].last().expect("just made").clone();
        let mut found = Vec::new();
        if !self.shows(&key, &page) {
            found.push((page.clone(), root));
        }
        self.others_under(root, &key, |o| *o == page, &mut found);
        for h in found {
            if !self.hidden.contains(&h) {
                self.hidden.push(h);
            }
        }
        self.unsaved_pages.push(change.clone());
        Some(change)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::tests::{chunk_each, sync_pair};
    use super::super::{Entry, Persist};
    use super::*;
    use automerge::sync;
    use automerge::transaction::Transaction;

    const PAGED: Schema = Schema {
        roots: &[("items", ObjType::List), ("keys", ObjType::Map)],
        page_len: 2,
    };

    /// The paged test schema, for other modules' tests.
    pub(in crate::replica) fn paged_schema() -> Schema {
        PAGED
    }

    fn values(r: &Replica) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = r
            .all_entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Item { root: 0, value } => Some(value),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    fn paged(actor: u8) -> Replica {
        Replica::new(&[1u8; 16], PAGED, &ActorId::from([actor; 16].as_slice()))
    }

    /// A replica from before documents were append-only by schema: what a
    /// reader finds in a store written then (the rules refuse these
    /// changes now: `rules::tests`).
    fn unruled(actor: u8) -> Replica {
        paged(actor).without_rules()
    }

    /// `a` pushes its last change to `b`; returns what `b` took in.
    fn push(
        a: &Replica,
        sa: &mut sync::State,
        b: &mut Replica,
        sb: &mut sync::State,
    ) -> Vec<Entry> {
        let msg = a.local_push().unwrap().message_for(sa);
        b.receive_sync(sb, &msg).unwrap()
    }

    /// `a` inserts item `i` and pushes it to `b`, which must report that
    /// item and nothing else.
    fn insert_and_push(
        i: u8,
        a: &mut Replica,
        sa: &mut sync::State,
        b: &mut Replica,
        sb: &mut sync::State,
    ) {
        a.insert(1000, 0, vec![i]).unwrap();
        let got = push(a, sa, b, sb);
        let item = Entry::Item {
            root: 0,
            value: vec![i],
        };
        assert_eq!(got, vec![item], "item {i}, and only it, reported");
    }

    #[test]
    fn replicas_filling_pages_apart_make_the_same_pages() {
        let mut a = paged(2);
        let mut b = paged(3);
        for i in 0..5u8 {
            a.insert(1000, 0, vec![b'a', i]).unwrap();
            b.insert(1000, 0, vec![b'b', i]).unwrap();
        }
        assert_eq!(a.page_count(), 2, "5 items in pages of 2: pages 1 and 2");
        sync_pair(&mut a, &mut b);
        assert_eq!(a.heads(), b.heads());
        // Each made pages 1 and 2 by itself: the same changes, so the same
        // two objects, not four.
        assert_eq!((a.page_count(), b.page_count()), (2, 2));
        assert_eq!(values(&a).len(), 10);
        assert_eq!(values(&a), values(&b));
        // The next insert sees a full newest page and makes page 3.
        a.insert(1000, 0, b"c".to_vec()).unwrap();
        assert_eq!(a.page_count(), 3);
    }

    #[test]
    fn a_push_carries_the_page_it_made() {
        let id = [1u8; 16];
        let mut a = paged(2);
        let mut b = paged(3);
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        let mut b_chunks = Vec::new();
        for i in 0..4u8 {
            // Applied at once, page change and all: nothing held back for a
            // missing dependency.
            insert_and_push(i, &mut a, &mut sa, &mut b, &mut sb);
            assert_eq!(b.heads(), a.heads());
            if let Some(Persist::Chunk { seq, bytes }) = b.take_persist() {
                b_chunks.push((seq, bytes));
            }
        }
        // What b persisted, the page change it received included, reloads.
        let other = ActorId::from([4u8; 16].as_slice());
        let (reloaded, entries) = Replica::load(&id, PAGED, &other, None, &b_chunks).unwrap();
        assert_eq!(reloaded.heads(), b.heads());
        assert_eq!(entries.len(), 4);
        assert_eq!((a.page_count(), b.page_count()), (1, 1));
        // b writes into the page it learnt of, not a page of its own.
        b.insert(1000, 0, vec![9]).unwrap();
        assert_eq!(b.page_count(), 2, "page 1 was full: b makes page 2");
        push(&b, &mut sb, &mut a, &mut sa);
        assert_eq!(values(&a), values(&b));
        assert_eq!(a.heads(), b.heads());
    }

    #[test]
    fn pages_reload_from_chunks_and_snapshots() {
        let id = [1u8; 16];
        let actor = ActorId::from([2u8; 16].as_slice());
        let mut a = Replica::new(&id, PAGED, &actor);
        let chunks = chunk_each(&mut a, 7, |a, i| a.insert(1000, 0, vec![i]).unwrap());
        for (snapshot, chunks) in [(None, &chunks[..]), (Some(a.save()), &[][..])] {
            let (mut b, entries) =
                Replica::load(&id, PAGED, &actor, snapshot.as_deref(), chunks).unwrap();
            assert_eq!(b.heads(), a.heads());
            assert_eq!(entries.len(), 7);
            assert_eq!(b.page_count(), 3);
            // Writes go on into the newest page, not into a new page 1.
            b.insert(1000, 0, vec![7]).unwrap();
            assert_eq!(b.page_count(), 3);
            b.insert(1000, 0, vec![8]).unwrap();
            assert_eq!(b.page_count(), 4);
        }
    }

    /// A hostile member puts objects of its own over the `items` root and
    /// over page 1 (its puts win the conflict: higher op counters), which
    /// hides the honest objects from Automerge's patches. Every message
    /// written into them still reaches the receiver live.
    #[test]
    fn a_peer_hiding_a_root_or_a_page_hides_no_entry() {
        let mut a = unruled(2);
        let mut b = unruled(3);
        let mut m = paged(0xff);
        m.local(1000, |tx| {
            tx.put_object(ROOT, "items", ObjType::List)?;
            tx.put_object(ROOT, "items.1", ObjType::List)?;
            Ok(())
        })
        .unwrap();
        sync_pair(&mut m, &mut a);
        sync_pair(&mut m, &mut b);
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        for i in 0..4u8 {
            insert_and_push(i, &mut a, &mut sa, &mut b, &mut sb);
        }
        assert_eq!(values(&a).len(), 4);
        assert_eq!(values(&a), values(&b));
        assert_eq!(
            b.page_count(),
            2,
            "page 1, and the hostile object under its key"
        );
    }

    /// After three items (page 1 made, holding the third), a member
    /// rewrites the root map with `rewrite`, knowing page 1; then the
    /// writer crosses into page 2 while the reader must report every item.
    fn rewritten_root_map_hides_no_entry(
        rewrite: impl FnOnce(&mut Transaction<'_>) -> Result<(), automerge::AutomergeError>,
    ) {
        let mut a = unruled(2);
        let mut b = unruled(3);
        let mut m = paged(0xff);
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        for i in 0..3u8 {
            insert_and_push(i, &mut a, &mut sa, &mut b, &mut sb);
        }
        assert_eq!(a.page_count(), 1, "page 1 holds the third item");
        sync_pair(&mut a, &mut m);
        m.local(1000, rewrite).unwrap();
        sync_pair(&mut m, &mut a);
        sync_pair(&mut m, &mut b);
        // a's item 4 makes page 2, which a member's put may hide; b's item
        // 5 goes into it, and a must report it with no help from a patch
        // on the root map: a took in the page it made itself. Then both
        // ways again. (A hidden page is read whole once by a receiver, so
        // the receiver's own items in it are reported again then; indexing
        // drops such duplicates.)
        let (mut sb2, mut sa2) = (sync::State::new(), sync::State::new());
        for i in 3..13u8 {
            let (from, sf, to, st) = if i == 5 || i >= 8 {
                (&mut b, &mut sb2, &mut a, &mut sa2)
            } else {
                (&mut a, &mut sa, &mut b, &mut sb)
            };
            from.insert(1000, 0, vec![i]).unwrap();
            let got = push(from, sf, to, st);
            let item = Entry::Item {
                root: 0,
                value: vec![i],
            };
            assert!(got.contains(&item), "item {i} reported: {got:?}");
            let known = |e: &Entry| matches!(e, Entry::Item { value, .. } if value[0] <= i);
            assert!(got.iter().all(known), "item {i}: {got:?}");
        }
        assert_eq!(values(&a).len(), 13);
        assert_eq!(values(&a), values(&b));
        for r in [&a, &b] {
            let actor = ActorId::from([9u8; 16].as_slice());
            let (reloaded, _) =
                Replica::load(&[1u8; 16], PAGED, &actor, Some(&r.save()), &[]).unwrap();
            assert_eq!(
                values(&reloaded),
                values(&a),
                "every item after a restart too"
            );
        }
    }

    /// A put made after the page it replaces (not concurrent with it), or
    /// made before the next page is, takes the page out of the document's
    /// tree just the same.
    #[test]
    fn a_peer_replacing_a_root_or_a_page_hides_no_entry() {
        rewritten_root_map_hides_no_entry(|tx| {
            tx.put_object(ROOT, "items", ObjType::List)?;
            tx.put_object(ROOT, "items.1", ObjType::List)?;
            tx.put_object(ROOT, "items.2", ObjType::Map)?;
            Ok(())
        });
    }

    #[test]
    fn a_peer_deleting_a_root_or_a_page_key_hides_no_entry() {
        rewritten_root_map_hides_no_entry(|tx| {
            tx.delete(ROOT, "items")?;
            tx.delete(ROOT, "items.1")?;
            Ok(())
        });
    }

    /// A member makes the next page, writes into it and deletes its key,
    /// all in what one sync message carries: no patch touches the root
    /// map, and the receiver must still find the page and report what is
    /// in it (found only at the next load, its entries were trusted there
    /// without ever being verified).
    #[test]
    fn a_page_whose_key_goes_in_the_same_message_is_still_read() {
        let mut a = unruled(2);
        let mut m = paged(0xff);
        for i in 0..2u8 {
            a.insert(1000, 0, vec![i]).unwrap();
        }
        sync_pair(&mut a, &mut m);
        let mut sm = sync::State::new();
        let mut sa = sync::State::new();
        // What a has, m knows: the next message carries only m's changes.
        sync_pair(&mut m, &mut a);
        m.insert(1000, 0, vec![2]).unwrap(); // makes page 1
        m.insert(1000, 0, vec![3]).unwrap();
        m.local(1000, |tx| tx.delete(ROOT, "items.1")).unwrap();
        let mut got = Vec::new();
        while let Some(msg) = m.generate_sync(&mut sm) {
            got.extend(a.receive_sync(&mut sa, &msg).unwrap());
            if let Some(reply) = a.generate_sync(&mut sa) {
                m.receive_sync(&mut sm, &reply).unwrap();
            }
        }
        for i in [2u8, 3] {
            let item = Entry::Item {
                root: 0,
                value: vec![i],
            };
            assert!(got.contains(&item), "item {i} reported: {got:?}");
        }
        assert_eq!(a.page_count(), 1, "a found page 1");
    }

    #[test]
    fn page_keys_are_canonical() {
        assert_eq!(parse_page_key(PAGED, "items.1"), Some((0, 1)));
        assert_eq!(parse_page_key(PAGED, "items.12"), Some((0, 12)));
        for bad in [
            "items.0", "items.01", "items.", "items.x", "keys.1", "items.+1",
        ] {
            assert_eq!(parse_page_key(PAGED, bad), None, "{bad}");
        }
    }
}
