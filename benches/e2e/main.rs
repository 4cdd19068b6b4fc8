//! End-to-end benchmarks for issue 6: latency over a mesh, durable ingest,
//! catch-up after an absence (with bytes on the wire), 20 `huddle run`
//! processes under steady traffic, and cold start. Method and results:
//! BENCHMARKS.md, "End to end (issue 6)"; `benches/run.sh` runs this and the
//! automerge-repo race back to back.
//!
//! `cargo bench --bench e2e` runs the full sizes (about 15 minutes on two
//! cores); `cargo bench --bench e2e -- --tiny` (or `HUDDLE_E2E_TINY=1`) runs
//! every part once at a tiny size (CI). `--only latency,throughput,catchup,
//! scale,screen,cold,blobs,atrest` picks parts; `--runs N` sets repetitions; `--nodes 2,10`,
//! `--rates 10,100,1000`, `--catchup 10000,100000`, `--cold 100000`,
//! `--scale-nodes 20`, `--scale-secs 60` and `--scale-wait 90` (seconds to
//! wait after the traffic for every node to hold every message),
//! `--screen 1000,100000` and `--screen-sends 200` (the screen in headless
//! Chromium: messages in the open conversation, sends timed) set sizes.
//!
//! In-process nodes are full shells (libp2p TCP + Noise + Yamux on
//! 127.0.0.1, each with its own sled store in a temporary directory), each on
//! its own thread with a current-thread tokio runtime, as `huddle run` has.
//! mDNS is off everywhere; every address is on loopback. The scale and cold
//! start parts run the release `huddle` binary as separate processes, which
//! a guard stops (SIGTERM, then SIGKILL) on every way out.
//!
//! Besides the human-readable lines, every figure is printed once as
//! `RESULT {json}` for `benches/race/table.mjs`.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huddle::api::client::ApiClient;
use huddle::api::types::SendRequest;
use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::datadir::{DataDir, Profile};
use huddle::membership::{Certificate, CertificateRequest};
use huddle::net::{NodeHandle, ShellConfig};
use huddle::store::{keys, SledStore, Store, StoreOp};
use huddle::{
    Command, ConversationId, ConversationKind, Event, Input, MemberId, MessageId, Node, NodeConfig,
    Output, Priority, Reply,
};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "../shared/body.rs"]
mod body;
use body::body;

mod atrest;
mod blobs;
mod catchup;
mod cold;
mod generator;
mod inproc;
mod latency;
mod procs;
mod scale;
mod screen;
mod throughput;
use atrest::*;
use blobs::*;
use catchup::*;
use cold::*;
use generator::*;
use inproc::*;
use latency::*;
use procs::*;
use scale::*;
use screen::*;
use throughput::*;

const DAY: u64 = 24 * 3600 * 1000;
/// The longest any wait in this bench may take.
const DEADLINE: Duration = Duration::from_secs(120);
const ROLE: &str = "nurse";

// ----------------------------------------------------------------- options

#[derive(Clone, Debug)]
struct Opts {
    tiny: bool,
    runs: usize,
    only: Option<Vec<String>>,
    /// Catch-up sizes (messages; always over 50 conversations, 10 when tiny).
    catchup: Vec<usize>,
    /// Cold start sizes: (messages, conversations).
    cold: Vec<(usize, usize)>,
    scale_nodes: usize,
    scale_secs: u64,
    /// How long the scale part waits, after the traffic, for every node to
    /// hold every message.
    scale_wait_secs: u64,
    /// Latency: node counts and rates (messages per second).
    nodes: Vec<usize>,
    rates: Vec<usize>,
    /// The screen: messages in the open conversation; sends and page
    /// opens timed.
    screen: Vec<usize>,
    screen_sends: usize,
    screen_opens: usize,
}

impl Opts {
    fn parse() -> Opts {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let tiny = args.iter().any(|a| a == "--tiny")
            || std::env::var("HUDDLE_E2E_TINY").is_ok_and(|v| !v.is_empty() && v != "0");
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let list = |name: &str| -> Option<Vec<usize>> {
            value(name).map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        };
        let mut o = if tiny {
            Opts {
                tiny,
                runs: 1,
                only: None,
                catchup: vec![500],
                cold: vec![(1_000, 10)],
                scale_nodes: 3,
                scale_secs: 3,
                scale_wait_secs: 90,
                nodes: vec![2],
                rates: vec![10, 100],
                screen: vec![200],
                screen_sends: 20,
                screen_opens: 3,
            }
        } else {
            Opts {
                tiny,
                runs: 3,
                only: None,
                catchup: vec![10_000, 100_000],
                cold: vec![(10_000, 10), (100_000, 100), (100_000, 1_000)],
                scale_nodes: 20,
                scale_secs: 60,
                scale_wait_secs: 90,
                nodes: vec![2, 10],
                rates: vec![10, 100, 1000],
                screen: vec![1_000, 100_000],
                screen_sends: 200,
                screen_opens: 20,
            }
        };
        if let Some(r) = value("--runs").and_then(|v| v.parse().ok()) {
            o.runs = r;
        }
        o.only = value("--only").map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
        if let Some(c) = list("--catchup") {
            o.catchup = c;
        }
        if let Some(c) = list("--cold") {
            // messages, conversations at 1000 messages per conversation.
            o.cold = c.into_iter().map(|m| (m, (m / 1000).max(1))).collect();
        }
        if let Some(v) = list("--nodes") {
            o.nodes = v;
        }
        if let Some(v) = list("--rates") {
            o.rates = v;
        }
        if let Some(v) = list("--screen") {
            o.screen = v;
        }
        if let Some(v) = value("--screen-sends").and_then(|v| v.parse().ok()) {
            o.screen_sends = v;
        }
        if let Some(n) = value("--scale-nodes").and_then(|v| v.parse().ok()) {
            o.scale_nodes = n;
        }
        if let Some(s) = value("--scale-wait").and_then(|v| v.parse().ok()) {
            o.scale_wait_secs = s;
        }
        if let Some(s) = value("--scale-secs").and_then(|v| v.parse().ok()) {
            o.scale_secs = s;
        }
        o
    }

    fn wants(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == part))
    }
}

fn result(v: serde_json::Value) {
    println!("RESULT {v}");
}

// ----------------------------------------------------------------- helpers

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn send_cmd(conversation: ConversationId, i: usize) -> Command {
    Command::Send {
        conversation,
        body: body(i),
        priority: Priority::Routine,
        reply_to: None,
        fields: Default::default(),
    }
}

/// `q` in [0, 1] of sorted `v` (nearest rank).
fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    pct(v, 0.5)
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.1}–{max:.1}")
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let t = to.join(e.file_name());
        if e.metadata().expect("metadata").is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).expect("copy file");
        }
    }
}

// ----------------------------------------------------------------- identities

struct Team {
    authority: AuthorityKey,
}

#[derive(Clone)]
struct Ident {
    key: DeviceKey,
    member: MemberId,
    cert: Certificate,
    name: String,
}

impl Team {
    fn new(seed: u64) -> Team {
        Team {
            authority: AuthorityKey::generate(&mut ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    fn member(&self, seed: u64, name: &str) -> Ident {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let key = DeviceKey::generate(&mut r);
        let member = MemberId::random(&mut r);
        let cert = CertificateRequest {
            team_name: "Bench Ward".into(),
            member,
            display_name: name.into(),
            roles: vec![ROLE.into()],
            device: key.device_id(),
            issued: now_ms() - 2 * DAY,
            expires: now_ms() + 365 * DAY,
        }
        .sign(&self.authority)
        .expect("valid certificate");
        Ident {
            key,
            member,
            cert,
            name: name.into(),
        }
    }
}

/// A data directory `huddle run` can use: identity, profile, certificate
/// (what `huddle init` + `team join` write), written programmatically.
fn write_datadir(dir: &Path, id: &Ident) {
    let d = DataDir::new(dir);
    d.create_identity(
        &id.key,
        &Profile {
            member: id.member,
            name: id.name.clone(),
            roles: vec![ROLE.into()],
        },
    )
    .expect("identity");
    d.save_certificate(&id.cert).expect("certificate");
}

// ----------------------------------------------------------------- main

fn main() {
    let o = Opts::parse();
    println!(
        "huddle e2e bench ({}; runs={}; machine: {} cores)",
        if o.tiny { "tiny" } else { "full" },
        o.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let t = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if o.wants("latency") {
        rt.block_on(bench_latency(&o));
    }
    if o.wants("throughput") {
        rt.block_on(bench_throughput(&o));
    }
    if o.wants("catchup") {
        rt.block_on(bench_catchup(&o));
    }
    if o.wants("scale") {
        bench_scale(&o);
    }
    if o.wants("screen") {
        bench_screen(&o);
    }
    if o.wants("atrest") {
        rt.block_on(bench_atrest(&o));
    }
    if o.wants("cold") {
        bench_cold(&o);
    }
    if o.wants("blobs") {
        bench_blobs(&o);
    }
    println!("e2e: done in {:.1}s", t.elapsed().as_secs_f64());
}
