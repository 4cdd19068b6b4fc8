//! A device's store, damaged, then opened as the shell opens it: the format
//! checked (and an older store upgraded), the index read, the node built and
//! started, every conversation read and written to.
//!
//! What must hold: opening either succeeds or stops with an error; a node
//! that started answers every read and write without a panic, contained or
//! not. Damage is what a disk, a crash or a hand edit does to a store;
//! losing what the damage destroyed is allowed, crashing is not.

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use huddle::crypto::DeviceKey;
use huddle::membership::{Certificate, Revocation, RevocationTarget};
use huddle::node::{Command, Input, Node, NodeConfig, Output};
use huddle::store::{self, DocLoader, KeyValues, Loader, MemoryStore, Store, StoreOp};
use huddle::{ConversationKind, Priority};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::mesh::{group_of, Mesh};
use super::{pick, structured, Damage};

/// Ana's store after a morning on the ward, with her key and certificate.
struct Base {
    key: DeviceKey,
    cert: Certificate,
    records: KeyValues,
    now: u64,
    /// The team authority's revocation of Ben's device.
    revocation: Revocation,
}

/// A genuine revocation for the team of the stored node.
pub fn revocation() -> Revocation {
    base().revocation.clone()
}

fn base() -> &'static Base {
    static B: OnceLock<Base> = OnceLock::new();
    B.get_or_init(|| {
        let mut m = Mesh::new(23);
        let ana = m.add_member("Ana", &["charge-nurse"]);
        let ben = m.add_member("Ben", &[]);
        let cat = m.add_member("Cat", &["charge-nurse"]);
        m.connect_all(&[ana, ben, cat]);
        m.run_until_quiet();
        let group = group_of(&mut m, ana, &[ana, ben, cat], "Bay 2");
        let role = m.create_role_channel(cat, "charge-nurse");
        let direct = ConversationKind::Direct {
            members: [m.devices[ana].member(), m.devices[ben].member()],
        };
        m.command(ben, Command::CreateConversation { kind: direct })
            .expect("a direct conversation");
        for i in 0..9 {
            m.send_text([ana, ben, cat][i % 3], group, &format!("obs round {i}"));
        }
        m.send_text(cat, role, "handover at 7");
        m.run_until_quiet();
        let urgent = Command::Send {
            conversation: group,
            body: "Bed 4 desaturating".into(),
            priority: Priority::Urgent,
            reply_to: None,
            fields: Default::default(),
        };
        m.command(ben, urgent).expect("an urgent message");
        m.run_until_quiet();
        m.command(
            ana,
            Command::MarkRead {
                conversation: group,
            },
        )
        .expect("mark read");
        m.run_until_quiet();
        let target = RevocationTarget::Device(m.devices[ben].id());
        let revocation = Revocation::sign(&m.authority, target, m.now);
        let d = &m.devices[ana];
        // Where the shell would have reached Ben (storage.md §2.2).
        let mut records = d.store.scan_prefix(b"").expect("a memory store reads");
        let addr = [&[4u8, 127, 0, 0, 1, 6][..], &4001u16.to_be_bytes()].concat();
        records.push((
            store::keys::peer(&m.devices[ben].id()),
            store::peers::PeerRecord::new(m.now, [addr]).encode(),
        ));
        records.sort();
        Base {
            key: d.key.clone(),
            cert: d.cert.clone().expect("a member"),
            records,
            now: m.now,
            revocation,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Edit {
    /// A record's value damaged.
    Value {
        pick: u16,
        damage: Vec<Damage>,
    },
    Delete {
        pick: u16,
    },
    /// A record moved under a damaged key.
    Key {
        pick: u16,
        damage: Damage,
    },
    /// One record's value under another's key.
    Copy {
        from: u16,
        to: u16,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Format(u32),
}

pub fn stored(data: &[u8]) {
    let Some(edits) = structured::<Vec<Edit>>(data) else {
        return;
    };
    let b = base();
    let mut records: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
        b.records.iter().cloned().collect();
    for e in edits.iter().take(16) {
        let keys: Vec<Vec<u8>> = records.keys().cloned().collect();
        match e {
            Edit::Value { pick: p, damage } => {
                if let Some(k) = pick(&keys, *p) {
                    let v = records.get_mut(&k).expect("a listed key");
                    damage.iter().for_each(|d| d.apply(v));
                }
            }
            Edit::Delete { pick: p } => {
                if let Some(k) = pick(&keys, *p) {
                    records.remove(&k);
                }
            }
            Edit::Key { pick: p, damage } => {
                if let Some(mut k) = pick(&keys, *p) {
                    let v = records.remove(&k).expect("a listed key");
                    damage.apply(&mut k);
                    records.insert(k, v);
                }
            }
            Edit::Copy { from, to } => {
                if let (Some(f), Some(t)) = (pick(&keys, *from), pick(&keys, *to)) {
                    let v = records[&f].clone();
                    records.insert(t, v);
                }
            }
            Edit::Put { key, value } => {
                records.insert(key.clone(), value.clone());
            }
            Edit::Format(v) => {
                records.insert(store::keys::FORMAT.to_vec(), v.to_be_bytes().to_vec());
            }
        }
    }
    let mut s = MemoryStore::new();
    let puts: Vec<StoreOp> = records
        .into_iter()
        .map(|(key, value)| StoreOp::Put { key, value })
        .collect();
    s.apply(&puts).expect("a memory store writes");
    s.flush().expect("a memory store flushes");
    open_and_use(b, s);
}

/// A node opened from a store as the shell opens it, with what a shell
/// keeps beside it.
#[derive(Clone)]
pub struct Opened {
    pub node: Node,
    pub store: MemoryStore,
    pub rng: ChaCha8Rng,
    pub now: u64,
}

impl Opened {
    /// Ana's node on her genuine store (a copy of one opened once per
    /// thread).
    pub fn genuine() -> Opened {
        thread_local! {
            static OPENED: Opened = Opened::open_genuine();
        }
        OPENED.with(Opened::clone)
    }

    fn open_genuine() -> Opened {
        let b = base();
        let mut s = MemoryStore::new();
        let puts: Vec<StoreOp> = (b.records.iter().cloned())
            .map(|(key, value)| StoreOp::Put { key, value })
            .collect();
        s.apply(&puts).expect("a memory store writes");
        s.flush().expect("a memory store flushes");
        open(b, s).expect("a genuine store opens")
    }

    /// Runs a command and carries out its outputs.
    pub fn command(&mut self, cmd: Command) -> Result<huddle::Reply, huddle::node::CommandError> {
        let (r, out) = self.node.command(self.now, &mut self.rng, cmd);
        carry_out(&mut self.node, &mut self.store, self.now, out);
        r
    }
}

/// Opens `s` as the shell does: `None` if it stops with an error.
fn open(b: &Base, mut s: MemoryStore) -> Option<Opened> {
    store::check_format(&mut s).ok()?;
    let loader = Loader(Arc::new(s.clone()));
    let stored = store::load_lazy(&s, loader).ok()?;
    // The shell reads the remembered peers at start; damage there is left out.
    let _ = store::peers::load(&s).ok()?;
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let config = NodeConfig::default();
    let mut node = Node::new(
        b.key.clone(),
        Some(b.cert.clone()),
        stored,
        config,
        &mut rng,
    )
    .ok()?;
    let now = b.now + 60_000;
    let out = node.handle(now, Input::Start);
    carry_out(&mut node, &mut s, now, out);
    Some(Opened {
        node,
        store: s,
        rng,
        now,
    })
}

/// Opens `s` and reads and writes every conversation.
fn open_and_use(b: &Base, s: MemoryStore) {
    let Some(mut o) = open(b, s) else { return };
    let ids: Vec<_> = o.node.conversation_ids().copied().collect();
    for id in ids {
        let _ = o.node.history(&id, None);
        let _ = o.command(Command::Send {
            conversation: id,
            body: "still here".into(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Default::default(),
        });
        let _ = o.node.history(&id, Some(5));
    }
    let _ = o.node.conversations();
    assert_eq!(
        o.node.contained_panics(),
        0,
        "a damaged store panicked the node"
    );
}

/// The outputs a shell carries out without peers: writes and reloads.
fn carry_out(node: &mut Node, s: &mut MemoryStore, now: u64, outputs: Vec<Output>) {
    let mut queue = std::collections::VecDeque::from(outputs);
    let mut steps = 0;
    while let Some(o) = queue.pop_front() {
        steps += 1;
        assert!(steps < 10_000, "a node kept asking for reloads");
        match o {
            Output::Persist(ops) => s.apply(&ops).expect("a memory store writes"),
            Output::Flush => s.flush().expect("a memory store flushes"),
            Output::Reload { doc } => {
                let stored = DocLoader::load_doc(s, &doc).map_err(|e| e.to_string());
                queue.extend(node.handle(now, Input::Reloaded { doc, stored }));
            }
            _ => {}
        }
    }
}
