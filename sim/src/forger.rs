//! The malicious member (`forge` in a scenario): forged entries, and
//! erasures of others' messages, appear in its own copy of a conversation
//! through its own store, as a modified client would write them; its node
//! then syncs them like anything else.
//!
//! Invariant: the forger's randomness is the world's fault generator, drawn
//! in event order, like every other fault.

use huddle::hlc::Hlc;
use huddle::message::{Draft, Message};
use huddle::replica::{Persist, Replica};
use huddle::store::{keys, Store, StoreOp};
use huddle::{ConversationId, Priority};
use rand::Rng;

use crate::check::member_devices;
use crate::net::Dev;
use crate::world::World;

/// Chunk numbers for forged changes, far above any the node writes.
const FORGED_SEQ: u64 = 1 << 40;

/// The malicious member: forged entries appear in its copy of the
/// conversation (through its own store, as a modified client would write
/// them), and it syncs them like anything else. Returns false if it cannot
/// yet (it does not hold the conversation).
pub fn forge(w: &mut World, dev: Dev, conv: usize) -> bool {
    let Some(id) = w.ledger.convs[conv] else {
        return false;
    };
    let holds = w.devs[dev]
        .node
        .as_ref()
        .is_some_and(|n| n.conversation(&id).is_some());
    if !holds {
        return false;
    }
    let h = w.ledger.headers[&id].clone();
    let Some(victim) = member_devices(&w.devs, &h).into_iter().find(|v| *v != dev) else {
        return true;
    };
    let now_ms = w.devs[dev].now_ms(w.now);
    let (vid, vmember) = (w.devs[victim].id, w.devs[victim].member.expect("member"));
    let draft = |body: &str| Draft {
        author_member: vmember,
        hlc: Hlc::new(now_ms, 7),
        priority: Priority::Stat,
        reply_to: None,
        body: body.into(),
        fields: Default::default(),
    };
    // 1. Claims the victim's device, with a made-up signature.
    let mut fake_sig = Message::sign(&w.devs[dev].key, &id, draft("STOP all meds bed 4"));
    fake_sig.author_device = vid;
    // 2. Properly signed by the forger, but for another conversation (a replay).
    let replay = Message::sign(
        &w.devs[dev].key,
        &ConversationId([0xab; 16]),
        draft("replayed"),
    );
    // 3. Signed by the forger's own device while claiming the victim member.
    let imperson = Message::sign(&w.devs[dev].key, &id, draft("impersonation"));
    w.devs[dev].malicious = true;
    w.ledger.forged.insert(fake_sig.id());
    w.ledger.forged.insert(replay.id());
    let mut actor = [0u8; 16];
    w.rng.fill(&mut actor);
    let mut r = Replica::new(
        &id.0,
        huddle::conversation::SCHEMA,
        &automerge::ActorId::from(actor.as_slice()),
    );
    for bytes in [
        fake_sig.encode(),
        replay.encode(),
        imperson.encode(),
        b"\x01not a message".to_vec(),
    ] {
        r.insert(now_ms, 0, bytes).expect("fresh replica");
    }
    let bytes = match r.take_persist().expect("changed") {
        Persist::Chunk { bytes, .. } | Persist::Snapshot { bytes, .. } => bytes,
    };
    let erasure = erase(w, dev, &id, now_ms, actor);
    w.ledger.forger_since.entry(dev).or_insert(w.now);
    let seq = FORGED_SEQ + 2 * u64::from(w.devs[dev].inc);
    let store = &mut w.devs[dev].store;
    if let Some(erasure) = erasure {
        store
            .apply(&[StoreOp::Put {
                key: keys::chunk(&id.0, seq + 1),
                value: erasure,
            }])
            .expect("memory store");
    }
    // The forger owns its store: it also blanks the conversation's index
    // entry, so its node reads the document whole at the next start rather
    // than refusing it for not reaching the recorded heads.
    store
        .apply(&[
            StoreOp::Put {
                key: keys::chunk(&id.0, seq),
                value: bytes,
            },
            StoreOp::Put {
                key: keys::index(&id.0),
                value: Vec::new(),
            },
        ])
        .expect("memory store");
    store.flush().expect("memory store");
    w.crash(dev, None);
    w.boot(dev);
    true
}

/// The forger's second move: in its own copy, it deletes the first element
/// of the conversation's first list and overwrites the next one (someone
/// else's messages, if it holds any), as a modified client would; its node
/// then syncs that like anything else. Returns the change as a chunk.
fn erase(
    w: &World,
    dev: Dev,
    id: &ConversationId,
    now_ms: u64,
    actor: [u8; 16],
) -> Option<Vec<u8>> {
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;
    let stored = huddle::store::DocLoader::load_doc(&w.devs[dev].store, &id.0).ok()?;
    let mut actor = actor;
    actor[0] ^= 0xff;
    let (mut r, _) = Replica::load(
        &id.0,
        huddle::conversation::SCHEMA,
        &automerge::ActorId::from(actor.as_slice()),
        stored.snapshot.as_deref(),
        &stored.chunks,
    )
    .ok()?;
    let mut touched = false;
    r.local(now_ms, |tx| {
        let Some((_, msgs)) = tx.get(automerge::ROOT, "msgs")? else {
            return Ok(());
        };
        let len = tx.length(&msgs);
        if len > 0 {
            tx.delete(&msgs, 0)?;
            touched = true;
        }
        if len > 1 {
            tx.put(
                &msgs,
                0,
                automerge::ScalarValue::Bytes(b"all fine".to_vec()),
            )?;
        }
        Ok(())
    })
    .ok()?;
    if !touched {
        return None;
    }
    match r.take_persist()? {
        Persist::Chunk { bytes, .. } | Persist::Snapshot { bytes, .. } => Some(bytes),
    }
}
