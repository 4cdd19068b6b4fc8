//! A verified member turned hostile: Mallory, holding a genuine certificate
//! and connected to Ana, sends her any sequence of frames — made-up ones,
//! Mallory's genuine ones damaged, changes that edit a shared document any
//! way Automerge allows, and raw bytes — between honest traffic, timers and
//! reconnections. Ben, honest, is connected to Ana and takes what she
//! relays.
//!
//! What must hold after any sequence (DESIGN.md invariants): no node
//! panics, contained or not; Ana still holds every message she held before
//! Mallory turned (append-only); and Ana still writes and reads.
//! `catalog` is the same fixture restricted to catalogs, headers and heads,
//! so the fuzzer spends its time on how a node compares what it holds.

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use huddle::node::{Command, Input, Timer};
use huddle::team::TEAM_DOC_ID;
use huddle::wire::{CatalogEntry, Frame, HeadsEntry, Reason};
use huddle::{ConversationId, MessageId, Priority};

use super::mesh::{group_of, try_tampered_frame, Mesh};
use super::{pick, structured, Damage};

const ANA: usize = 0;
const MAL: usize = 1;
const BEN: usize = 2;
/// Frames and timers within which the ward must fall quiet after the
/// steps: an exchange that never ends is a finding, found fast.
const QUIET_WITHIN: u64 = 50_000;

#[derive(Arbitrary, Debug)]
enum Step {
    Raw(Vec<u8>),
    Made(Made),
    /// Mallory writes honestly; the frames wait in the queue.
    Writes(u16, Urgency),
    /// The `n`th frame waiting from Mallory to Ana, damaged, delivered.
    Damaged(u16, Vec<Damage>),
    /// A change to one of Mallory's documents, any edit Automerge allows.
    Tamper(u16, Vec<Edit>),
    /// Up to this many waiting frames delivered, in order.
    Deliver(u8),
    Fire(TimerPick),
    Later(u32),
    Reconnect,
    AnaWrites(u16),
}

#[derive(Arbitrary, Debug)]
enum CatalogStep {
    Made(CatalogFrame),
    Deliver(u8),
    Fire(TimerPick),
    Later(u32),
    Reconnect,
}

#[derive(Arbitrary, Debug)]
enum Made {
    Catalog(CatalogFrame),
    Sync {
        doc: Doc,
        more: bool,
        data: Vec<u8>,
    },
    /// Mallory's own sync message for a document, damaged.
    GenuineSync(u16, Vec<Damage>),
    /// Mallory's certificate's secret, damaged.
    Identify(Vec<Damage>),
    Refuse(u8),
}

#[derive(Arbitrary, Debug)]
enum CatalogFrame {
    Catalog(Vec<(Doc, [u8; 16])>, bool),
    Heads(Vec<(Doc, Vec<Head>)>),
    /// The header of a conversation Mallory holds (one Ana is not in among
    /// them), damaged.
    Header(u16, Vec<Damage>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Doc {
    Known(u16),
    Any([u8; 16]),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Head {
    Known(u16),
    Any([u8; 32]),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Urgency {
    Routine,
    Urgent,
    Ack,
    Read,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum TimerPick {
    Hello,
    Receipts,
    Maintenance,
    Announce,
    Answer,
    Publish,
    Pull(Doc),
}

/// One edit inside a document: objects are found by walking it from the
/// root, so the edit can reach any map or list the schema has.
#[derive(Arbitrary, Debug)]
enum Edit {
    Put(u8, String, Vec<u8>),
    Delete(u8, u16),
    Insert(u8, u16, Vec<u8>),
    Object(u8, String, bool),
    Counter(u8, String, i64),
}

/// Ana, Mallory and Ben of one team after a morning's traffic.
#[derive(Clone)]
struct Ward {
    m: Mesh,
    docs: Vec<[u8; 16]>,
    heads: Vec<[u8; 32]>,
    before: BTreeSet<MessageId>,
    group: ConversationId,
}

thread_local! {
    /// Built once per thread; every run starts from a copy (building it
    /// takes 50 times longer than a run's steps).
    static WARD: Ward = Ward::build();
}

impl Ward {
    fn new() -> Ward {
        WARD.with(Ward::clone)
    }

    fn build() -> Ward {
        let mut m = Mesh::new(31);
        m.add_member("Ana", &["charge-nurse"]);
        m.add_member("Mallory", &["charge-nurse"]);
        m.add_member("Ben", &[]);
        m.connect_all(&[ANA, MAL, BEN]);
        m.run_until_quiet();
        let group = group_of(&mut m, ANA, &[ANA, MAL, BEN], "Bay 2");
        // A conversation Ana is not in.
        let aside = group_of(&mut m, MAL, &[MAL, BEN], "Mallory and Ben");
        for (i, by) in [ANA, MAL, BEN, ANA].into_iter().enumerate() {
            m.send_text(by, group, &format!("obs round {i}"));
        }
        m.send_text(BEN, aside, "not for Ana");
        m.run_until_quiet();
        let mut docs: Vec<[u8; 16]> = m.devices[MAL]
            .node
            .conversation_ids()
            .map(|c| c.0)
            .collect();
        docs.push(TEAM_DOC_ID);
        let heads = docs
            .iter()
            .filter_map(|d| m.devices[MAL].node.conversation(&ConversationId(*d)))
            .flat_map(|c| c.replica().heads())
            .map(|h| h.0)
            .collect();
        let before = message_ids(&m, group);
        Ward {
            m,
            docs,
            heads,
            before,
            group,
        }
    }

    fn doc(&self, d: Doc) -> [u8; 16] {
        match d {
            Doc::Known(p) => pick(&self.docs, p).unwrap_or_default(),
            Doc::Any(id) => id,
        }
    }

    fn head(&self, h: Head) -> [u8; 32] {
        match h {
            Head::Known(p) => pick(&self.heads, p).unwrap_or_default(),
            Head::Any(h) => h,
        }
    }

    /// A frame from Mallory, if she is still connected to Ana.
    fn mallory_sends(&mut self, bytes: Vec<u8>) {
        if !self.m.links.contains(&(ANA, MAL)) {
            return;
        }
        let peer = self.m.devices[MAL].id();
        let now = self.m.now;
        let out = self.m.devices[ANA]
            .node
            .handle(now, Input::Frame { peer, bytes });
        self.m.apply(ANA, out);
    }

    fn catalog_frame(&self, f: &CatalogFrame) -> Vec<u8> {
        match f {
            CatalogFrame::Catalog(entries, last) => Frame::Catalog {
                entries: entries
                    .iter()
                    .map(|(d, heads)| CatalogEntry {
                        doc: self.doc(*d),
                        heads: *heads,
                    })
                    .collect(),
                last: *last,
            }
            .encode(),
            CatalogFrame::Heads(entries) => Frame::Heads {
                entries: entries
                    .iter()
                    .map(|(d, heads)| HeadsEntry {
                        doc: self.doc(*d),
                        heads: heads.iter().map(|h| self.head(*h)).collect(),
                    })
                    .collect(),
            }
            .encode(),
            CatalogFrame::Header(p, damage) => {
                let Some(id) = pick(&self.docs, *p) else {
                    return Vec::new();
                };
                let Some(c) = self.m.devices[MAL].node.conversation(&ConversationId(id)) else {
                    return Vec::new();
                };
                let mut f = Frame::Header {
                    header: c.header.clone(),
                }
                .encode();
                damage.iter().for_each(|d| d.apply(&mut f));
                f
            }
        }
    }

    fn made(&self, made: &Made) -> Vec<u8> {
        match made {
            Made::Catalog(f) => self.catalog_frame(f),
            Made::Sync { doc, more, data } => Frame::Sync {
                doc: self.doc(*doc),
                more: *more,
                data: data.clone(),
            }
            .encode(),
            Made::GenuineSync(p, damage) => {
                let doc = pick(&self.docs, *p).unwrap_or_default();
                let mal = &self.m.devices[MAL].node;
                let data = if doc == TEAM_DOC_ID {
                    None
                } else {
                    mal.conversation(&ConversationId(doc)).and_then(|c| {
                        c.replica()
                            .generate_sync(&mut automerge::sync::State::new())
                    })
                };
                let mut data = data.unwrap_or_default();
                damage.iter().for_each(|d| d.apply(&mut data));
                Frame::Sync {
                    doc,
                    more: false,
                    data,
                }
                .encode()
            }
            Made::Identify(damage) => {
                let cert = self.m.devices[MAL].cert.as_ref().expect("a member");
                let mut f = Frame::Identify {
                    secret: cert.secret(),
                }
                .encode();
                damage.iter().for_each(|d| d.apply(&mut f));
                f
            }
            Made::Refuse(code) => Frame::Refuse {
                reason: Reason::from_code(*code),
            }
            .encode(),
        }
    }

    fn deliver(&mut self, n: u8) {
        for _ in 0..n.min(64) {
            if !self.m.step() {
                break;
            }
        }
    }

    fn fire(&mut self, t: TimerPick) {
        let timer = match t {
            TimerPick::Hello => Timer::Hello(self.m.devices[MAL].id()),
            TimerPick::Receipts => Timer::Receipts,
            TimerPick::Maintenance => Timer::Maintenance,
            TimerPick::Announce => Timer::Announce,
            TimerPick::Answer => Timer::Answer,
            TimerPick::Publish => Timer::Publish,
            TimerPick::Pull(d) => Timer::Pull(self.doc(d)),
        };
        let now = self.m.now;
        let out = self.m.devices[ANA].node.handle(now, Input::Timer(timer));
        self.m.apply(ANA, out);
    }

    fn later(&mut self, ms: u32) {
        self.m.now += u64::from(ms);
    }

    fn reconnect(&mut self) {
        self.m.disconnect(ANA, MAL);
        self.m.connect(ANA, MAL);
    }

    fn writes(&mut self, p: u16, u: Urgency) {
        let Some(id) = pick(&self.docs, p).filter(|d| *d != TEAM_DOC_ID) else {
            return;
        };
        let conversation = ConversationId(id);
        let cmd = match u {
            Urgency::Routine | Urgency::Urgent => Command::Send {
                conversation,
                body: format!("from Mallory {p}"),
                priority: match u {
                    Urgency::Urgent => Priority::Urgent,
                    _ => Priority::Routine,
                },
                reply_to: None,
                fields: Default::default(),
            },
            Urgency::Read => Command::MarkRead { conversation },
            Urgency::Ack => match message_ids(&self.m, conversation).into_iter().next() {
                Some(message) => Command::Ack {
                    conversation,
                    message,
                },
                None => return,
            },
        };
        let _ = self.m.command(MAL, cmd);
    }

    /// Takes the `p`th frame waiting from Mallory to Ana out of the queue.
    fn waiting_mallory_sends(&mut self, p: u16) -> Option<Vec<u8>> {
        let at: Vec<usize> = (self.m.queue.iter().enumerate())
            .filter(|(_, (from, to, _))| *from == MAL && *to == ANA)
            .map(|(i, _)| i)
            .collect();
        let i = pick(&at, p)?;
        self.m.queue.remove(i).map(|(_, _, f)| f)
    }

    fn tamper(&mut self, p: u16, edits: &[Edit]) -> Option<Vec<u8>> {
        let id = pick(&self.docs, p).filter(|d| *d != TEAM_DOC_ID)?;
        try_tampered_frame(&self.m, MAL, ConversationId(id), |tx| {
            for e in edits.iter().take(8) {
                edit(tx, e);
            }
            Ok(())
        })
    }

    /// What must hold after any sequence.
    fn check(mut self) {
        for d in &self.m.devices {
            assert_eq!(d.node.contained_panics(), 0, "a node contained a panic");
        }
        let after = message_ids(&self.m, self.group);
        let lost: Vec<_> = self.before.difference(&after).collect();
        assert!(lost.is_empty(), "Ana lost messages she held: {lost:?}");
        let kept = (self.m.devices[ANA].node.conversation(&self.group))
            .map(|c| c.len())
            .unwrap_or_default();
        let cmd = Command::Send {
            conversation: self.group,
            body: "Ana is still here".into(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        };
        assert!(self.m.command(ANA, cmd).is_ok(), "Ana can no longer write");
        let now = (self.m.devices[ANA].node.conversation(&self.group)).map(|c| c.len());
        assert_eq!(now, Some(kept + 1), "Ana's message is not in her history");
    }
}

fn message_ids(m: &Mesh, id: ConversationId) -> BTreeSet<MessageId> {
    (m.devices[ANA].node.history(&id, None).unwrap_or_default())
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// Every map and list of the document, walked from the root (at most 64).
fn objects(tx: &Transaction<'_>) -> Vec<(ObjId, ObjType)> {
    let mut out = vec![(ROOT, ObjType::Map)];
    let mut i = 0;
    while i < out.len() && out.len() < 64 {
        let (obj, ty) = out[i].clone();
        let props: Vec<automerge::Prop> = match ty {
            ObjType::Map | ObjType::Table => tx.keys(&obj).map(Into::into).collect(),
            _ => (0..tx.length(&obj).min(32)).map(Into::into).collect(),
        };
        for p in props {
            if let Ok(Some((Value::Object(t), id))) = tx.get(&obj, p) {
                out.push((id, t));
            }
        }
        i += 1;
    }
    out
}

fn edit(tx: &mut Transaction<'_>, e: &Edit) {
    let objs = objects(tx);
    let at = |p: u8| objs[usize::from(p) % objs.len()].clone();
    let bytes = |b: &[u8]| ScalarValue::Bytes(b.to_vec());
    let _ = match e {
        Edit::Put(o, key, v) => match at(*o) {
            (obj, ObjType::Map | ObjType::Table) => tx.put(&obj, key.as_str(), bytes(v)),
            (obj, _) => tx.put(&obj, key.len(), bytes(v)),
        },
        Edit::Delete(o, k) => match at(*o) {
            (obj, ObjType::Map | ObjType::Table) => {
                let keys: Vec<String> = tx.keys(&obj).collect();
                match pick(&keys, *k) {
                    Some(key) => tx.delete(&obj, key.as_str()),
                    None => Ok(()),
                }
            }
            (obj, _) => tx.delete(&obj, usize::from(*k)),
        },
        Edit::Insert(o, i, v) => match at(*o) {
            (obj, ObjType::List | ObjType::Text) => tx.insert(&obj, usize::from(*i), bytes(v)),
            _ => Ok(()),
        },
        Edit::Object(o, key, list) => {
            let ty = if *list { ObjType::List } else { ObjType::Map };
            match at(*o) {
                (obj, ObjType::Map | ObjType::Table) => {
                    tx.put_object(&obj, key.as_str(), ty).map(|_| ())
                }
                (obj, _) => tx.insert_object(&obj, 0, ty).map(|_| ()),
            }
        }
        Edit::Counter(o, key, n) => match at(*o) {
            (obj, ObjType::Map | ObjType::Table) => {
                tx.put(&obj, key.as_str(), ScalarValue::counter(*n))
            }
            _ => Ok(()),
        },
    };
}

/// The steps `member_peer` reads from `data`, for reading a finding.
pub fn member_peer_steps(data: &[u8]) -> String {
    format!("{:#?}", structured::<Vec<Step>>(data))
}

/// A member's frames, any sequence (see the module doc).
pub fn member_peer(data: &[u8]) {
    let Some(steps) = structured::<Vec<Step>>(data) else {
        return;
    };
    let mut w = Ward::new();
    for s in steps.iter().take(32) {
        match s {
            Step::Raw(b) => w.mallory_sends(b.clone()),
            Step::Made(made) => {
                let f = w.made(made);
                w.mallory_sends(f);
            }
            Step::Writes(p, u) => w.writes(*p, *u),
            Step::Damaged(p, damage) => {
                if let Some(mut f) = w.waiting_mallory_sends(*p) {
                    damage.iter().for_each(|d| d.apply(&mut f));
                    w.mallory_sends(f);
                }
            }
            Step::Tamper(p, edits) => {
                if let Some(f) = w.tamper(*p, edits) {
                    w.mallory_sends(f);
                }
            }
            Step::Deliver(n) => w.deliver(*n),
            Step::Fire(t) => w.fire(*t),
            Step::Later(ms) => w.later(*ms),
            Step::Reconnect => w.reconnect(),
            Step::AnaWrites(p) => {
                let body = format!("Ana {p}");
                let g = w.group;
                w.m.send_text(ANA, g, &body);
            }
        }
    }
    assert!(
        w.m.run_until_quiet_within(QUIET_WITHIN),
        "the ward never became quiet"
    );
    w.check();
}

/// Catalogs, headers and heads from a member, any sequence.
pub fn catalog(data: &[u8]) {
    let Some(steps) = structured::<Vec<CatalogStep>>(data) else {
        return;
    };
    let mut w = Ward::new();
    for s in steps.iter().take(32) {
        match s {
            CatalogStep::Made(f) => {
                let f = w.catalog_frame(f);
                w.mallory_sends(f);
            }
            CatalogStep::Deliver(n) => w.deliver(*n),
            CatalogStep::Fire(t) => w.fire(*t),
            CatalogStep::Later(ms) => w.later(*ms),
            CatalogStep::Reconnect => w.reconnect(),
        }
    }
    assert!(
        w.m.run_until_quiet_within(QUIET_WITHIN),
        "the ward never became quiet"
    );
    w.check();
}
