//! The sync of two diverged devices: wire bytes against the missing
//! changes, round trips, and time.

use super::*;

/// Two devices about to reconnect: alice holds `divergence` messages bob lacks.
pub(super) struct Diverged {
    alice: Device,
    bob: Device,
    conv: ConversationId,
    now: u64,
    base: usize,
    divergence: usize,
}

impl Diverged {
    /// `<shared history>+<messages bob lacks>`.
    fn name(&self) -> String {
        format!("{}+{}", label(self.base), label(self.divergence))
    }
}

#[derive(Debug, Default)]
struct SyncStats {
    /// One-way flights: each delivers every frame in flight at once (one
    /// network latency); a round trip is two.
    flights: usize,
    /// Flights that carried at least one Sync frame.
    sync_flights: usize,
    frames: [usize; 2],
    sync_frames: [usize; 2],
    bytes: [usize; 2],
    sync_bytes: [usize; 2],
    /// Directions of the Sync-carrying flights, in order ('>' alice→bob).
    pattern: String,
    /// With `detail`: what each complete sync message carried, in order.
    messages: Vec<String>,
}

/// One line about a reassembled Automerge sync message.
fn describe_sync_message(from: usize, doc: &[u8; 16], bytes: &[u8]) -> String {
    let dir = if from == 0 {
        "alice→bob"
    } else {
        "bob→alice"
    };
    let what = if *doc == huddle::team::TEAM_DOC_ID {
        "team"
    } else {
        "conversation"
    };
    match automerge::sync::Message::decode(bytes) {
        Ok(m) => {
            let bloom: usize = m.have.iter().map(|h| h.bloom.to_bytes().len()).sum();
            let changes: usize = m.changes.iter().map(<[u8]>::len).sum();
            format!(
                "{dir} {what} {:?} {} B: heads {}, need {}, bloom {bloom} B, {} change chunk(s) {changes} B",
                m.version,
                bytes.len(),
                m.heads.len(),
                m.need.len(),
                m.changes.len(),
            )
        }
        Err(e) => format!("{dir} {what}: does not decode: {e}"),
    }
}

/// Connects alice (0) and bob (1) and delivers frames in lockstep flights
/// until neither has anything to send. Timers are not fired (bob's batched
/// delivered receipt, 500 ms later, is a separate small exchange).
fn run_sync(alice: &mut Device, bob: &mut Device, now: u64, detail: bool) -> SyncStats {
    let ids = [alice.id(), bob.id()];
    let mut in_flight: Vec<(usize, Vec<u8>)> = Vec::new();
    for (side, dev) in [&mut *alice, &mut *bob].into_iter().enumerate() {
        let out = dev.node.handle(
            now,
            Input::PeerConnected {
                peer: ids[1 - side],
            },
        );
        in_flight.extend(carry_out(dev, out).into_iter().map(|(_, f)| (side, f)));
    }
    exchange(alice, bob, in_flight, now, detail)
}

/// Delivers `in_flight` (frames from side 0 = alice or 1 = bob) and what
/// they cause, in lockstep flights, until nothing is left to send.
fn exchange(
    alice: &mut Device,
    bob: &mut Device,
    mut in_flight: Vec<(usize, Vec<u8>)>,
    now: u64,
    detail: bool,
) -> SyncStats {
    let ids = [alice.id(), bob.id()];
    let mut stats = SyncStats::default();
    let mut parts: std::collections::HashMap<(usize, [u8; 16]), Vec<u8>> = Default::default();
    while !in_flight.is_empty() {
        stats.flights += 1;
        let mut next = Vec::new();
        let mut dirs = [false; 2];
        for (from, frame) in in_flight.drain(..) {
            let is_sync = match Frame::decode(&frame) {
                Ok(Frame::Sync { doc, more, data }) => {
                    if detail {
                        let buf = parts.entry((from, doc)).or_default();
                        buf.extend_from_slice(&data);
                        if !more {
                            let msg = parts.remove(&(from, doc)).unwrap_or_default();
                            stats.messages.push(describe_sync_message(from, &doc, &msg));
                        }
                    }
                    true
                }
                _ => false,
            };
            stats.frames[from] += 1;
            stats.bytes[from] += frame.len();
            if is_sync {
                stats.sync_frames[from] += 1;
                stats.sync_bytes[from] += frame.len();
                dirs[from] = true;
            }
            let to = 1 - from;
            let dev = if to == 0 { &mut *alice } else { &mut *bob };
            let out = dev.node.handle(
                now,
                Input::Frame {
                    peer: ids[from],
                    bytes: frame,
                },
            );
            next.extend(carry_out(dev, out).into_iter().map(|(_, f)| (to, f)));
        }
        if dirs[0] || dirs[1] {
            stats.sync_flights += 1;
            stats.pattern.push_str(match dirs {
                [true, true] => "<>",
                [true, false] => ">",
                _ => "<",
            });
            stats.pattern.push(' ');
        }
        in_flight = next;
    }
    stats
}

/// Shared history of `base` messages, then alice writes each divergence alone.
pub(super) fn diverged(base: usize, divergences: &[usize]) -> Vec<Diverged> {
    let (mut w, mut bob) = team(11);
    for _ in 0..base {
        w.append();
    }
    let t = Instant::now();
    run_sync(&mut w.dev, &mut bob, w.now, false);
    report(&format!(
        "setup: synced a {}-message shared history in {:.2} s",
        label(base),
        t.elapsed().as_secs_f64()
    ));
    assert_eq!(
        bob.node.conversation(&w.conv).map(Conversation::len),
        Some(base)
    );
    // Sessions start from compacted stores: loading thousands of chunks one
    // by one is slow (see load_as_written) and is not what is measured here.
    let alice_base = compacted_store(&w.dev, &w.conv);
    let bob_base = compacted_store(&bob, &w.conv);
    let mut out = Vec::new();
    for &d in divergences {
        // A new session from the shared state: nobody is connected.
        let dev = session(&w.dev, alice_base.clone(), 3);
        w.dev = dev;
        for _ in 0..d {
            w.append();
        }
        out.push(Diverged {
            alice: session(&w.dev, compacted_store(&w.dev, &w.conv), 3),
            bob: session(&bob, bob_base.clone(), 4),
            conv: w.conv,
            now: w.now,
            base,
            divergence: d,
        });
    }
    out
}

/// (changes, raw bytes, `save_after` bytes) that `bob` lacks of `alice`'s,
/// measured on alice's document.
fn missing_between(alice: &Device, bob: &Device, conv: &ConversationId) -> (usize, usize, usize) {
    let theirs = bob
        .node
        .conversation(conv)
        .expect("bob's conversation")
        .replica()
        .heads();
    let ours = automerge::Automerge::load(
        &alice
            .node
            .conversation(conv)
            .expect("alice's conversation")
            .replica()
            .save(),
    )
    .expect("alice's document reloads");
    let changes = ours.get_changes(&theirs);
    let raw: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();
    (changes.len(), raw, ours.save_after(&theirs).len())
}

/// How many changes `messages` appends make: one per message, plus the
/// page changes among them (sync.md §7.1).
fn changes_for(messages: usize) -> std::ops::RangeInclusive<usize> {
    messages..=messages + messages / huddle::conversation::PAGE_LEN + 1
}

pub(super) fn sync_report(d: &Diverged, runs: usize) {
    let (count, raw, save_after) = missing_between(&d.alice, &d.bob, &d.conv);
    assert!(
        changes_for(d.divergence).contains(&count),
        "{count} missing"
    );
    let whole = d
        .alice
        .node
        .conversation(&d.conv)
        .expect("alice's conversation")
        .replica()
        .save()
        .len();
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut stats = None;
    for run in 0..runs {
        let mut alice = fresh(&d.alice, 1);
        let mut bob = fresh(&d.bob, 2);
        let (t, c) = (Instant::now(), Cpu::now());
        let s = run_sync(&mut alice, &mut bob, d.now, run == 0);
        walls.push(t.elapsed());
        cpus.push(c.elapsed());
        let heads = |dev: &Device| dev.node.conversation(&d.conv).map(|c| c.replica().heads());
        assert!(heads(&alice) == heads(&bob), "the devices did not converge");
        stats.get_or_insert(s);
    }
    let s = stats.expect("one run");
    walls.sort();
    cpus.sort();
    let total: usize = s.bytes.iter().sum();
    let sync: usize = s.sync_bytes.iter().sum();
    report(&format!(
        "sync/{}: wall median {:.1} ms (min {:.1}, max {:.1}; {runs} runs, both nodes on one thread, no network latency), on-CPU median {:.1} ms; wire {total} B in all ({sync} B in Sync frames; alice→bob {} B, bob→alice {} B); bob lacked {count} changes of {raw} raw B (save_after {save_after} B; alice's whole document saved is {whole} B); ratio wire/missing {:.3} (Sync frames only {:.3})",
        d.name(),
        ms(walls[walls.len() / 2]),
        ms(walls[0]),
        ms(walls[walls.len() - 1]),
        ms(cpus[cpus.len() / 2]),
        s.bytes[0],
        s.bytes[1],
        total as f64 / raw as f64,
        sync as f64 / raw as f64,
    ));
    report(&format!(
        "sync/{}: {} one-way flights in all (hello, catalog, then sync) = {:.1} round trips; {} of them carried Sync frames [{}]; frames alice→bob {} ({} Sync), bob→alice {} ({} Sync)",
        d.name(),
        s.flights,
        s.flights as f64 / 2.0,
        s.sync_flights,
        s.pattern.trim_end(),
        s.frames[0],
        s.sync_frames[0],
        s.frames[1],
        s.sync_frames[1],
    ));
    for m in &s.messages {
        report(&format!("sync/{}: message: {m}", d.name()));
    }
}

/// The same divergence reached by a reconnection of the two running nodes
/// (no restart): each keeps what it last shared with the other, so the
/// first sync messages filter only the changes since (finding E).
pub(super) fn reconnect_report(base: usize, divergence: usize) {
    let (mut w, mut bob) = team(11);
    for _ in 0..base {
        w.append();
    }
    run_sync(&mut w.dev, &mut bob, w.now, false);
    // Bob's delivered receipt, 500 ms on, is pushed to alice (who so learns
    // that bob holds her heads), as on a ward.
    w.now += 500;
    let out = bob.node.handle(w.now, Input::Timer(Timer::Receipts));
    let frames = carry_out(&mut bob, out);
    exchange(
        &mut w.dev,
        &mut bob,
        frames.into_iter().map(|(_, f)| (1, f)).collect(),
        w.now,
        false,
    );
    let (a_id, b_id) = (w.dev.id(), bob.id());
    let out = w
        .dev
        .node
        .handle(w.now, Input::PeerDisconnected { peer: b_id });
    carry_out(&mut w.dev, out);
    let out = bob
        .node
        .handle(w.now, Input::PeerDisconnected { peer: a_id });
    carry_out(&mut bob, out);
    for _ in 0..divergence {
        w.append();
    }
    let (count, raw, save_after) = missing_between(&w.dev, &bob, &w.conv);
    assert!(changes_for(divergence).contains(&count), "{count} missing");
    let (t, c) = (Instant::now(), Cpu::now());
    let s = run_sync(&mut w.dev, &mut bob, w.now, true);
    let (wall, cpu) = (t.elapsed(), c.elapsed());
    let heads = |dev: &Device| dev.node.conversation(&w.conv).map(|c| c.replica().heads());
    assert!(heads(&w.dev) == heads(&bob), "the devices did not converge");
    let total: usize = s.bytes.iter().sum();
    let name = format!("{}+{} reconnected", label(base), label(divergence));
    report(&format!(
        "sync/{name}: wall {:.1} ms, on-CPU {:.1} ms (one run); wire {total} B in all (alice→bob {} B, bob→alice {} B); bob lacked {count} changes of {raw} raw B (save_after {save_after} B); ratio wire/missing {:.3}; {} one-way flights = {:.1} round trips [{}]",
        ms(wall),
        ms(cpu),
        s.bytes[0],
        s.bytes[1],
        total as f64 / raw as f64,
        s.flights,
        s.flights as f64 / 2.0,
        s.pattern.trim_end(),
    ));
    for m in &s.messages {
        report(&format!("sync/{name}: message: {m}"));
    }
}

pub(super) fn bench_sync(c: &mut Criterion, fixtures: &[Diverged]) {
    let mut g = c.benchmark_group("sync");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(2));
    for d in fixtures {
        g.bench_function(d.name(), |b| {
            b.iter_batched(
                || (fresh(&d.alice, 1), fresh(&d.bob, 2)),
                |(mut alice, mut bob)| {
                    run_sync(&mut alice, &mut bob, d.now, false);
                    (alice, bob)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}
