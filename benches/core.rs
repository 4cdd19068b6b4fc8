//! Core benchmarks for issue 2: append latency, load time, bytes at rest, and
//! the sync of two diverged devices. Results and method: BENCHMARKS.md.
//!
//! `cargo bench --bench core` runs the full sizes (about 70 s after the
//! build, on two cores); `cargo bench --bench core -- --test` (criterion's
//! test mode) runs everything once at small sizes as a smoke test.
//! `HUDDLE_BENCH=append,receive,load,bytes,sync` (any subset) picks sections.
//!
//! Besides criterion's means, the bench prints `report:` lines with figures
//! criterion cannot give: per-append percentiles (wall and on-CPU), the load
//! breakdown, bytes per message, and the sync's wire bytes and round trips.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use automerge::ReadDoc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};
use huddle::conversation::{Conversation, SCHEMA};
use huddle::header::ConversationHeader;
use huddle::hlc::Hlc;
use huddle::message::{Draft, Message};
use huddle::node::{Command, Input, Node, NodeConfig, Output};
use huddle::replica::Replica;
use huddle::store::{self, keys, MemoryStore, Store, StoreOp};
use huddle::wire::Frame;
use huddle::{ConversationId, ConversationKind, DeviceId, Priority, Reply};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use common::{Device, Mesh};

/// Every benchmark message body is exactly this many bytes (ASCII).
const BODY_LEN: usize = 60;
/// Virtual time between two messages from one device.
const MESSAGE_GAP_MS: u64 = 5_000;

/// Sizes; test mode (`-- --test`) shrinks them so a smoke run is quick.
struct Scale {
    /// Conversation sizes the append benchmark starts from.
    append_sizes: [usize; 2],
    /// Appends timed one by one for the percentiles.
    timed_appends: usize,
    /// Messages received one by one for the receive percentiles.
    timed_receives: usize,
    /// Messages both devices share before they diverge.
    sync_base: usize,
    /// How many messages one side writes while disconnected.
    divergence: [usize; 2],
    /// A long shared history, for one more (untimed by criterion) sync.
    long_base: usize,
    /// Timed runs of each sync for the report (criterion times it again).
    sync_runs: usize,
}

fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn scale() -> Scale {
    if test_mode() {
        Scale {
            append_sizes: [1_000, 2_000],
            timed_appends: 100,
            timed_receives: 20,
            sync_base: 200,
            divergence: [100, 200],
            long_base: 2_000,
            sync_runs: 1,
        }
    } else {
        Scale {
            append_sizes: [10_000, 100_000],
            timed_appends: 2_000,
            timed_receives: 200,
            sync_base: 10_000,
            divergence: [1_000, 10_000],
            long_base: 100_000,
            sync_runs: 3,
        }
    }
}

fn label(n: usize) -> String {
    if n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// A deterministic, varied, 60-byte clinical-sounding body (varied so the
/// deflate inside Automerge's snapshot does not get an unrealistically easy time).
fn body(i: usize) -> String {
    const WORDS: &[&str] = &[
        "bed", "12", "bp", "90/60", "hr", "118", "started", "fluids", "please", "review", "asap",
        "labs", "back", "k+", "5.9", "repeat", "ecg", "pain", "score", "7", "gave", "morphine",
        "2mg", "iv", "sats", "94%", "on", "2l", "family", "asking", "for", "update", "obs",
        "stable", "wound", "dressing", "changed", "npo", "after", "midnight", "theatre", "at", "9",
        "bay", "4", "falls", "risk", "high", "ok", "thanks", "will", "do", "now",
    ];
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut s = String::with_capacity(BODY_LEN + 12);
    while s.len() < BODY_LEN {
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 29;
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    s.truncate(BODY_LEN);
    if s.ends_with(' ') {
        s.pop();
        s.push('.');
    }
    debug_assert_eq!(s.len(), BODY_LEN);
    s
}

/// Carries out a device's outputs the way a shell does: writes and flushes
/// go to its store; frames are returned (addressed to `peer`).
fn carry_out(dev: &mut Device, outputs: Vec<Output>) -> Vec<(DeviceId, Vec<u8>)> {
    let mut frames = Vec::new();
    for o in outputs {
        match o {
            Output::Persist(ops) => dev.store.apply(&ops).expect("memory store"),
            Output::Flush => dev.store.flush().expect("memory store"),
            Output::Send { peer, frame } => frames.push((peer, frame)),
            Output::Disconnect { peer, reason } => panic!("disconnected {peer:?}: {reason}"),
            Output::Emit(_) | Output::SetTimer { .. } => {}
        }
    }
    frames
}

/// A device that writes into one conversation, in virtual time.
struct Writer {
    dev: Device,
    conv: ConversationId,
    now: u64,
    written: usize,
    rng: ChaCha8Rng,
}

impl Writer {
    /// Sends one message and carries out the outputs. Returns true if the
    /// append wrote a snapshot (rather than a chunk).
    fn append(&mut self) -> bool {
        self.now += MESSAGE_GAP_MS;
        self.written += 1;
        let cmd = Command::Send {
            conversation: self.conv,
            body: body(self.written),
            priority: Priority::Routine,
            reply_to: None,
        };
        let (reply, outputs) = self.dev.node.command(self.now, &mut self.rng, cmd);
        assert!(matches!(reply, Ok(Reply::Message(_))), "{reply:?}");
        let snapshot = outputs.iter().any(|o| {
            matches!(o, Output::Persist(ops) if ops.iter().any(|op| matches!(op, StoreOp::DeleteRange { .. })))
        });
        carry_out(&mut self.dev, outputs);
        snapshot
    }

    fn conversation(&self) -> &Conversation {
        self.dev
            .node
            .conversation(&self.conv)
            .expect("conversation")
    }
}

fn reopen(dev: &Device, rng: &mut ChaCha8Rng) -> Node {
    let mut node = Node::new(
        dev.key.clone(),
        dev.cert.clone(),
        store::load(&dev.store).expect("store loads"),
        NodeConfig::default(),
        rng,
    )
    .expect("node loads");
    // Start only re-publishes a certificate that is already there.
    let _ = node.handle(0, Input::Start);
    node
}

/// Alice and Bob, members of one team, who share a direct conversation (both
/// hold its header) and are disconnected.
fn team(seed: u64) -> (Writer, Device) {
    let mut mesh = Mesh::new(seed);
    let a = mesh.add_member("alice", &["nurse"]);
    let b = mesh.add_member("bob", &["nurse"]);
    mesh.connect(a, b);
    mesh.run_until_quiet();
    let members = [mesh.devices[a].member(), mesh.devices[b].member()];
    let conv = match mesh.command(
        a,
        Command::CreateConversation {
            kind: ConversationKind::Direct { members },
        },
    ) {
        Ok(Reply::Conversation(id)) => id,
        other => panic!("create failed: {other:?}"),
    };
    mesh.run_until_quiet();
    // A reconnection's catalog exchange hands bob the header whether or not
    // the creation pushed it.
    mesh.disconnect(a, b);
    mesh.connect(a, b);
    mesh.run_until_quiet();
    mesh.disconnect(a, b);
    let now = mesh.now;
    let rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA11CE);
    let bob = mesh.devices.pop().expect("bob");
    let alice = mesh.devices.pop().expect("alice");
    assert!(
        bob.node.conversation(&conv).is_some(),
        "bob lacks the header"
    );
    (
        Writer {
            dev: alice,
            conv,
            now,
            written: 0,
            rng,
        },
        bob,
    )
}

/// A writer whose conversation holds `n` messages it wrote itself.
fn writer_with(n: usize, seed: u64) -> Writer {
    let (mut w, _) = team(seed);
    let t = Instant::now();
    for _ in 0..n {
        w.append();
    }
    report(&format!(
        "setup: wrote {} messages via Node::command in {:.1} s ({:.0} µs/append)",
        label(n),
        t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    ));
    assert_eq!(w.conversation().len(), n);
    w
}

fn report(line: &str) {
    println!("report: {line}");
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[Duration], q: f64) -> Duration {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

// ---------------------------------------------------------------- append

/// On-CPU time of the calling thread: unlike wall time, it does not count
/// the time the thread spends preempted (the bench machine is shared).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu() -> Duration {
    Duration::ZERO
}

/// A stopwatch of the thread's on-CPU time.
struct Cpu(Duration);

impl Cpu {
    fn now() -> Cpu {
        Cpu(thread_cpu())
    }

    fn elapsed(&self) -> Duration {
        thread_cpu().saturating_sub(self.0)
    }
}

fn distribution(times: &[Duration]) -> String {
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let mut sorted = times.to_vec();
    sorted.sort();
    format!(
        "mean {:.1} µs, p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1} µs",
        us(mean),
        us(quantile(&sorted, 0.50)),
        us(quantile(&sorted, 0.90)),
        us(quantile(&sorted, 0.99)),
        us(quantile(&sorted, 0.999)),
        us(*sorted.last().expect("times")),
    )
}

/// Times `count` appends one by one (wall and on-CPU) and prints their
/// distribution, then what one append is made of.
fn append_percentiles(w: &mut Writer, start: usize, count: usize) {
    // A few untimed appends first: caches, allocator.
    for _ in 0..count / 10 {
        w.append();
    }
    let mut wall = Vec::with_capacity(count);
    let mut cpu = Vec::with_capacity(count);
    let mut snapshots = Vec::new();
    for _ in 0..count {
        let c = thread_cpu();
        let t = Instant::now();
        let snap = w.append();
        let d = t.elapsed();
        cpu.push(thread_cpu().saturating_sub(c));
        wall.push(d);
        if snap {
            snapshots.push(d);
        }
    }
    report(&format!(
        "append/{}: {count} appends timed one by one (conversation {} -> {} messages): wall {}; on-CPU {}; snapshot appends among them: {}{}",
        label(start),
        w.conversation().len() - count,
        w.conversation().len(),
        distribution(&wall),
        distribution(&cpu),
        snapshots.len(),
        snapshots
            .iter()
            .map(|d| format!(" {:.1} ms", ms(*d)))
            .collect::<String>(),
    ));

    // What an append is made of, timed piece by piece on copies.
    let n = 500;
    let key = w.dev.key.clone();
    let member = w.dev.member();
    let t = Cpu::now();
    let msgs: Vec<Message> = (0..n)
        .map(|i| {
            Message::sign(
                &key,
                &w.conv,
                Draft {
                    author_member: member,
                    hlc: Hlc(w.now + i as u64),
                    priority: Priority::Routine,
                    reply_to: None,
                    body: body(i),
                },
            )
        })
        .collect();
    let t_sign = t.elapsed() / n as u32;
    let actor = automerge::ActorId::from([9u8; 16].as_slice());
    let mut replica = Replica::load(
        &w.conv.0,
        SCHEMA,
        &actor,
        Some(&w.conversation().replica().save()),
        &[],
    )
    .expect("replica loads")
    .0;
    let (mut t_insert, mut t_persist) = (Duration::ZERO, Duration::ZERO);
    for m in &msgs {
        let t = Cpu::now();
        replica.insert(w.now, 0, m.encode()).expect("insert");
        t_insert += t.elapsed();
        let t = Cpu::now();
        black_box(replica.take_persist());
        t_persist += t.elapsed();
    }
    let t = Cpu::now();
    let snapshot = black_box(w.conversation().replica().save());
    let t_save = t.elapsed();
    let every = snapshot.len().max(256 * 1024) / chunk_bytes_per_append(w);
    report(&format!(
        "append/{}: one append (on-CPU) = Message::sign {:.1} µs + Replica::insert (Automerge change and commit) {:.1} µs + Replica::take_persist (save_after) {:.1} µs (means over {n}, same document size); the rest of the on-CPU mean is the node and the store. Every ~{every} appends, take_persist writes a snapshot instead: a full save ({} B) of {:.1} ms, i.e. {:.1} µs per append amortized, all of it on the one append that triggers it",
        label(start),
        us(t_sign),
        us(t_insert / n as u32),
        us(t_persist / n as u32),
        snapshot.len(),
        ms(t_save),
        us(t_save) / every.max(1) as f64,
    ));
}

/// Bytes of the chunk the last append wrote (the store's newest chunk).
fn chunk_bytes_per_append(w: &Writer) -> usize {
    let stored = store::load(&w.dev.store).expect("store loads");
    stored
        .docs
        .get(&w.conv.0)
        .and_then(|d| d.chunks.last())
        .map_or(1, |(_, b)| b.len().max(1))
}

fn bench_append(c: &mut Criterion, writers: &mut [Writer], sizes: &[usize]) {
    let mut g = c.benchmark_group("append");
    // Short: every iteration grows the conversation by one message.
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (w, &start) in writers.iter_mut().zip(sizes) {
        g.bench_function(label(start), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    w.append();
                }
                t.elapsed()
            })
        });
        report(&format!(
            "append/{}: the conversation grew to {} messages during the benchmark",
            label(start),
            w.conversation().len()
        ));
    }
    g.finish();
}

// ---------------------------------------------------------------- receive

/// What a peer pays to take one new message into a conversation of this
/// size: a second replica, loaded from the writer's snapshot, receives each
/// message the way a push arrives (one change in a sync message) and
/// verifies and indexes it. Percentiles of wall time over `count` messages.
fn receive_percentiles(w: &mut Writer, start: usize, count: usize) {
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

// ---------------------------------------------------------------- stores

/// A copy of `dev`'s store in which conversation `conv` is a single snapshot
/// and no chunks: what the store holds right after a compaction.
fn compacted_store(dev: &Device, conv: &ConversationId) -> MemoryStore {
    let mut store = dev.store.clone();
    let snapshot = dev
        .node
        .conversation(conv)
        .expect("conversation")
        .replica()
        .save();
    store
        .apply(&[
            StoreOp::DeleteRange {
                from: keys::chunk(&conv.0, 0),
                to: keys::chunk(&conv.0, u64::MAX),
            },
            StoreOp::Put {
                key: keys::snapshot(&conv.0),
                value: snapshot,
            },
        ])
        .expect("memory store");
    store.flush().expect("memory store");
    store
}

/// A new session of a device from `store` (its own, or a compacted copy).
fn session(dev: &Device, store: MemoryStore, seed: u64) -> Device {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut d = Device {
        key: dev.key.clone(),
        cert: dev.cert.clone(),
        node: Node::new(
            dev.key.clone(),
            None,
            Default::default(),
            NodeConfig::default(),
            &mut rng,
        )
        .expect("empty node"),
        store,
        received: Vec::new(),
        sent: Vec::new(),
        events: Vec::new(),
    };
    d.node = reopen(&d, &mut rng);
    d
}

/// A new session of `dev` from its store (the fixture stays intact).
fn fresh(dev: &Device, seed: u64) -> Device {
    session(dev, dev.store.clone(), seed)
}

// ---------------------------------------------------------------- load

/// The load of a conversation as the appends left it (a snapshot plus every
/// chunk written since), measured piecewise: loading chunk by chunk is slow
/// enough at 100k that a full load is only timed when it is affordable.
/// Returns true if the full load is affordable (criterion then times it).
fn load_as_written(w: &Writer) -> bool {
    let n = w.conversation().len();
    let stored = store::load(&w.dev.store).expect("store loads");
    let doc = stored.docs.get(&w.conv.0).expect("stored conversation");
    let k = doc.chunks.len();
    let actor = automerge::ActorId::from([7u8; 16].as_slice());
    let snapshot = doc.snapshot.as_deref();

    let t = Cpu::now();
    let (r, _) = Replica::load(&w.conv.0, SCHEMA, &actor, snapshot, &[]).expect("loads");
    let t_snapshot = t.elapsed();
    drop(r);
    let probe = k.min(20);
    let t = Cpu::now();
    let (r, _) =
        Replica::load(&w.conv.0, SCHEMA, &actor, snapshot, &doc.chunks[..probe]).expect("loads");
    let t_probe = t.elapsed();
    drop(r);
    let per_chunk = t_probe.saturating_sub(t_snapshot) / probe.max(1) as u32;
    let projected = t_snapshot + per_chunk * k as u32;
    report(&format!(
        "load/{} as written (on-CPU times): the store holds a snapshot of {} messages ({} B) and {k} chunks (one per message written since); Replica::load of the snapshot alone {:.1} ms; each chunk then costs {:.2} ms (load_incremental one chunk at a time, measured on {probe}), so a full load is projected at {:.1} s",
        label(n),
        n - k,
        snapshot.map_or(0, <[u8]>::len),
        ms(t_snapshot),
        ms(per_chunk),
        projected.as_secs_f64(),
    ));

    // The proposed fix: hand Automerge every chunk in one load_incremental
    // call, so the changes are applied in one batch.
    let t = Cpu::now();
    let mut am = automerge::Automerge::load(snapshot.unwrap_or_default()).expect("loads");
    let mut all = Vec::with_capacity(doc.chunks.iter().map(|(_, b)| b.len()).sum());
    for (_, b) in &doc.chunks {
        all.extend_from_slice(b);
    }
    am.load_incremental(&all).expect("chunks load");
    let t_batched = t.elapsed();
    let (_, msgs) = am.get(automerge::ROOT, "msgs").expect("ok").expect("msgs");
    let t = Cpu::now();
    let items = am.list_range(&msgs, ..).count();
    let t_items = t.elapsed();
    assert_eq!(items, n);
    assert_eq!(
        am.get_heads(),
        w.conversation().replica().heads(),
        "batched load reaches the same heads"
    );
    report(&format!(
        "load/{} as written, proposed fix: Automerge::load(snapshot) + ONE load_incremental of all {k} chunks concatenated = {:.1} ms (+ {:.1} ms to walk the {n} list items), same heads",
        label(n),
        ms(t_batched),
        ms(t_items),
    ));
    projected < Duration::from_secs(2)
}

/// Where the time goes when loading a compacted conversation.
fn load_breakdown(dev: &Device, conv: &ConversationId) {
    let n = dev.node.conversation(conv).expect("conversation").len();
    let t = Cpu::now();
    let stored = store::load(&dev.store).expect("store loads");
    let t_scan = t.elapsed();
    let doc = stored.docs.get(&conv.0).expect("stored conversation");
    let header = ConversationHeader::decode(doc.header.as_deref().expect("header")).expect("ok");
    let actor = automerge::ActorId::from([7u8; 16].as_slice());
    let snapshot = doc.snapshot.as_deref();

    let t = Cpu::now();
    let am = automerge::Automerge::load(snapshot.unwrap_or_default()).expect("snapshot loads");
    let t_am = t.elapsed();
    let plain = am.save_nocompress();
    drop(am);
    let t = Cpu::now();
    let am = automerge::Automerge::load(&plain).expect("uncompressed snapshot loads");
    let t_plain = t.elapsed();
    drop(am);

    let t = Cpu::now();
    let (replica, entries) =
        Replica::load(&conv.0, SCHEMA, &actor, snapshot, &doc.chunks).expect("replica loads");
    let t_replica = t.elapsed();
    drop(replica);

    let t = Cpu::now();
    let messages: Vec<Message> = entries
        .iter()
        .filter_map(|e| match e {
            huddle::replica::Entry::Item { value, .. } => Message::decode(value).ok(),
            _ => None,
        })
        .collect();
    let t_decode = t.elapsed();
    // Verifying is not part of a load; a sample shows what it would cost.
    let sample = messages.len().min(2_000);
    let t = Cpu::now();
    let ok = messages[..sample].iter().filter(|m| m.verify(conv)).count();
    let t_verify = t.elapsed() / sample as u32;
    assert_eq!(ok, sample);

    let t = Cpu::now();
    let (c, applied) = Conversation::load(header, &actor, snapshot, &doc.chunks, &doc.rejected)
        .expect("conversation loads");
    let t_conv = t.elapsed();
    assert_eq!(applied.messages.len(), n);
    drop(c);

    let mut rng = ChaCha8Rng::seed_from_u64(98);
    let mut node_new: Vec<(Duration, Duration)> = (0..3)
        .map(|_| {
            let (t, c) = (Instant::now(), Cpu::now());
            let stored = store::load(&dev.store).expect("store loads");
            let node = Node::new(
                dev.key.clone(),
                dev.cert.clone(),
                stored,
                NodeConfig::default(),
                &mut rng,
            )
            .expect("node loads");
            let r = (c.elapsed(), t.elapsed());
            drop(node);
            r
        })
        .collect();
    node_new.sort();
    report(&format!(
        "load/{} compacted: store::load + Node::new, 3 runs: on-CPU {} ms; wall {} ms",
        label(n),
        node_new
            .iter()
            .map(|(c, _)| format!("{:.0}", ms(*c)))
            .collect::<Vec<_>>()
            .join(", "),
        node_new
            .iter()
            .map(|(_, w)| format!("{:.0}", ms(*w)))
            .collect::<Vec<_>>()
            .join(", "),
    ));

    report(&format!(
        "load/{} compacted, breakdown (on-CPU, one run): store::load scan {:.1} ms; Replica::load {:.1} ms (Automerge::load of the {}-byte snapshot alone {:.1} ms; the rest is genesis merge and copying out {} entries); Conversation::load {:.1} ms, so indexing {:.1} ms. Automerge::load of the same document saved without deflate ({} B) {:.1} ms. For scale: Message::decode of every entry {:.1} ms; Ed25519 verify_strict {:.1} µs/message (measured on {sample}), i.e. {:.0} ms for all (not paid at load)",
        label(n),
        ms(t_scan),
        ms(t_replica),
        snapshot.map_or(0, <[u8]>::len),
        ms(t_am),
        entries.len(),
        ms(t_conv),
        ms(t_conv.saturating_sub(t_replica)),
        plain.len(),
        ms(t_plain),
        ms(t_decode),
        us(t_verify),
        ms(t_verify * n as u32),
    ));
}

fn bench_load(c: &mut Criterion, cases: &[(String, &Device, ConversationId)]) {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut g = c.benchmark_group("load");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(4));
    for (name, dev, conv) in cases {
        let n = dev.node.conversation(conv).map(Conversation::len);
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                let stored = store::load(&dev.store).expect("store loads");
                let node = Node::new(
                    dev.key.clone(),
                    dev.cert.clone(),
                    stored,
                    NodeConfig::default(),
                    &mut rng,
                )
                .expect("node loads");
                assert_eq!(node.conversation(conv).map(Conversation::len), n);
                node
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------- bytes at rest

/// Bytes of a saved Automerge document holding `values` as list items
/// inserted one change each (as the node does), or all in one change.
fn automerge_bytes(values: &[Vec<u8>], one_change_each: bool) -> usize {
    use automerge::transaction::{CommitOptions, Transactable};
    let mut doc = automerge::Automerge::new();
    let mut tx = doc.transaction();
    let list = tx
        .put_object(automerge::ROOT, "msgs", automerge::ObjType::List)
        .expect("fresh document");
    tx.commit();
    let mut tx = doc.transaction();
    for (i, v) in values.iter().enumerate() {
        tx.insert(&list, 0, automerge::ScalarValue::Bytes(v.clone()))
            .expect("insert");
        if one_change_each {
            tx.commit_with(CommitOptions::default().with_time(1_700_000_000 + 5 * i as i64));
            tx = doc.transaction();
        }
    }
    tx.commit();
    doc.save().len()
}

fn bytes_at_rest(w: &Writer, compacted: &MemoryStore) {
    let n = w.conversation().len();
    let stored = store::load(&w.dev.store).expect("store loads");
    let doc = stored.docs.get(&w.conv.0).expect("stored conversation");
    let snapshot = doc.snapshot.as_ref().map_or(0, Vec::len);
    let chunks: usize = doc.chunks.iter().map(|(_, b)| b.len()).sum();
    let all = w.dev.store.scan_prefix(b"").expect("scan");
    let keys: usize = all.iter().map(|(k, _)| k.len()).sum();
    let durable = w.dev.store.durable_bytes();
    let other = durable - snapshot - chunks - keys;
    let compact = compacted.durable_bytes();
    let per_chunk = chunks as f64 / doc.chunks.len().max(1) as f64;
    report(&format!(
        "bytes/{} as written: MemoryStore::durable_bytes {durable} = {:.1} B/message: snapshot {snapshot} B ({:.1} B per message it covers), {} chunk values {chunks} B ({per_chunk:.0} B each), {} keys {keys} B, other values (header, team document) {other} B",
        label(n),
        durable as f64 / n as f64,
        snapshot as f64 / (n - doc.chunks.len()).max(1) as f64,
        doc.chunks.len(),
        all.len(),
    ));
    // Chunks are written until their bytes exceed the snapshot's, so just
    // before a compaction the store holds about twice the snapshot, plus keys.
    let c = compact as f64 / n as f64;
    report(&format!(
        "bytes/{} compacted (one snapshot, no chunks): MemoryStore::durable_bytes {compact} = {c:.1} B/message; the store cycles between that and ~{:.0} B/message just before the next compaction",
        label(n),
        2.0 * c + 31.0 * c / per_chunk,
    ));
    sled_bytes(n, &[("as written", &w.dev.store), ("compacted", compacted)]);
}

/// The same keys and values written to a SledStore and flushed.
#[cfg(feature = "store-sled")]
fn sled_bytes(n: usize, stores: &[(&str, &MemoryStore)]) {
    for (name, src) in stores {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sled = store::SledStore::open(dir.path()).expect("sled opens");
        let ops: Vec<StoreOp> = src
            .scan_prefix(b"")
            .expect("scan")
            .into_iter()
            .map(|(key, value)| StoreOp::Put { key, value })
            .collect();
        sled.apply(&ops).expect("sled writes");
        sled.flush().expect("sled flushes");
        let on_disk = sled.size_on_disk();
        report(&format!(
            "bytes/{} {name}: SledStore::size_on_disk after writing the same keys and values and flushing: {on_disk} = {:.1} B/message",
            label(n),
            on_disk as f64 / n as f64,
        ));
    }
}

#[cfg(not(feature = "store-sled"))]
fn sled_bytes(_: usize, _: &[(&str, &MemoryStore)]) {
    report("bytes: SledStore not measured (built without the store-sled feature)");
}

/// What the bytes of a stored message are made of, measured by saving
/// Automerge documents of the same shape with parts of the message left out.
fn bytes_breakdown(w: &Writer) {
    let msgs: Vec<&Message> = w.conversation().messages().collect();
    let n = msgs.len();
    let per = |values: Vec<Vec<u8>>, each: bool| automerge_bytes(&values, each) as f64 / n as f64;
    let payload = msgs[0].encode().len();
    let one_byte = per(vec![vec![0u8]; n], true);
    let one_byte_one_change = per(vec![vec![0u8]; n], false);
    let sigs = per(msgs.iter().map(|m| m.signature.to_vec()).collect(), true);
    let no_ids = per(
        msgs.iter()
            .map(|m| {
                let mut b = m.encode();
                b.drain(1..1 + 16 + 32);
                b
            })
            .collect(),
        true,
    );
    let no_sig = per(
        msgs.iter()
            .map(|m| {
                let b = m.encode();
                b[..b.len() - 64].to_vec()
            })
            .collect(),
        true,
    );
    let full = per(msgs.iter().map(|m| m.encode()).collect(), true);
    report(&format!(
        "bytes/{} breakdown: one encoded message is {payload} B ({BODY_LEN} body + 64 signature + 32 device key + 16 member id + 8 HLC + {} framing); saved in an Automerge document (deflated), per message: {full:.1} B as stored; {one_byte:.1} B with a 1-byte value instead (Automerge's own cost of one insert in its own change; {one_byte_one_change:.1} B if all inserts were one change); {sigs:.1} B with only the 64-byte signature as the value; {no_ids:.1} B without the member id and device key; {no_sig:.1} B without the signature",
        label(n),
        payload - BODY_LEN - 64 - 32 - 16 - 8,
    ));
}

// ---------------------------------------------------------------- sync

/// Two devices about to reconnect: alice holds `divergence` messages bob lacks.
struct Diverged {
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
    let mut stats = SyncStats::default();
    let mut parts: std::collections::HashMap<(usize, [u8; 16]), Vec<u8>> = Default::default();
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
fn diverged(base: usize, divergences: &[usize]) -> Vec<Diverged> {
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

/// The raw bytes of the changes bob lacks, measured on alice's document.
fn missing_change_bytes(d: &Diverged) -> (usize, usize, usize) {
    let theirs = d
        .bob
        .node
        .conversation(&d.conv)
        .expect("bob's conversation")
        .replica()
        .heads();
    let ours = automerge::Automerge::load(
        &d.alice
            .node
            .conversation(&d.conv)
            .expect("alice's conversation")
            .replica()
            .save(),
    )
    .expect("alice's document reloads");
    let changes = ours.get_changes(&theirs);
    let raw: usize = changes.iter().map(|c| c.raw_bytes().len()).sum();
    (changes.len(), raw, ours.save_after(&theirs).len())
}

fn sync_report(d: &Diverged, runs: usize) {
    let (count, raw, save_after) = missing_change_bytes(d);
    assert_eq!(count, d.divergence);
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

fn bench_sync(c: &mut Criterion, fixtures: &[Diverged]) {
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

// ---------------------------------------------------------------- main

/// Is this section selected? `HUDDLE_BENCH=append,load,bytes,sync` (any
/// subset; default all) picks sections, e.g. for profiling one of them.
fn section(name: &str) -> bool {
    std::env::var("HUDDLE_BENCH").map_or(true, |v| v.split(',').any(|s| s.trim() == name))
}

fn core(c: &mut Criterion) {
    let s = scale();
    if section("bytes") || section("load") || section("append") || section("receive") {
        let mut writers: Vec<Writer> = s
            .append_sizes
            .iter()
            .map(|&n| writer_with(n, n as u64))
            .collect();

        // Bytes at rest and load use the conversations exactly as built.
        {
            let big = writers.last().expect("writers");
            let n = big.conversation().len();
            let compacted = compacted_store(&big.dev, &big.conv);
            if section("bytes") {
                bytes_at_rest(big, &compacted);
                bytes_breakdown(&writers[0]);
            }
            if section("load") {
                let affordable = load_as_written(big);
                let compact_dev = session(&big.dev, compacted, 5);
                load_breakdown(&compact_dev, &big.conv);
                let mut cases = vec![(format!("{}-compacted", label(n)), &compact_dev, big.conv)];
                if affordable {
                    cases.push((format!("{}-as-written", label(n)), &big.dev, big.conv));
                } else {
                    report(&format!(
                        "load/{}-as-written: not timed by criterion (the projected load is over 2 s)",
                        label(n)
                    ));
                }
                bench_load(c, &cases);
            }
        }

        if section("receive") {
            for (w, &start) in writers.iter_mut().zip(&s.append_sizes) {
                receive_percentiles(w, start, s.timed_receives);
            }
        }
        if section("append") {
            for (w, &start) in writers.iter_mut().zip(&s.append_sizes) {
                append_percentiles(w, start, s.timed_appends);
            }
            bench_append(c, &mut writers, &s.append_sizes);
        }
    }

    if section("sync") {
        let fixtures = diverged(s.sync_base, &s.divergence);
        for d in &fixtures {
            sync_report(d, s.sync_runs);
        }
        bench_sync(c, &fixtures);
        drop(fixtures);
        // The same 1k divergence on a long shared history: the bloom filters
        // cover the whole history (sync state is not kept across connections).
        for d in diverged(s.long_base, &[s.divergence[0]]) {
            sync_report(&d, s.sync_runs);
        }
    }
}

criterion_group!(benches, core);
criterion_main!(benches);
