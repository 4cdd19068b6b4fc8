//! The mailbox every team device keeps of envelopes it carries
//! (protocol/sealed.md §4), pure: bounded in envelopes and bytes in total,
//! per blinded tag and per neighbour that handed them over; STAT kept over
//! urgent over routine, the oldest of the lowest class dropped first (and
//! counted); expired envelopes dropped; an envelope whose every recipient
//! showed its done secret deleted, its id and secrets kept until it would
//! have expired so that a copy offered again is not taken and the secrets
//! travel on.
//!
//! Invariant: `bytes`, `by_tag` and `by_from` are always the sums over
//! `held`, and `order` holds exactly `held`'s ids.

use std::collections::{BTreeMap, BTreeSet};

use super::{done_commitment, Class, Envelope, DONE_LEN, MAX_LIFETIME_MS};
use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::Millis;

/// An envelope's id (`Envelope::id_of`).
pub type Id = [u8; 32];

/// What a neighbour that handed us nothing (ourselves) is counted as.
pub const OURS: [u8; 32] = [0; 32];

/// How much a mailbox holds (protocol/sealed.md §4.1).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub envelopes: usize,
    pub bytes: usize,
    /// Per blinded tag (a conversation on one day).
    pub tag_envelopes: usize,
    pub tag_bytes: usize,
    /// Envelopes, and bytes, first handed over by one neighbour (ours are
    /// not counted): one hostile team device fills at most this share.
    pub neighbour_envelopes: usize,
    pub neighbour_bytes: usize,
    /// Ids of deleted envelopes remembered.
    pub gone: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            envelopes: 8192,
            bytes: 32 * 1024 * 1024,
            tag_envelopes: 2048,
            tag_bytes: 8 * 1024 * 1024,
            neighbour_envelopes: 4096,
            neighbour_bytes: 8 * 1024 * 1024,
            gone: 32 * 1024,
        }
    }
}

/// One envelope held.
#[derive(Clone, Debug)]
pub struct Held {
    /// What the mailbox needs of the envelope, beside its bytes (holding
    /// the decoded envelope too would double what a full mailbox costs in
    /// memory; `Envelope::decode(&bytes)` when it is opened).
    pub head: Head,
    pub bytes: Vec<u8>,
    pub received: Millis,
    pub from: [u8; 32],
    /// Each slot's done secret, once shown.
    pub done: Vec<Option<[u8; 32]>>,
    /// Whether we tried it with our key: `Some(true)` if it was ours and
    /// everything in it is applied.
    pub settled: Option<bool>,
}

/// The fields of an envelope the mailbox works with.
#[derive(Clone, Debug)]
pub struct Head {
    pub class: Class,
    pub tag: [u8; 16],
    pub expires: Millis,
    /// Each slot's done commitment, in slot order.
    pub dones: Vec<[u8; DONE_LEN]>,
}

impl Head {
    fn of(env: &Envelope) -> Head {
        Head {
            class: env.class,
            tag: env.tag,
            expires: env.expires,
            dones: env.slots.iter().map(|s| s.done).collect(),
        }
    }
}

/// A deleted envelope: when it would have expired, and the secrets that
/// deleted it.
#[derive(Clone, Debug)]
pub struct Gone {
    pub expires: Millis,
    pub secrets: Vec<(u16, [u8; 32])>,
}

/// What became of an envelope offered.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Taken; these were dropped to make room.
    Taken { dropped: Vec<Id> },
    /// Held already, or deleted as delivered.
    Known,
    /// Expired, or claiming to live longer than an envelope may.
    Stale,
    /// Over a quota, and nothing of a lower class to drop.
    Full,
}

/// What a done secret did.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    /// Not an envelope held, or that slot shown already.
    Nothing,
    /// It does not open the slot's commitment (or there is no such slot).
    Bad,
    /// One more recipient has it.
    Progress,
    /// Every recipient has it: deleted.
    Complete,
}

/// Envelopes dropped to make room, by class (`GET /v1/status` shows them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub routine: u64,
    pub urgent: u64,
    pub stat: u64,
    /// Refused for a full quota.
    pub refused: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Mailbox {
    limits: Limits,
    held: BTreeMap<Id, Held>,
    /// (class, received, id): the first is the one dropped first.
    order: BTreeSet<(Class, Millis, Id)>,
    by_tag: BTreeMap<[u8; 16], (usize, usize)>,
    by_from: BTreeMap<[u8; 32], (usize, usize)>,
    bytes: usize,
    gone: BTreeMap<Id, Gone>,
    gone_order: BTreeSet<(Millis, Id)>,
    pub dropped: Dropped,
}

impl Mailbox {
    pub fn new(limits: Limits) -> Mailbox {
        Mailbox {
            limits,
            ..Mailbox::default()
        }
    }

    pub fn get(&self, id: &Id) -> Option<&Held> {
        self.held.get(id)
    }

    pub fn get_mut(&mut self, id: &Id) -> Option<&mut Held> {
        self.held.get_mut(id)
    }

    pub fn gone(&self, id: &Id) -> Option<&Gone> {
        self.gone.get(id)
    }

    pub fn knows(&self, id: &Id) -> bool {
        self.held.contains_key(id) || self.gone.contains_key(id)
    }

    /// Envelopes held, and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        (self.held.len(), self.bytes)
    }

    /// Deleted envelopes remembered.
    pub fn gone_len(&self) -> usize {
        self.gone.len()
    }

    /// Ids held, STAT first, then the oldest.
    pub fn held_ids(&self) -> Vec<Id> {
        let mut v: Vec<&(Class, Millis, Id)> = self.order.iter().collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        v.into_iter().map(|k| k.2).collect()
    }

    /// Every id held or remembered as deleted.
    pub fn known_ids(&self) -> impl Iterator<Item = &Id> {
        self.held.keys().chain(self.gone.keys())
    }

    /// Takes `env` (encoded as `bytes`) from neighbour `from` if it is new,
    /// live and fits, dropping routine before urgent before STAT, oldest
    /// first, to make room.
    pub fn offer(&mut self, now: Millis, bytes: Vec<u8>, env: Envelope, from: [u8; 32]) -> Offer {
        let id = Envelope::id_of(&bytes);
        if self.knows(&id) {
            return Offer::Known;
        }
        // The sealer's clock may run ahead of ours by a day at most.
        if env.expires <= now || env.expires > now + MAX_LIFETIME_MS + 24 * 3600 * 1000 {
            return Offer::Stale;
        }
        let len = bytes.len();
        let (n, b) = self.by_from.get(&from).copied().unwrap_or_default();
        if from != OURS
            && (n + 1 > self.limits.neighbour_envelopes || b + len > self.limits.neighbour_bytes)
        {
            self.dropped.refused += 1;
            return Offer::Full;
        }
        // Room within the tag's quota, then the whole mailbox's, each by
        // dropping what ranks below the newcomer.
        let mut dropped = Vec::new();
        let tag_full = |m: &Mailbox| {
            let t = m.by_tag.get(&env.tag).copied().unwrap_or_default();
            t.0 + 1 > m.limits.tag_envelopes || t.1 + len > m.limits.tag_bytes
        };
        while tag_full(self) {
            let Some(victim) = self.victim(env.class, Some(&env.tag)) else {
                self.dropped.refused += 1;
                self.undo(dropped);
                return Offer::Full;
            };
            dropped.push(self.drop_one(&victim));
        }
        while self.held.len() + 1 > self.limits.envelopes || self.bytes + len > self.limits.bytes {
            let Some(victim) = self.victim(env.class, None) else {
                self.dropped.refused += 1;
                self.undo(dropped);
                return Offer::Full;
            };
            dropped.push(self.drop_one(&victim));
        }
        let slots = env.slots.len();
        self.insert(
            id,
            Held {
                head: Head::of(&env),
                bytes,
                received: now,
                from,
                done: vec![None; slots],
                settled: None,
            },
        );
        Offer::Taken {
            dropped: dropped
                .into_iter()
                .map(|h| Envelope::id_of(&h.bytes))
                .collect(),
        }
    }

    /// The envelope to drop for a newcomer of `class`: the oldest of the
    /// lowest class not above it (within `tag` if given).
    fn victim(&self, class: Class, tag: Option<&[u8; 16]>) -> Option<Id> {
        self.order
            .iter()
            .take_while(|(c, _, _)| *c <= class)
            .find(|(_, _, id)| {
                tag.is_none_or(|t| self.held.get(id).is_some_and(|h| h.head.tag == *t))
            })
            .map(|k| k.2)
    }

    fn drop_one(&mut self, id: &Id) -> Held {
        let h = self.remove(id).expect("a victim is held");
        match h.head.class {
            Class::Routine => self.dropped.routine += 1,
            Class::Urgent => self.dropped.urgent += 1,
            Class::Stat => self.dropped.stat += 1,
        }
        h
    }

    /// Puts back what an offer dropped before it found no room after all.
    fn undo(&mut self, dropped: Vec<Held>) {
        for h in dropped {
            match h.head.class {
                Class::Routine => self.dropped.routine -= 1,
                Class::Urgent => self.dropped.urgent -= 1,
                Class::Stat => self.dropped.stat -= 1,
            }
            self.insert(Envelope::id_of(&h.bytes), h);
        }
    }

    fn insert(&mut self, id: Id, h: Held) {
        self.order.insert((h.head.class, h.received, id));
        let t = self.by_tag.entry(h.head.tag).or_default();
        t.0 += 1;
        t.1 += h.bytes.len();
        if h.from != OURS {
            let f = self.by_from.entry(h.from).or_default();
            f.0 += 1;
            f.1 += h.bytes.len();
        }
        self.bytes += h.bytes.len();
        self.held.insert(id, h);
    }

    fn remove(&mut self, id: &Id) -> Option<Held> {
        let h = self.held.remove(id)?;
        self.order.remove(&(h.head.class, h.received, *id));
        if let Some(t) = self.by_tag.get_mut(&h.head.tag) {
            t.0 -= 1;
            t.1 -= h.bytes.len();
            if t.0 == 0 {
                self.by_tag.remove(&h.head.tag);
            }
        }
        if h.from != OURS {
            if let Some(f) = self.by_from.get_mut(&h.from) {
                f.0 -= 1;
                f.1 -= h.bytes.len();
                if f.0 == 0 {
                    self.by_from.remove(&h.from);
                }
            }
        }
        self.bytes -= h.bytes.len();
        Some(h)
    }

    /// Slot `slot` of envelope `id` shows `secret`.
    pub fn done(&mut self, id: &Id, slot: u16, secret: [u8; 32]) -> Done {
        let Some(h) = self.held.get_mut(id) else {
            return Done::Nothing;
        };
        let i = usize::from(slot);
        let Some(d) = h.head.dones.get(i) else {
            return Done::Bad;
        };
        if done_commitment(&secret) != *d {
            return Done::Bad;
        }
        if h.done[i].is_some() {
            return Done::Nothing;
        }
        h.done[i] = Some(secret);
        if h.done.iter().any(Option::is_none) {
            return Done::Progress;
        }
        let h = self.remove(id).expect("held");
        self.bury(*id, h.head.expires, secrets_of(&h.done));
        Done::Complete
    }

    fn bury(&mut self, id: Id, expires: Millis, secrets: Vec<(u16, [u8; 32])>) {
        while self.gone.len() >= self.limits.gone {
            let Some(first) = self.gone_order.pop_first() else {
                break;
            };
            self.gone.remove(&first.1);
        }
        self.gone_order.insert((expires, id));
        self.gone.insert(id, Gone { expires, secrets });
    }

    /// Drops what expired by `now`: the ids of envelopes and of deleted
    /// envelopes' records no longer kept.
    pub fn expire(&mut self, now: Millis) -> Vec<Id> {
        let dead: Vec<Id> = self
            .held
            .iter()
            .filter(|(_, h)| h.head.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.remove(id);
        }
        let mut out = dead;
        while let Some(first) = self.gone_order.first().copied() {
            if first.0 > now {
                break;
            }
            self.gone_order.pop_first();
            self.gone.remove(&first.1);
            out.push(first.1);
        }
        out
    }

    /// The stored record of `id` (storage.md §2.5).
    pub fn record(&self, id: &Id) -> Option<Vec<u8>> {
        let mut w = Writer::new();
        if let Some(h) = self.held.get(id) {
            let secrets = secrets_of(&h.done);
            w.u8(0).u64_be(h.received).raw(&h.from).u8(match h.settled {
                None => 0,
                Some(false) => 1,
                Some(true) => 2,
            });
            write_secrets(&mut w, &secrets);
            w.raw(&h.bytes);
        } else {
            let g = self.gone.get(id)?;
            w.u8(1).u64_be(g.expires);
            write_secrets(&mut w, &g.secrets);
        }
        Some(w.finish())
    }

    /// Takes a record back at start; a record that does not read, or an
    /// envelope that expired meanwhile, is reported so it can be deleted.
    pub fn restore(&mut self, now: Millis, id: Id, record: &[u8]) -> Result<(), DecodeError> {
        let mut r = Reader::new(record);
        match r.u8("mailbox record kind")? {
            0 => {
                let received = r.u64_be("received")?;
                let from = r.array("neighbour")?;
                let settled = match r.u8("settled")? {
                    0 => None,
                    1 => Some(false),
                    2 => Some(true),
                    v => return Err(DecodeError::Unknown("settled", v.into())),
                };
                let secrets = read_secrets(&mut r)?;
                let bytes = r.raw(r.remaining(), "envelope")?.to_vec();
                if Envelope::id_of(&bytes) != id {
                    return Err(DecodeError::Invalid("a mailbox record under another id"));
                }
                let env = Envelope::decode(&bytes)?;
                if env.expires <= now {
                    return Err(DecodeError::Invalid("an expired envelope"));
                }
                let mut done = vec![None; env.slots.len()];
                for (slot, secret) in secrets {
                    let s = env
                        .slots
                        .get(usize::from(slot))
                        .ok_or(DecodeError::Invalid("a done secret for no slot"))?;
                    if done_commitment(&secret) != s.done {
                        return Err(DecodeError::Invalid("a done secret that does not open"));
                    }
                    done[usize::from(slot)] = Some(secret);
                }
                self.insert(
                    id,
                    Held {
                        head: Head::of(&env),
                        bytes,
                        received,
                        from,
                        done,
                        settled,
                    },
                );
            }
            1 => {
                let expires = r.u64_be("expires")?;
                let secrets = read_secrets(&mut r)?;
                r.finish()?;
                if expires <= now {
                    return Err(DecodeError::Invalid("an expired record"));
                }
                self.bury(id, expires, secrets);
            }
            k => return Err(DecodeError::Unknown("mailbox record kind", k.into())),
        }
        Ok(())
    }
}

fn secrets_of(done: &[Option<[u8; 32]>]) -> Vec<(u16, [u8; 32])> {
    done.iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i as u16, s)))
        .collect()
}

fn write_secrets(w: &mut Writer, secrets: &[(u16, [u8; 32])]) {
    w.varint(secrets.len() as u64);
    for (slot, s) in secrets {
        w.raw(&slot.to_be_bytes()).raw(s);
    }
}

fn read_secrets(r: &mut Reader<'_>) -> Result<Vec<(u16, [u8; 32])>, DecodeError> {
    let n = r.count(super::MAX_SLOTS, 34, "done secrets")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let slot = u16::from_be_bytes(r.array("slot")?);
        out.push((slot, r.array("done secret")?));
    }
    Ok(out)
}
