//! The membership gate for blobs (protocol/blobs.md §3.2), on the
//! in-memory mesh: a device is served an attachment only while it proves a
//! valid, unrevoked certificate and the conversation admits it, and only
//! for a message that references that blob. A member of the team outside
//! the conversation, a revoked device and a stranger get nothing; and a
//! message's attachments reach every member with the message.

mod common;

use common::{group_of, Mesh};
use huddle::blobs::{Attachment, BlobHash};
use huddle::crypto::DeviceKey;
use huddle::membership::{Revocation, RevocationTarget};
use huddle::message::Fields;
use huddle::node::{Command, Reply};
use huddle::{ConversationId, MessageId, Priority};

fn photo() -> Attachment {
    Attachment {
        hash: BlobHash::of(b"a photo of a wound"),
        size: 18,
        media_type: "image/jpeg".into(),
        name: "wound.jpg".into(),
        thumbnail: vec![0xff, 0xd8, 0xff, 0xe0, 0, 0x10],
    }
}

fn send_photo(m: &mut Mesh, by: usize, conv: ConversationId) -> MessageId {
    let cmd = Command::Send {
        conversation: conv,
        body: String::new(),
        priority: Priority::Routine,
        reply_to: None,
        fields: Fields {
            attachments: vec![photo()],
            ..Fields::default()
        },
    };
    match m.command(by, cmd) {
        Ok(Reply::Message(id)) => id,
        other => panic!("send failed: {other:?}"),
    }
}

#[test]
fn only_a_connected_unrevoked_member_of_the_conversation_is_served() {
    let mut m = Mesh::new(23);
    let ana = m.add_member("Ana Silva", &["nurse"]);
    let ben = m.add_member("Ben Okafor", &["physician"]);
    let carol = m.add_member("Carol Diaz", &["nurse"]);
    let lost = m.add_member("Lost Phone", &["nurse"]);
    let key = DeviceKey::generate(&mut m.rng);
    let stranger = m.add_device(key, None);
    m.connect_all(&[ana, ben, carol, lost, stranger]);
    m.run_until_quiet();
    let conv = group_of(&mut m, ana, &[ana, ben, lost], "Bed 4 wound");
    m.run_until_quiet();
    let msg = send_photo(&mut m, ana, conv);
    m.run_until_quiet();

    let hash = photo().hash;
    let ids: Vec<_> = m.devices.iter().map(|d| d.id()).collect();
    let id = |i: usize| ids[i];
    let node = &m.devices[ana].node;
    // The metadata travelled with the message, signed with it.
    let at_ben = m.devices[ben].node.attachments_of(&conv, &msg);
    assert_eq!(at_ben, vec![photo()]);
    assert_eq!(node.blob_gate(&id(ben), &conv, &msg, &hash), Some(photo()));
    assert_eq!(node.blob_gate(&id(lost), &conv, &msg, &hash), Some(photo()));
    // A member of the team outside the conversation, and a stranger.
    assert_eq!(node.blob_gate(&id(carol), &conv, &msg, &hash), None);
    assert_eq!(node.blob_gate(&id(stranger), &conv, &msg, &hash), None);
    // The right member, but a message that does not reference the blob,
    // or a blob the message does not reference: nothing to probe by hash.
    let text = m.send_text(ana, conv, "no attachment here");
    m.run_until_quiet();
    let node = &m.devices[ana].node;
    assert_eq!(node.blob_gate(&id(ben), &conv, &text, &hash), None);
    let other = BlobHash::of(b"someone else's file");
    assert_eq!(node.blob_gate(&id(ben), &conv, &msg, &other), None);
    let mut sources = node.blob_sources(&conv);
    sources.sort();
    let mut want = vec![id(ben), id(lost)];
    want.sort();
    assert_eq!(sources, want, "where the blob may be fetched from");

    // Revoked: served no more, though still connected until refused.
    let rev = Revocation::sign(&m.authority, RevocationTarget::Device(id(lost)), m.now);
    m.command(ana, Command::Revoke(rev)).expect("revoke");
    m.run_until_quiet();
    let node = &m.devices[ana].node;
    assert_eq!(node.blob_gate(&id(lost), &conv, &msg, &hash), None);
    assert!(!node.blob_sources(&conv).contains(&id(lost)));
    // Disconnected: a member is served only in a session it proved.
    m.disconnect(ana, ben);
    let node = &m.devices[ana].node;
    assert_eq!(node.blob_gate(&id(ben), &conv, &msg, &hash), None);
}

#[test]
fn a_message_may_carry_only_attachments_and_a_bad_thumbnail_is_refused() {
    let mut m = Mesh::new(24);
    let ana = m.add_member("Ana Silva", &["nurse"]);
    let ben = m.add_member("Ben Okafor", &["physician"]);
    m.connect_all(&[ana, ben]);
    m.run_until_quiet();
    let conv = group_of(&mut m, ana, &[ana, ben], "Bed 4");
    let mut bad = photo();
    bad.thumbnail = b"<svg onload=alert(1)>".to_vec();
    let refused = m.command(
        ana,
        Command::Send {
            conversation: conv,
            body: String::new(),
            priority: Priority::Routine,
            reply_to: None,
            fields: Fields {
                attachments: vec![bad],
                ..Fields::default()
            },
        },
    );
    assert!(refused.is_err(), "{refused:?}");
    let ok = send_photo(&mut m, ana, conv);
    m.run_until_quiet();
    let h = m.devices[ben].node.history(&conv, None).expect("history");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].id, ok);
    assert_eq!(h[0].body, "");
    assert_eq!(h[0].attachments, vec![photo()]);
}
