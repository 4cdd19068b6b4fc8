//! The order of frames on a thin link (transport.md §8, issue 25 part 3):
//! what the node says of each frame it sends — its lane and rank — for a
//! change just written, and for a catch-up after a partition.

mod common;

use common::{group_of, Mesh};
use huddle::node::Command;
use huddle::sendq::{Lane, Rank, SendQueue};
use huddle::wire::Frame;
use huddle::{ConversationId, Priority, Reply};

fn write(m: &mut Mesh, i: usize, conversation: ConversationId, body: &str, priority: Priority) {
    let cmd = Command::Send {
        conversation,
        body: body.into(),
        priority,
        reply_to: None,
        fields: Default::default(),
    };
    assert!(matches!(m.command(i, cmd), Ok(Reply::Message(_))));
}

/// The ranks of the `Sync` frames device `from` sent for `conv` since the
/// log was last taken.
fn sync_ranks(m: &Mesh, from: usize, conv: ConversationId) -> Vec<Rank> {
    let log = m.sends.as_ref().expect("logging");
    log.iter()
        .filter(|(i, _, f)| {
            *i == from && matches!(Frame::decode(f), Ok(Frame::Sync { doc, .. }) if doc == conv.0)
        })
        .map(|(_, p, _)| {
            assert_eq!(
                p.lane,
                Lane::Doc(conv.0),
                "a sync frame in its document's lane"
            );
            p.rank
        })
        .collect()
}

/// Ana, Ben and Cal, members of the team, connected Ana–Ben–Cal.
fn in_a_line(seed: u64) -> (Mesh, usize, usize, usize) {
    let mut m = Mesh::new(seed);
    let ana = m.add_member("Ana", &[]);
    let ben = m.add_member("Ben", &[]);
    let cal = m.add_member("Cal", &[]);
    m.connect(ana, ben);
    m.connect(ben, cal);
    m.run_until_quiet();
    (m, ana, ben, cal)
}

#[test]
fn a_change_just_written_goes_at_its_priority() {
    let mut m = Mesh::new(41);
    let (ana, ben) = (m.add_member("Ana", &[]), m.add_member("Ben", &[]));
    m.connect(ana, ben);
    m.run_until_quiet();
    let ward = group_of(&mut m, ana, &[ana, ben], "Ward");
    for (priority, rank) in [
        (Priority::Routine, Rank::Routine),
        (Priority::Urgent, Rank::Urgent),
        (Priority::Stat, Rank::Stat),
    ] {
        m.sends = Some(Vec::new());
        write(&mut m, ana, ward, "Bed 4", priority);
        assert_eq!(sync_ranks(&m, ana, ward), [rank], "{priority:?}");
        m.run_until_quiet();
    }
}

/// After a partition, the catch-up of a conversation with a STAT message
/// in it goes at STAT, before another conversation's routine history,
/// though that one's was written first.
#[test]
fn a_catch_up_goes_at_the_rank_of_what_it_carries_lately() {
    let mut m = Mesh::new(42);
    let (ana, ben) = (m.add_member("Ana", &[]), m.add_member("Ben", &[]));
    m.connect(ana, ben);
    m.run_until_quiet();
    let rota = group_of(&mut m, ana, &[ana, ben], "Rota");
    let ward = group_of(&mut m, ana, &[ana, ben], "Ward");
    m.disconnect(ana, ben);
    m.run_until_quiet();
    for i in 0..5 {
        write(&mut m, ana, rota, &format!("Shift {i}"), Priority::Routine);
    }
    write(&mut m, ana, ward, "Bed 4: BP 80/40", Priority::Stat);
    m.run_until_quiet();

    m.sends = Some(Vec::new());
    m.connect(ana, ben);
    m.run_until_quiet();
    let (r, w) = (sync_ranks(&m, ana, rota), sync_ranks(&m, ana, ward));
    assert!(
        !r.is_empty() && r.iter().all(|r| *r == Rank::History),
        "{r:?}"
    );
    assert!(!w.is_empty() && w.iter().all(|r| *r == Rank::Stat), "{w:?}");

    // Queued together for Ben, as a busy writer holds them: the ward's
    // catch-up is written first.
    let mut q = SendQueue::default();
    for (i, prio, f) in m.sends.take().expect("logging") {
        if i == ana {
            q.push(prio, f);
        }
    }
    let order: Vec<[u8; 16]> = std::iter::from_fn(|| q.pop())
        .filter_map(|f| match Frame::decode(&f) {
            Ok(Frame::Sync { doc, .. }) if doc == rota.0 || doc == ward.0 => Some(doc),
            _ => None,
        })
        .collect();
    let first_rota = order.iter().position(|d| *d == rota.0).expect("rota sent");
    let last_ward = order.iter().rposition(|d| *d == ward.0).expect("ward sent");
    assert!(last_ward < first_rota, "{order:?}");
}

/// A member that received a STAT message passes the conversation on at
/// STAT too (a relay's catch-up to a third device).
#[test]
fn a_stat_message_received_raises_its_conversation_for_the_next_hop() {
    let (mut m, ana, ben, cal) = in_a_line(43);
    let ward = group_of(&mut m, ana, &[ana, ben, cal], "Ward");
    m.disconnect(ben, cal);
    m.run_until_quiet();
    write(&mut m, ana, ward, "Bed 4: BP 80/40", Priority::Stat);
    m.run_until_quiet();
    m.sends = Some(Vec::new());
    m.connect(ben, cal);
    m.run_until_quiet();
    let ranks = sync_ranks(&m, ben, ward);
    assert!(ranks.contains(&Rank::Stat), "{ranks:?}");
}

/// A device passing a conversation on to a member that lacks it sends the
/// header and then a `Heads` announcement naming it; queued together, the
/// header must still go first (a receiver drops heads of a conversation it
/// has no header of).
#[test]
fn a_header_goes_before_the_announcement_that_names_its_conversation() {
    let (mut m, ana, ben, cal) = in_a_line(44);
    m.sends = Some(Vec::new());
    let ward = group_of(&mut m, ana, &[ana, ben, cal], "Ward");
    let mut q = SendQueue::default();
    for (i, prio, f) in m.sends.take().expect("logging") {
        if i == ben {
            q.push(prio, f);
        }
    }
    let order: Vec<&'static str> = std::iter::from_fn(|| q.pop())
        .filter_map(|f| match Frame::decode(&f) {
            Ok(Frame::Header { header }) if header.id == ward => Some("header"),
            Ok(Frame::Heads { entries }) if entries.iter().any(|e| e.doc == ward.0) => {
                Some("heads")
            }
            _ => None,
        })
        .collect();
    assert_eq!(order.first(), Some(&"header"), "{order:?}");
    assert!(order.contains(&"heads"), "{order:?}");
}
