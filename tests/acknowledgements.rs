//! Acknowledgement rules (sync.md §7.2, issue 20 item 4): only urgent and
//! STAT messages can be acknowledged, only by members other than the
//! author, and an acknowledgement marks that message read. Commands refuse
//! what breaks the rules; acks that break them, as older versions stored,
//! are ignored when rendering on every device.

mod common;

use common::{request, Mesh};
use huddle::crypto::DeviceKey;
use huddle::message::{Receipt, ReceiptKind};
use huddle::node::{Command, CommandError};
use huddle::{ConversationId, MemberId, MessageId, Priority, Reply};

/// Ana, Ben and Chloe, connected, sharing a group.
fn ward(seed: u64) -> (Mesh, [usize; 3], ConversationId) {
    let mut m = Mesh::new(seed);
    let ana = m.add_member("Ana Silva", &["nurse"]);
    let ben = m.add_member("Ben Okafor", &["doctor"]);
    let chloe = m.add_member("Chloe Martin", &["nurse"]);
    m.connect_all(&[ana, ben, chloe]);
    m.run_until_quiet();
    let id = common::group_of(&mut m, ana, &[ana, ben, chloe], "Bed 12");
    (m, [ana, ben, chloe], id)
}

fn send(m: &mut Mesh, i: usize, id: ConversationId, body: &str, p: Priority) -> MessageId {
    let cmd = Command::Send {
        conversation: id,
        body: body.into(),
        priority: p,
        reply_to: None,
        fields: Default::default(),
    };
    match m.command(i, cmd) {
        Ok(Reply::Message(id)) => id,
        other => panic!("send failed: {other:?}"),
    }
}

fn ack(
    m: &mut Mesh,
    i: usize,
    id: ConversationId,
    message: MessageId,
) -> Result<Reply, CommandError> {
    m.command(
        i,
        Command::Ack {
            conversation: id,
            message,
        },
    )
}

/// `(read_by, acked_by)` of `message` as device `i` renders it.
fn marks(
    m: &Mesh,
    i: usize,
    id: ConversationId,
    message: MessageId,
) -> (Vec<MemberId>, Vec<MemberId>) {
    let h = m.devices[i].node.history(&id, None).expect("held");
    let r = h.iter().find(|r| r.id == message).expect("rendered");
    (r.read_by.clone(), r.acked_by.clone())
}

fn unread(m: &Mesh, i: usize, id: ConversationId) -> usize {
    let list = m.devices[i].node.conversations();
    list.iter().find(|c| c.id == id).expect("listed").unread
}

#[test]
fn a_routine_message_cannot_be_acknowledged() {
    let (mut m, [ana, ben, _], id) = ward(1);
    let routine = send(&mut m, ana, id, "Lunch at 1", Priority::Routine);
    m.run_until_quiet();
    let e = ack(&mut m, ben, id, routine).expect_err("refused");
    assert_eq!(e, CommandError::NotAckable(routine));
    assert!(
        e.to_string()
            .contains("only urgent messages can be acknowledged"),
        "{e}"
    );
    m.run_until_quiet();
    for i in 0..3 {
        assert_eq!(marks(&m, i, id, routine), (vec![], vec![]), "device {i}");
    }
    // Urgent and STAT ones can.
    for p in [Priority::Urgent, Priority::Stat] {
        let msg = send(&mut m, ana, id, "Bed 12 lactate 4.1", p);
        m.run_until_quiet();
        assert_eq!(ack(&mut m, ben, id, msg), Ok(Reply::Done));
    }
}

#[test]
fn the_author_cannot_acknowledge_their_own_message_on_any_device() {
    let (mut m, [ana, ben, chloe], id) = ward(2);
    // Ana's second device: the same member.
    let key = DeviceKey::generate(&mut m.rng);
    let cert = request(
        "Ana Silva",
        &["nurse"],
        key.device_id(),
        m.devices[ana].member(),
    )
    .sign(&m.authority)
    .expect("valid request");
    let tablet = m.add_device(key, Some(cert));
    m.connect_all(&[ana, ben, chloe, tablet]);
    m.run_until_quiet();
    let urgent = send(&mut m, ana, id, "Sepsis review now", Priority::Urgent);
    m.run_until_quiet();
    for i in [ana, tablet] {
        let e = ack(&mut m, i, id, urgent).expect_err("refused");
        assert_eq!(e, CommandError::OwnMessage(urgent));
        assert!(e.to_string().contains("you wrote this message"), "{e}");
    }
    m.run_until_quiet();
    for i in [ana, ben, chloe, tablet] {
        assert!(marks(&m, i, id, urgent).1.is_empty(), "device {i}");
    }
}

#[test]
fn an_ack_marks_that_message_read_and_only_that_one() {
    let (mut m, [ana, ben, chloe], id) = ward(3);
    let before = send(&mut m, ana, id, "Bed 3 obs due", Priority::Routine);
    let urgent = send(&mut m, ana, id, "Bed 12 lactate 4.1", Priority::Urgent);
    m.run_until_quiet();
    assert_eq!(unread(&m, ben, id), 2);
    assert_eq!(ack(&mut m, ben, id, urgent), Ok(Reply::Done));
    m.run_until_quiet();
    let ben_member = m.devices[ben].member();
    for i in [ana, ben, chloe] {
        assert_eq!(
            marks(&m, i, id, urgent),
            (vec![ben_member], vec![ben_member]),
            "device {i}"
        );
        // The read cursor did not move: what came before is still unread.
        assert_eq!(marks(&m, i, id, before), (vec![], vec![]), "device {i}");
    }
    assert_eq!(unread(&m, ben, id), 1, "the acknowledged message is read");
    assert_eq!(unread(&m, chloe, id), 2, "Chloe's count is her own");
}

/// Device `i` signs an acknowledgement of `message` in its own member's
/// name and writes it straight into its copy, as an older version did
/// without the rules; the frame that carries it.
fn old_style_ack(m: &Mesh, i: usize, id: ConversationId, message: MessageId) -> Vec<u8> {
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;
    let c = m.devices[i].node.conversation(&id).expect("held");
    let upto = c.get(&message).expect("held").order_key();
    let at = huddle::hlc::Hlc::new(m.now, 0);
    let r = Receipt::sign(
        &m.devices[i].key,
        &id,
        ReceiptKind::Ack,
        m.devices[i].member(),
        upto,
        at,
    );
    common::tampered_frame(m, i, id, |tx| {
        let receipts = tx.get(automerge::ROOT, "receipts")?.expect("root").1;
        tx.put(
            &receipts,
            r.doc_key(),
            automerge::ScalarValue::Bytes(r.encode()),
        )
    })
}

#[test]
fn acks_older_versions_stored_against_the_rules_are_ignored_everywhere() {
    let (mut m, [ana, ben, chloe], id) = ward(4);
    let routine = send(&mut m, ana, id, "Lunch at 1", Priority::Routine);
    let urgent = send(&mut m, ana, id, "Bed 12 lactate 4.1", Priority::Urgent);
    m.run_until_quiet();
    // Ana acknowledges her own urgent message, Ben a routine one; Chloe
    // receives both changes and passes them on.
    for (from, message) in [(ana, urgent), (ben, routine)] {
        let frame = old_style_ack(&m, from, id, message);
        let peer = m.devices[from].id();
        let out = m.devices[chloe]
            .node
            .handle(m.now, huddle::node::Input::Frame { peer, bytes: frame });
        m.apply(chloe, out);
        m.run_until_quiet();
    }
    let ben_member = m.devices[ben].member();
    let stored = m.devices[chloe]
        .node
        .conversation(&id)
        .expect("held")
        .receipts
        .acks
        .values()
        .map(|s| s.len())
        .sum::<usize>();
    assert_eq!(stored, 2, "both acks are in Chloe's copy");
    for i in [ana, ben, chloe] {
        assert_eq!(marks(&m, i, id, urgent), (vec![], vec![]), "device {i}");
        let (read, acked) = marks(&m, i, id, routine);
        assert!(acked.is_empty(), "device {i}: {acked:?}");
        assert!(!read.contains(&ben_member), "device {i}: {read:?}");
    }
    assert_eq!(unread(&m, ben, id), 2, "Ben's routine ack reads nothing");
}
