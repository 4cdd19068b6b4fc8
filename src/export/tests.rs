//! The export's own rules, on hand-made input: signed entries are checked
//! before they are carried, `since` and replies across it, and odd input
//! that must not panic. `tests/fhir_export.rs` validates real exports
//! against the FHIR R4 schema.

use rand_chacha::rand_core::SeedableRng;
use serde_json::Value;

use super::*;
use crate::api::types::AttachmentView;
use crate::crypto::DeviceKey;
use crate::hlc::Hlc;
use crate::message::{Draft, Priority};

const CONV: ConversationId = ConversationId([5; 16]);
const ANA: MemberId = MemberId([1; 16]);
const BEN: MemberId = MemberId([2; 16]);

fn signed(key: &DeviceKey, body: &str, ms: u64, p: Priority, reply: Option<MessageId>) -> Message {
    Message::sign(
        key,
        &CONV,
        Draft {
            author_member: ANA,
            hlc: Hlc::new(ms, 0),
            priority: p,
            reply_to: reply,
            body: body.into(),
            fields: Default::default(),
        },
    )
}

fn shown(m: &Message) -> HistoryMessage {
    HistoryMessage {
        id: m.id(),
        hlc: m.hlc.0,
        time_ms: m.hlc.millis(),
        author: m.author_member,
        author_name: Some("Ana Silva".into()),
        device: m.author_device,
        author_verified: true,
        priority: m.priority,
        reply_to: m.reply_to,
        body: m.body.clone(),
        delivered_to: vec![BEN],
        read_by: vec![],
        acked_by: vec![],
        ack_by: None,
        escalation: None,
        reminder: None,
        attachments: vec![],
    }
}

fn input(messages: Vec<HistoryMessage>, signed: Vec<SignedEntry>) -> ExportInput {
    ExportInput {
        conversation: ExportConversation {
            id: CONV,
            title: "Bed 12".into(),
            kind: "group".into(),
            members: vec![ANA, BEN],
            role: None,
        },
        members: vec![],
        messages,
        signed,
        device: DeviceId([9; 32]),
        exported_ms: 1_700_000_100_000,
        since_ms: None,
    }
}

fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

#[test]
fn only_a_checked_signed_entry_is_carried() {
    let key = DeviceKey::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let a = signed(&key, "BP 80/40", 1_700_000_000_000, Priority::Urgent, None);
    let b = signed(
        &key,
        "on my way",
        1_700_000_001_000,
        Priority::Routine,
        None,
    );
    let c = signed(&key, "noted", 1_700_000_002_000, Priority::Routine, None);
    let mut forged = SignedEntry::of(&b);
    forged.message = c.id();
    let in_ = input(
        vec![shown(&a), shown(&b), shown(&c)],
        vec![
            SignedEntry::of(&a),
            // Another message's genuine entry, and bytes that are not hex.
            forged,
            SignedEntry {
                message: b.id(),
                entry: "not hex".into(),
            },
        ],
    );
    let bundle = fhir_bundle(&in_);
    let prov = resources(&bundle, "Provenance");
    assert_eq!(prov.len(), 3);
    let data = prov[0]["signature"][0]["data"].as_str().expect("signed");
    assert_eq!(
        data_encoding::BASE64.decode(data.as_bytes()).unwrap(),
        a.encode()
    );
    assert!(prov[1].get("signature").is_none());
    assert!(prov[2].get("signature").is_none());
    // The same entry checked for another conversation does not verify.
    let mut elsewhere = in_.clone();
    elsewhere.conversation.id = ConversationId([6; 16]);
    assert!(resources(&fhir_bundle(&elsewhere), "Provenance")[0]
        .get("signature")
        .is_none());
    let p = plain(&in_);
    assert_eq!(p.messages[0].signed, Some(in_.signed[0].entry.clone()));
    assert_eq!(p.messages[1].signed, None);
    assert_eq!(p.members, vec![]);
}

#[test]
fn since_drops_older_messages_and_a_reply_keeps_their_identifier() {
    let key = DeviceKey::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
    let first = signed(&key, "Bed 4?", 1_000, Priority::Routine, None);
    let reply = signed(&key, "stable", 2_000, Priority::Stat, Some(first.id()));
    let mut in_ = input(vec![shown(&first), shown(&reply)], vec![]);
    in_.since_ms = Some(2_000);
    let bundle = fhir_bundle(&in_);
    let comms = resources(&bundle, "Communication");
    assert_eq!(comms.len(), 1);
    assert_eq!(comms[0]["priority"], "stat");
    let target = &comms[0]["inResponseTo"][0];
    assert!(target.get("reference").is_none(), "{target}");
    assert_eq!(target["identifier"]["value"], first.id().to_hex());
    assert_eq!(plain(&in_).messages.len(), 1);
}

#[test]
fn odd_input_gives_an_export() {
    let key = DeviceKey::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
    let m = signed(&key, "", u64::MAX >> 16, Priority::Routine, None);
    let mut h = shown(&m);
    h.time_ms = u64::MAX;
    h.author_name = Some("\u{0}\u{a0}".into());
    h.attachments = vec![AttachmentView {
        index: 0,
        hash: "zz".into(),
        size: u64::MAX,
        media_type: " ".into(),
        name: String::new(),
        thumbnail: false,
        held: false,
        held_chunks: 0,
        chunks: 0,
        own: false,
        reached: false,
    }];
    let mut in_ = input(vec![h.clone(), h], vec![]);
    in_.conversation.title = String::new();
    in_.exported_ms = u64::MAX;
    let bundle = fhir_bundle(&in_);
    assert!(bundle.get("timestamp").is_none());
    // One message (the repeat dropped), no time to state for it.
    let comms = resources(&bundle, "Communication");
    assert_eq!(comms.len(), 1);
    assert!(comms[0].get("sent").is_none());
    assert!(comms[0].get("payload").is_none(), "{}", comms[0]);
    assert_eq!(comms[0]["sender"]["display"], "\u{fffd} ");
    assert!(resources(&bundle, "Provenance").is_empty());
}
