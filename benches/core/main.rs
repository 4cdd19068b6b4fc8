//! Core benchmarks for issue 2: append latency, load time, bytes at rest, and
//! the sync of two diverged devices. Results and method: BENCHMARKS.md.
//!
//! `cargo bench --bench core` runs the full sizes (about 70 s after the
//! build, on two cores); `cargo bench --bench core -- --test` (criterion's
//! test mode) runs everything once at small sizes as a smoke test.
//! `HUDDLE_BENCH=append,receive,load,bytes,sync,clinical` (any subset)
//! picks sections.
//!
//! Besides criterion's means, the bench prints `report:` lines with figures
//! criterion cannot give: per-append percentiles (wall and on-CPU), the load
//! breakdown, bytes per message, and the sync's wire bytes and round trips.

#[path = "../../tests/common/mod.rs"]
mod common;

mod append;
mod bytes;
mod clinical;
mod load;
mod receive;
mod sync;

use std::hint::black_box;
use std::time::{Duration, Instant};

use automerge::ReadDoc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};
use huddle::conversation::{Conversation, SCHEMA};
use huddle::header::ConversationHeader;
use huddle::hlc::Hlc;
use huddle::message::{Draft, Message};
use huddle::node::{Command, Input, Node, NodeConfig, Output, Timer};
use huddle::replica::Replica;
use huddle::store::{self, keys, MemoryStore, Store, StoreOp};
use huddle::wire::Frame;
use huddle::{ConversationId, ConversationKind, DeviceId, Priority, Reply};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use common::{Device, Mesh};

#[path = "../shared/body.rs"]
mod body;
use body::{body, BODY_LEN};
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

/// Carries out a device's outputs the way a shell does: writes and flushes
/// go to its store; frames are returned (addressed to `peer`).
fn carry_out(dev: &mut Device, outputs: Vec<Output>) -> Vec<(DeviceId, Vec<u8>)> {
    let mut frames = Vec::new();
    for o in outputs {
        match o {
            Output::Persist(ops) => dev.store.apply(&ops).expect("memory store"),
            Output::Flush => dev.store.flush().expect("memory store"),
            Output::Send { peer, frame, .. } => frames.push((peer, frame)),
            Output::Disconnect { peer, reason } => panic!("disconnected {peer:?}: {reason}"),
            Output::Emit(_) | Output::SetTimer { .. } => {}
            Output::Reload { .. } => panic!("a document was dropped and reloaded"),
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
            fields: Default::default(),
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

/// A node opened from `dev`'s store (`store::load` + `Node::new`: what
/// the load benchmark times).
fn open(dev: &Device, rng: &mut ChaCha8Rng) -> Node {
    Node::new(
        dev.key.clone(),
        dev.cert.clone(),
        store::load(&dev.store).expect("store loads"),
        NodeConfig::default(),
        rng,
    )
    .expect("node loads")
}

fn reopen(dev: &Device, rng: &mut ChaCha8Rng) -> Node {
    let mut node = open(dev, rng);
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

/// Live heap bytes, counted by the allocator below (for the memory
/// figures: what a structure holds, measured rather than estimated).
fn allocated() -> usize {
    ALLOCATED.load(std::sync::atomic::Ordering::Relaxed)
}

static ALLOCATED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        ALLOCATED.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

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
                bytes::bytes_at_rest(big, &compacted);
                bytes::bytes_breakdown(&writers[0]);
            }
            if section("load") {
                let affordable = load::load_as_written(big);
                let compact_dev = session(&big.dev, compacted, 5);
                load::load_breakdown(&compact_dev, &big.conv);
                let mut cases = vec![(format!("{}-compacted", label(n)), &compact_dev, big.conv)];
                if affordable {
                    cases.push((format!("{}-as-written", label(n)), &big.dev, big.conv));
                } else {
                    report(&format!(
                        "load/{}-as-written: not timed by criterion (the projected load is over 2 s)",
                        label(n)
                    ));
                }
                load::bench_load(c, &cases);
            }
        }

        if section("receive") {
            for (w, &start) in writers.iter_mut().zip(&s.append_sizes) {
                receive::receive_percentiles(w, start, s.timed_receives);
            }
        }
        if section("append") {
            for (w, &start) in writers.iter_mut().zip(&s.append_sizes) {
                append::append_percentiles(w, start, s.timed_appends);
            }
            append::bench_append(c, &mut writers, &s.append_sizes);
        }
    }

    if section("clinical") {
        clinical::clinical_report(if test_mode() { 500 } else { 10_000 });
    }

    if section("sync") {
        let fixtures = sync::diverged(s.sync_base, &s.divergence);
        for d in &fixtures {
            sync::sync_report(d, s.sync_runs);
        }
        sync::bench_sync(c, &fixtures);
        drop(fixtures);
        // The same 1k divergence on a long shared history, between new
        // sessions (the Bloom filters cover the whole history: sync state is
        // not kept across restarts) and by a reconnection (it is kept).
        for d in sync::diverged(s.long_base, &[s.divergence[0]]) {
            sync::sync_report(&d, s.sync_runs);
        }
        sync::reconnect_report(s.long_base, s.divergence[0]);
    }
}

criterion_group!(benches, core);
criterion_main!(benches);
