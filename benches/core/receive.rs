//! Receive latency: one pushed message into a long conversation.

use super::*;

/// What a peer pays to take one new message into a conversation of this
/// size: a second replica, loaded from the writer's snapshot, receives each
/// message the way a push arrives (one change in a sync message) and
/// verifies and indexes it. Percentiles of wall time over `count` messages.
pub(super) fn receive_percentiles(w: &mut Writer, start: usize, count: usize) {
    let conv = w.conversation();
    let snapshot = conv.replica().save();
    let actor = automerge::ActorId::from([9u8; 16].as_slice());
    let (mut peer, _) = Conversation::load(
        conv.header.clone(),
        &actor,
        Some(&snapshot),
        &[],
        &Default::default(),
    )
    .expect("the snapshot loads");
    let mut state = automerge::sync::State::new();
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        w.append();
        let push = w.conversation().replica().local_push().expect("a change");
        let msg = push.message_for(&mut automerge::sync::State::new());
        let t = Instant::now();
        let applied = peer.receive_sync(&mut state, &msg).expect("applies");
        times.push(t.elapsed());
        assert_eq!(applied.messages.len(), 1, "one message per push");
    }
    assert_eq!(peer.len(), w.conversation().len());
    times.sort();
    report(&format!(
        "receive/{}: one pushed message into a conversation of {} messages: p50 {:.0} us, p99 {:.0} us (wall, {count} messages)",
        label(start),
        start,
        us(quantile(&times, 0.5)),
        us(quantile(&times, 0.99)),
    ));
}
