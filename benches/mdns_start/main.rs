//! Time from a node's start to its first connection to a team peer it found
//! on mDNS (target: at most 1.5 s), and to the first message delivered over
//! that connection.
//!
//! mDNS runs only inside network namespaces this bench creates, never on the
//! machine's real network (mdns-sd joins multicast on every interface as soon
//! as its daemon starts). Each run creates two fresh namespaces joined by a
//! veth pair (both ends created directly inside them, 10.77.x.1 and
//! 10.77.x.2), waits for their IPv6 link-local addresses to leave the
//! tentative state, then runs this same bench binary once in each namespace
//! (`ip netns exec`), as tests/net_mdns.rs does with its test binary. Each
//! child runs one full in-process node (libp2p TCP + Noise + Yamux, a sled
//! store, mDNS on, no static peers) on a current-thread runtime, as
//! `huddle run` does:
//!
//! 1. node A starts, opens a direct conversation with B and writes one
//!    message into it, and reports READY; it is then left alone for
//!    [`SETTLE`] so that its own start-up announcements are over and B meets
//!    a node in its steady state;
//! 2. node B starts. Its clock starts ("start") just before it opens its
//!    store and calls `huddle::net::start` (after the process and runtime are
//!    up); the bench also notes when it spawned B's process ("spawn").
//! 3. B reports, from its own event stream, with its own wall-clock
//!    timestamps (µs): `Event::PeerJoined` (A proved membership: the
//!    connection is usable) and the first `Event::MessageAdded` from A; and,
//!    from `NodeHandle::connections`, when the connection was established
//!    (`since_ms`, stamped by B's shell, ms resolution) and how it came about
//!    (`Mdns`: B dialled A after resolving A's service; `Inbound`: A dialled B
//!    after resolving B's). No static peers exist, so either way it is mDNS.
//!    Nothing is polled.
//!
//! Every wait has a deadline; a guard stops both children (stdin closed, so
//! they shut down cleanly; SIGKILL by their pid after a grace period) and
//! deletes the namespaces on every way out, panics included; SIGINT/SIGTERM
//! do the same.
//!
//! `cargo bench --bench mdns_start` (20 runs), `-- --tiny` (3 runs),
//! `-- --runs N`, `-- --settle-ms N`, `-- --logs DIR` (keep each child's
//! debug log, `huddle=debug,mdns_sd=debug` unless `HUDDLE_MDNS_BENCH_LOG`
//! says otherwise). Without root or without `ip` it prints why and exits 0
//! without measuring.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::{Certificate, CertificateRequest};
use huddle::net::ShellConfig;
use huddle::store::SledStore;
use huddle::{Command, ConversationKind, Event, MemberId, NodeConfig, Priority, Reply};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod child;
#[path = "../shared/netns.rs"]
mod netns;
mod run;
mod system;
use child::*;
use netns::{must, run};
use run::*;
use system::*;

const CHILD_ENV: &str = "HUDDLE_MDNS_BENCH_CHILD";
const SEED_ENV: &str = "HUDDLE_MDNS_BENCH_SEED";
const DIR_ENV: &str = "HUDDLE_MDNS_BENCH_DIR";
const LOG_ENV: &str = "HUDDLE_MDNS_BENCH_LOG";
/// Every namespace this bench creates is named `huddle-mb<pid>-...`.
const NS_PREFIX: &str = "huddle-mb";
const TARGET_MS: f64 = 1500.0;
/// How long A runs alone before B starts (A's probes and announcements
/// take about 1.5 s; B should meet a node in its steady state).
const SETTLE: Duration = Duration::from_secs(3);
/// Longest wait for a child to start its node.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Longest wait for B's connection and message, from B's spawn.
const RUN_DEADLINE: Duration = Duration::from_secs(30);
/// Longest wait for the IPv6 link-local addresses to finish DAD.
const DAD_DEADLINE: Duration = Duration::from_secs(10);
/// How long a child may take to stop after its stdin closes.
const STOP_GRACE: Duration = Duration::from_secs(8);
/// How long a child waits for its own node's shutdown.
const CHILD_SHUTDOWN: Duration = Duration::from_secs(6);
const DAY: u64 = 24 * 3600 * 1000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

fn main() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("a") => child(Role::A),
        Ok("b") => child(Role::B),
        _ => parent(),
    }
}

// ----------------------------------------------------------------- identities

/// Both children derive the same team and the same two members from the seed.
struct Ident {
    key: DeviceKey,
    member: MemberId,
    cert: Certificate,
}

fn identities(seed: u64) -> (Ident, Ident) {
    let authority = AuthorityKey::generate(&mut ChaCha8Rng::seed_from_u64(seed));
    let member = |s: u64, name: &str| {
        let mut r = ChaCha8Rng::seed_from_u64(s);
        let key = DeviceKey::generate(&mut r);
        let member = MemberId::random(&mut r);
        let now = now_us() / 1000;
        let cert = CertificateRequest {
            team_name: "Bench Ward".into(),
            member,
            display_name: name.into(),
            roles: vec!["nurse".into()],
            device: key.device_id(),
            issued: now - 2 * DAY,
            expires: now + 365 * DAY,
        }
        .sign(&authority)
        .expect("valid certificate");
        Ident { key, member, cert }
    };
    (
        member(seed.wrapping_add(1), "Ana"),
        member(seed.wrapping_add(2), "Ben"),
    )
}

// ----------------------------------------------------------------- stats

/// `q` in [0, 1] of sorted `v` (nearest rank).
fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

struct Stats {
    n: usize,
    median: f64,
    p90: f64,
    min: f64,
    max: f64,
}

fn stats(values: impl Iterator<Item = f64>) -> Stats {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    Stats {
        n: v.len(),
        median: pct(&v, 0.5),
        p90: pct(&v, 0.9),
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

// ----------------------------------------------------------------- parent

fn parse_opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let tiny = args.iter().any(|a| a == "--tiny");
    Opts {
        runs: value("--runs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if tiny { 3 } else { 20 }),
        settle: value("--settle-ms")
            .and_then(|v| v.parse().ok())
            .map_or(SETTLE, Duration::from_millis),
        logs: value("--logs").map(PathBuf::from),
    }
}

fn parent() {
    let o = parse_opts();
    let shown: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let command = format!(
        "CARGO_TARGET_DIR={} cargo bench --bench mdns_start{}{}",
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
        if shown.is_empty() { "" } else { " -- " },
        shown.join(" ")
    );
    println!("mdns_start: node start → first connection to a peer found on mDNS (target ≤ {TARGET_MS:.0} ms)");
    if let Some(why) = missing_prerequisite() {
        println!(
            "\n!!!!!!!! NOT MEASURED: the mDNS start bench needs its own network namespaces and cannot create them here: {why}. \
             It never runs mDNS on the machine's real network, so it measured nothing and exits 0. \
             Run it as root on Linux with iproute2. !!!!!!!!\n"
        );
        return;
    }
    watch_signals();
    delete_stale_namespaces();
    if let Some(d) = &o.logs {
        std::fs::create_dir_all(d).expect("create the log directory");
    }
    let root = tempfile::tempdir().expect("tempdir");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = load_average();
    println!(
        "{} runs, A settles {} ms before B starts; {cores} cores; load average {load_before}",
        o.runs,
        o.settle.as_millis()
    );
    let mut samples: Vec<Sample> = Vec::new();
    let mut failures = 0;
    for run_no in 0..o.runs {
        match run_once(&o, run_no, root.path()) {
            Ok(s) => {
                println!(
                    "run {run_no:>2}: start→connected {:>7.1} ms | start→PeerJoined {:>7.1} ms | spawn→PeerJoined {:>7.1} ms | start→message {:>7.1} ms | node start-up {:>5.1} ms | first connection {} [{}]",
                    s.connected, s.joined, s.spawn_joined, s.message, s.start_up, s.found_by, s.conns.join("; ")
                );
                samples.push(s);
            }
            Err(e) => {
                failures += 1;
                println!("run {run_no:>2}: FAILED: {e}");
            }
        }
    }
    let load_after = load_average();
    let leftover: Vec<String> = run(&["ip", "netns", "list"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("{NS_PREFIX}{}-", std::process::id())))
        .map(str::to_owned)
        .collect();

    println!("\ncommand: {command}");
    println!(
        "load average before {load_before}, after {load_after}; {} of {} runs measured",
        samples.len(),
        o.runs
    );
    let mdns = samples.iter().filter(|s| s.found_by == "Mdns").count();
    let inbound = samples.iter().filter(|s| s.found_by == "Inbound").count();
    println!(
        "B's first connection: {mdns} dialled by B after resolving A on mDNS, {inbound} dialled by A after resolving B (inbound)\n"
    );
    println!("| B (the node that starts second), ms | runs | median | p90 | min | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    type Metric = fn(&Sample) -> f64;
    let connected: Metric = |s| s.connected;
    let joined: Metric = |s| s.joined;
    let spawn_joined: Metric = |s| s.spawn_joined;
    let message: Metric = |s| s.message;
    let start_up: Metric = |s| s.start_up;
    let rows = [
        (
            "node start → first connection established (`since_ms`, 1 ms resolution)",
            connected,
        ),
        ("**node start → `PeerJoined`** (connection usable)", joined),
        ("process spawn → `PeerJoined`", spawn_joined),
        ("node start → first message from A delivered", message),
        ("node start → listening, mDNS daemon started", start_up),
    ];
    for (name, f) in rows {
        let st = stats(samples.iter().map(f));
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            st.n, st.median, st.p90, st.min, st.max
        );
    }
    let joined = stats(samples.iter().map(|s| s.joined));
    println!(
        "\ntarget ≤ {TARGET_MS:.0} ms from start to PeerJoined: median {} ({:.1} ms), p90 {} ({:.1} ms)",
        if joined.median <= TARGET_MS { "MET" } else { "NOT MET" },
        joined.median,
        if joined.p90 <= TARGET_MS { "MET" } else { "NOT MET" },
        joined.p90,
    );
    if leftover.is_empty() {
        println!("namespaces: none of this bench's namespaces remain");
    } else {
        println!("namespaces: STILL PRESENT: {}", leftover.join(", "));
    }
    if let Some(d) = &o.logs {
        println!("child logs kept in {}", d.display());
    }
    if failures > 0 || !leftover.is_empty() {
        println!("{failures} run(s) failed");
        std::process::exit(1);
    }
}
