//! Reading a replica back from the store and writing what is new to it
//! (protocol/storage.md §3–4): a load that takes the document whole or
//! fails, a salvage for the team document, and the chunk or snapshot each
//! change needs.

use automerge::{ActorId, Automerge, LoadOptions, OnPartialLoad, ReadDoc, SaveOptions};

use super::{genesis, Entry, Replica, ReplicaError, Schema};

/// What must be written to the store after a mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// Append these change bytes as chunk number `seq`.
    Chunk { seq: u64, bytes: Vec<u8> },
    /// Replace the snapshot and delete every chunk with a number below
    /// `upto`; `upto == u64::MAX` deletes every chunk, that one too.
    Snapshot { bytes: Vec<u8>, upto: u64 },
}

/// Snapshots are written once the chunks written since the last one
/// outweigh it (amortised O(1) per byte), but never for less than this.
const MIN_COMPACT_BYTES: usize = 256 * 1024;

impl Replica {
    /// Rebuilds a replica from what the store holds, returning it with every
    /// entry it contains. Chunks must be given in ascending `seq` order.
    pub fn load(
        doc_id: &[u8; 16],
        schema: Schema,
        actor: &ActorId,
        snapshot: Option<&[u8]>,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<(Replica, Vec<Entry>), ReplicaError> {
        let (mut doc, roots) = genesis(doc_id, schema);
        // One load of the snapshot (or genesis) and every chunk after it:
        // Automerge applies a batch of changes in one pass, while a call per
        // chunk walks the document each time (quadratic in the number of
        // chunks). Strictly: by default Automerge skips a chunk that does
        // not parse, and every chunk after it, with only a warning, and
        // keeps changes whose dependencies are missing waiting unseen. A
        // stored document that does not load whole is an error, never a
        // silently shorter history.
        let mut all = match snapshot {
            Some(bytes) => bytes.to_vec(),
            None => doc.save(),
        };
        all.reserve(chunks.iter().map(|(_, b)| b.len()).sum());
        for (_, b) in chunks {
            all.extend_from_slice(b);
        }
        let options = LoadOptions::new().on_partial_load(OnPartialLoad::Error);
        let mut loaded = Automerge::load_with_options(&all, options)?;
        drop(all);
        if snapshot.is_some() {
            // Genesis is in every snapshot we wrote: merging it is a no-op.
            loaded.merge(&mut doc)?;
        }
        let doc = loaded;
        let missing = doc.get_missing_deps(&[]);
        if !missing.is_empty() {
            return Err(ReplicaError::Incomplete(missing.len()));
        }
        Ok(Self::loaded(
            doc_id, schema, actor, doc, roots, snapshot, chunks,
        ))
    }

    /// What loads of a stored document that does not load whole (see
    /// [`Replica::load`]): the snapshot if it loads, then every chunk that
    /// parses, in order; changes whose dependencies are lost wait for a
    /// peer to send those. Only for a document every member holds (the
    /// team document), whose lost parts come back from peers. Returns how
    /// many stored parts were skipped.
    pub fn salvage(
        doc_id: &[u8; 16],
        schema: Schema,
        actor: &ActorId,
        snapshot: Option<&[u8]>,
        chunks: &[(u64, Vec<u8>)],
    ) -> (Replica, Vec<Entry>, usize) {
        let (mut doc, roots) = genesis(doc_id, schema);
        let base = doc.save();
        let mut skipped = 0;
        if let Some(bytes) = snapshot {
            match Automerge::load(bytes) {
                Ok(mut loaded) => match loaded.merge(&mut doc) {
                    Ok(_) => doc = loaded,
                    Err(_) => skipped += 1,
                },
                Err(_) => skipped += 1,
            }
        }
        let strict = || LoadOptions::new().on_partial_load(OnPartialLoad::Error);
        for (_, bytes) in chunks {
            // Parse it on its own first: `load_incremental` would skip a
            // bad chunk silently.
            let parses = Automerge::load_with_options(&[base.as_slice(), bytes].concat(), strict());
            if parses.is_err() || doc.load_incremental(bytes).is_err() {
                skipped += 1;
            }
        }
        let (replica, entries) = Self::loaded(doc_id, schema, actor, doc, roots, snapshot, chunks);
        (replica, entries, skipped)
    }

    fn loaded(
        doc_id: &[u8; 16],
        schema: Schema,
        actor: &ActorId,
        doc: Automerge,
        roots: Vec<automerge::ObjId>,
        snapshot: Option<&[u8]>,
        chunks: &[(u64, Vec<u8>)],
    ) -> (Replica, Vec<Entry>) {
        let mut replica = Replica::with_doc(doc_id, schema, doc.with_actor(actor.clone()), roots);
        replica.saved_heads = replica.doc.get_heads();
        // A damaged store may hold a chunk numbered u64::MAX: then there is
        // no next number, and the next write is a snapshot that replaces
        // every chunk (fuzz finding `stored/crash-last-chunk`).
        replica.next_chunk = chunks.last().map_or(0, |(s, _)| s.saturating_add(1));
        replica.chunk_bytes = chunks.iter().map(|(_, b)| b.len()).sum();
        replica.snapshot_bytes = snapshot.map_or(0, <[u8]>::len);
        replica.find_objects();
        let entries = replica.all_entries();
        // The genesis change is never stored on its own: it is recreated.
        if replica.snapshot_bytes == 0 && chunks.is_empty() {
            replica.saved_heads = Vec::new();
        }
        (replica, entries)
    }

    /// True if every change since the last [`Replica::take_persist`] is saved.
    pub fn is_saved(&self) -> bool {
        self.saved_heads == self.doc.get_heads()
    }

    /// What to write so the store holds everything this replica has.
    pub fn take_persist(&mut self) -> Option<Persist> {
        let heads = self.doc.get_heads();
        if heads == self.saved_heads {
            return None;
        }
        let mut bytes = Vec::new();
        let mut saved = std::mem::take(&mut self.saved_heads);
        for page in self.unsaved_pages.drain(..) {
            bytes.extend_from_slice(page.raw_bytes());
            saved.push(page.hash());
        }
        // After a local write on top of what is saved, the one unsaved
        // change is the one just made (its dependencies were the heads
        // then); otherwise Automerge collects what is unsaved.
        match &self.last_local {
            Some(c) if heads == [c.hash()] && c.deps().iter().all(|d| saved.contains(d)) => {
                bytes.extend_from_slice(c.raw_bytes());
            }
            _ => bytes.extend(self.doc.save_after(&saved)),
        }
        self.saved_heads = heads;
        self.chunk_bytes += bytes.len();
        if self.chunk_bytes > MIN_COMPACT_BYTES.max(self.snapshot_bytes)
            || self.next_chunk == u64::MAX
        {
            // Without the changes still waiting for their dependencies
            // (Automerge's default save appends them): those came from a
            // peer, and what they wait for will be written lazily, unflushed
            // (`Fx::lazy`), so a crash may lose it while this flushed
            // snapshot stays, and a snapshot that needs a change the store
            // lacks does not load: the conversation would be set aside.
            // They are saved with what they wait for, once it arrives.
            let snapshot = self.doc.save_with_options(SaveOptions {
                deflate: true,
                retain_orphans: false,
            });
            self.snapshot_bytes = snapshot.len();
            self.chunk_bytes = 0;
            let upto = self.next_chunk;
            if upto == u64::MAX {
                // Every chunk goes (chunk u64::MAX too, `Persist::Snapshot`):
                // numbering starts again.
                self.next_chunk = 0;
            }
            return Some(Persist::Snapshot {
                bytes: snapshot,
                upto,
            });
        }
        let seq = self.next_chunk;
        self.next_chunk += 1;
        Some(Persist::Chunk { seq, bytes })
    }

    /// Full save, for tests and benchmarks.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{chunk_each, sync_pair, SCHEMA};
    use super::*;

    /// Every chunk holds exactly the changes made since the one before, as
    /// Automerge itself collects them: after a write of our own on top of
    /// what is saved, the change just made (the copy built once for push
    /// and store); after anything else, what `save_after` collects.
    #[test]
    fn each_chunk_holds_exactly_the_unsaved_changes() {
        let id = [1u8; 16];
        let actor = ActorId::from([2u8; 16].as_slice());
        let mut a = Replica::new(&id, SCHEMA, &actor);
        let mut b = Replica::new(&id, SCHEMA, &ActorId::from([3u8; 16].as_slice()));
        type Step<'a> = &'a dyn Fn(&mut Replica, &mut Replica);
        let steps: [Step; 5] = [
            &|a, _| a.insert(1000, 0, b"one".to_vec()).unwrap(),
            &|a, b| {
                b.insert(1000, 0, b"from b".to_vec()).unwrap();
                sync_pair(a, b);
            },
            &|a, _| {
                a.insert(1000, 0, b"two".to_vec()).unwrap();
                a.insert(1000, 0, b"three".to_vec()).unwrap();
            },
            &|a, b| {
                b.insert(1000, 0, b"b again".to_vec()).unwrap();
                sync_pair(a, b);
                a.insert(1000, 0, b"on top of b's".to_vec()).unwrap();
            },
            &|a, _| a.put(1000, 1, "k", b"v".to_vec()).unwrap(),
        ];
        let mut chunks = Vec::new();
        for step in steps {
            let before = a.saved_heads.clone();
            step(&mut a, &mut b);
            let expected = a.doc.save_after(&before);
            match a.take_persist().unwrap() {
                Persist::Chunk { seq, bytes } => {
                    assert_eq!(bytes, expected);
                    chunks.push((seq, bytes));
                }
                Persist::Snapshot { .. } => unreachable!("tiny document"),
            }
        }
        let (reloaded, _) = Replica::load(&id, SCHEMA, &actor, None, &chunks).unwrap();
        assert_eq!(reloaded.heads(), a.heads());
        assert_eq!(reloaded.all_entries(), a.all_entries());
    }

    /// A damaged store's chunk numbered u64::MAX leaves no next number:
    /// the next write is a snapshot that replaces every chunk, and the
    /// numbering starts again (fuzz finding `stored/crash-last-chunk`).
    #[test]
    fn a_chunk_numbered_u64_max_is_compacted_not_overflowed() {
        let id = [1u8; 16];
        let actor = ActorId::from([2u8; 16].as_slice());
        let mut a = Replica::new(&id, SCHEMA, &actor);
        let chunks = chunk_each(&mut a, 1, |a, i| a.insert(1000, 0, vec![i]).unwrap());
        let last = vec![(u64::MAX, chunks[0].1.clone())];
        let (mut r, _) = Replica::load(&id, SCHEMA, &actor, None, &last).unwrap();
        r.insert(1000, 0, b"after".to_vec()).unwrap();
        assert!(matches!(
            r.take_persist(),
            Some(Persist::Snapshot { upto: u64::MAX, .. })
        ));
        r.insert(1000, 0, b"again".to_vec()).unwrap();
        assert!(matches!(
            r.take_persist(),
            Some(Persist::Chunk { seq: 0, .. })
        ));
    }

    /// A stored document that does not load whole (a chunk that does not
    /// parse, or one missing) is an error, not a shorter history; salvage
    /// (for the team document) keeps what does load.
    #[test]
    fn a_damaged_or_missing_chunk_fails_the_load() {
        let id = [1u8; 16];
        let actor = ActorId::from([2u8; 16].as_slice());
        let mut a = Replica::new(&id, SCHEMA, &actor);
        let chunks = chunk_each(&mut a, 4, |a, i| a.insert(1000, 0, vec![i]).unwrap());
        let mut damaged = chunks.clone();
        let mid = damaged[1].1.len() / 2;
        damaged[1].1[mid] ^= 0x40;
        let mut missing = chunks.clone();
        missing.remove(1);
        for bad in [&damaged, &missing] {
            assert!(Replica::load(&id, SCHEMA, &actor, None, bad).is_err());
        }
        let (salvaged, entries, skipped) = Replica::salvage(&id, SCHEMA, &actor, None, &damaged);
        assert_eq!(skipped, 1);
        assert_eq!(
            entries,
            vec![Entry::Item {
                root: 0,
                value: vec![0]
            }]
        );
        // What waits on the lost change is applied once a peer sends it.
        let mut salvaged = salvaged;
        sync_pair(&mut a, &mut salvaged);
        assert_eq!(salvaged.heads(), a.heads());
        assert_eq!(salvaged.all_entries().len(), 4);
        let (whole, _) = Replica::load(&id, SCHEMA, &actor, None, &chunks).unwrap();
        assert_eq!(whole.heads(), a.heads());
    }

    /// A snapshot taken while a peer's change waits for one it depends on
    /// loads on its own: the crash soak (issue 19) found a conversation set
    /// aside after a SIGKILL, its snapshot holding such a change and the
    /// change it waited for, written later without a flush, lost.
    #[test]
    fn a_snapshot_leaves_out_changes_waiting_for_their_dependencies() {
        let id = [1u8; 16];
        let actor = ActorId::from([2u8; 16].as_slice());
        let mut a = Replica::new(&id, SCHEMA, &actor);
        let mut b = Replica::new(&id, SCHEMA, &ActorId::from([3u8; 16].as_slice()));
        b.insert(1000, 0, b"first".to_vec()).unwrap();
        sync_pair(&mut a, &mut b);
        b.insert(1000, 0, b"depended on".to_vec()).unwrap();
        b.insert(1000, 0, b"waits".to_vec()).unwrap();
        let waits = b.doc.get_last_local_change().unwrap().clone();
        a.doc.apply_changes([waits]).unwrap();
        assert_eq!(a.doc.get_missing_deps(&[]).len(), 1, "the change waits");
        a.insert(1000, 0, b"ours".to_vec()).unwrap();
        a.chunk_bytes = MIN_COMPACT_BYTES;
        let Some(Persist::Snapshot { bytes, .. }) = a.take_persist() else {
            panic!("a snapshot was due");
        };
        let (reloaded, _) = Replica::load(&id, SCHEMA, &actor, Some(&bytes), &[])
            .expect("the snapshot loads whole");
        assert_eq!(reloaded.heads(), a.heads());
        // The change left out comes with what it waited for.
        sync_pair(&mut a, &mut b);
        let Some(Persist::Chunk { bytes: chunk, seq }) = a.take_persist() else {
            panic!("a chunk was due");
        };
        let (whole, _) = Replica::load(&id, SCHEMA, &actor, Some(&bytes), &[(seq, chunk)])
            .expect("snapshot and chunk load whole");
        assert_eq!(whole.heads(), a.heads());
        assert_eq!(whole.all_entries(), a.all_entries());
    }

    #[test]
    fn persisted_chunks_reload() {
        let id = [1u8; 16];
        let actor = ActorId::from([2u8; 16].as_slice());
        let mut a = Replica::new(&id, SCHEMA, &actor);
        let chunks = chunk_each(&mut a, 5, |a, i| {
            a.insert(1000, 0, vec![i]).unwrap();
            a.put(1000, 1, &format!("k{i}"), vec![i]).unwrap();
        });
        let (b, entries) = Replica::load(&id, SCHEMA, &actor, None, &chunks).unwrap();
        assert_eq!(b.heads(), a.heads());
        assert_eq!(entries.len(), 10);
        let (c, _) = Replica::load(&id, SCHEMA, &actor, Some(&a.save()), &[]).unwrap();
        assert_eq!(c.heads(), a.heads());
    }
}
