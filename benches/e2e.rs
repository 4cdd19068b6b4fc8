//! End-to-end benchmarks for issue 6: latency over a mesh, durable ingest,
//! catch-up after an absence (with bytes on the wire), 20 `huddle run`
//! processes under steady traffic, and cold start. Method and results:
//! BENCHMARKS.md, "End to end (issue 6)"; `benches/run.sh` runs this and the
//! automerge-repo race back to back.
//!
//! `cargo bench --bench e2e` runs the full sizes (about 15 minutes on two
//! cores); `cargo bench --bench e2e -- --tiny` (or `HUDDLE_E2E_TINY=1`) runs
//! every part once at a tiny size (CI). `--only latency,throughput,catchup,
//! scale,cold` picks parts; `--runs N` sets repetitions; `--nodes 2,10`,
//! `--rates 10,100,1000`, `--catchup 10000,100000`, `--cold 100000`,
//! `--scale-nodes 20`, `--scale-secs 60` and `--scale-wait 90` (seconds to
//! wait after the traffic for every node to hold every message) set sizes.
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

#[path = "shared/body.rs"]
mod body;
use body::body;

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

// ----------------------------------------------------------------- offline generator

/// Writes messages into a device's store through the pure core (no shell,
/// no network): the store then looks exactly as if the device had written
/// them itself. Flushes every 1,000 commands and at the end.
struct Gen {
    node: Node,
    store: SledStore,
    rng: ChaCha8Rng,
    pending: usize,
    /// Bytes of change chunks written for conversations (the raw Automerge
    /// changes, one chunk per command, except where a snapshot replaced one).
    chunk_bytes: u64,
    chunks: u64,
}

impl Gen {
    fn open(id: &Ident, dir: &Path) -> Gen {
        let store = SledStore::open(dir).expect("open store");
        let stored = huddle::store::load(&store).expect("load store");
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let node = Node::new(
            id.key.clone(),
            Some(id.cert.clone()),
            stored,
            NodeConfig::default(),
            &mut rng,
        )
        .expect("node");
        let mut g = Gen {
            node,
            store,
            rng,
            pending: 0,
            chunk_bytes: 0,
            chunks: 0,
        };
        let outs = g.node.handle(now_ms(), Input::Start);
        g.carry_out(outs, false);
        g
    }

    fn carry_out(&mut self, outs: Vec<Output>, count: bool) {
        for o in outs {
            if let Output::Persist(ops) = o {
                if count {
                    for op in &ops {
                        if let StoreOp::Put { key, value } = op {
                            let is_conv_chunk = key.starts_with(keys::DOC_PREFIX)
                                && key.len() > keys::DOC_PREFIX.len() + 16
                                && key[keys::DOC_PREFIX.len() + 16..].starts_with(b"/c");
                            if is_conv_chunk {
                                self.chunk_bytes += value.len() as u64;
                                self.chunks += 1;
                            }
                        }
                    }
                }
                self.store.apply(&ops).expect("apply");
                self.pending += 1;
            }
        }
        if self.pending >= 1000 {
            self.store.flush().expect("flush");
            self.pending = 0;
        }
    }

    fn command(&mut self, cmd: Command, count: bool) -> Reply {
        let (r, outs) = self.node.command(now_ms(), &mut self.rng, cmd);
        self.carry_out(outs, count);
        r.expect("command")
    }

    fn group(&mut self, i: usize, members: &[MemberId]) -> ConversationId {
        match self.command(
            Command::CreateConversation {
                kind: ConversationKind::Group {
                    title: format!("bench {i}"),
                    members: members.iter().copied().collect(),
                },
            },
            false,
        ) {
            Reply::Conversation(c) => c,
            r => panic!("unexpected {r:?}"),
        }
    }

    /// `n` messages round-robin over `convs`.
    fn messages(&mut self, convs: &[ConversationId], n: usize, seed: usize) {
        for i in 0..n {
            self.command(send_cmd(convs[i % convs.len()], seed + i), true);
        }
    }

    /// Full saves of the given conversations (compressed columnar form).
    fn saved_bytes(&self, convs: &[ConversationId]) -> u64 {
        convs
            .iter()
            .filter_map(|c| self.node.conversation(c))
            .map(|c| c.replica().save().len() as u64)
            .sum()
    }

    fn close(mut self) {
        self.store.flush().expect("flush");
    }
}

// ----------------------------------------------------------------- in-process nodes

type Arrivals = Arc<Mutex<Vec<(MessageId, Instant)>>>;
/// Per message: the author's index, when `send` was called, when it returned.
type Sent = Arc<Mutex<HashMap<MessageId, (usize, Instant, Instant)>>>;

/// A full shell on its own thread and current-thread runtime (as `huddle run`).
struct InProc {
    handle: NodeHandle,
    addr: Multiaddr,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Remote messages as the node's own runtime saw their `MessageAdded`.
    arrivals: Arrivals,
    lagged: Arc<AtomicU64>,
}

async fn start_inproc(id: &Ident, dir: &Path, peers: Vec<Multiaddr>) -> InProc {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let key = id.key.clone();
    let cert = id.cert.clone();
    let dir = dir.to_owned();
    let arrivals: Arrivals = Arc::default();
    let lagged = Arc::new(AtomicU64::new(0));
    let (arr, lag) = (arrivals.clone(), lagged.clone());
    let thread = std::thread::Builder::new()
        .name("node".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let store = SledStore::open(&dir).expect("open store");
                let config = ShellConfig {
                    key,
                    certificate: Some(cert),
                    listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
                    peers,
                    mdns: false,
                    node: NodeConfig::default(),
                };
                let (handle, task) = huddle::net::start(config, store).await.expect("start");
                let mut events = handle.subscribe();
                tokio::spawn(async move {
                    use tokio::sync::broadcast::error::RecvError;
                    loop {
                        match events.recv().await {
                            Ok(Event::MessageAdded {
                                message,
                                local: false,
                                ..
                            }) => arr.lock().expect("lock").push((message, Instant::now())),
                            Ok(_) => {}
                            Err(RecvError::Lagged(n)) => {
                                lag.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(RecvError::Closed) => return,
                        }
                    }
                });
                let _ = tx.send(handle);
                let _ = task.await;
            });
        })
        .expect("spawn node thread");
    let handle = tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("node start in time")
        .expect("node started");
    let addr = handle
        .listen_addrs()
        .await
        .expect("listen addrs")
        .into_iter()
        .next()
        .expect("a listen address");
    InProc {
        handle,
        addr,
        thread: Some(thread),
        arrivals,
        lagged,
    }
}

impl InProc {
    async fn stop(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle.shutdown()).await;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    async fn verified_peers(&self) -> usize {
        self.handle
            .query(|n| n.peers().iter().filter(|p| p.verified).count())
            .await
            .unwrap_or(0)
    }

    async fn total_messages(&self) -> usize {
        self.handle
            .query(|n| {
                n.conversation_ids()
                    .filter_map(|c| n.conversation(c))
                    .map(|c| c.len())
                    .sum()
            })
            .await
            .unwrap_or(0)
    }

    async fn conversations(&self) -> usize {
        self.handle
            .query(|n| n.conversation_ids().count())
            .await
            .unwrap_or(0)
    }

    async fn command(&self, cmd: Command) -> Reply {
        self.handle.command(cmd).await.expect("command")
    }
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("warning: gave up after {limit:?} waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `n` nodes, full mesh: node i dials every node before it.
async fn mesh(team: &Team, n: usize, root: &Path, seed: u64) -> (Vec<InProc>, Vec<Ident>) {
    let ids: Vec<Ident> = (0..n)
        .map(|i| team.member(seed + i as u64, &format!("n{i}")))
        .collect();
    let mut nodes: Vec<InProc> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let peers = nodes.iter().map(|p| p.addr.clone()).collect();
        nodes.push(start_inproc(id, &root.join(format!("n{i}")), peers).await);
    }
    for node in &nodes {
        wait_for("the mesh", DEADLINE, || async {
            node.verified_peers().await == n - 1
        })
        .await;
    }
    (nodes, ids)
}

async fn create_group(node: &InProc, title: &str, members: &[MemberId]) -> ConversationId {
    match node
        .command(Command::CreateConversation {
            kind: ConversationKind::Group {
                title: title.into(),
                members: members.iter().copied().collect::<BTreeSet<_>>(),
            },
        })
        .await
    {
        Reply::Conversation(c) => c,
        r => panic!("unexpected {r:?}"),
    }
}

// ----------------------------------------------------------------- 1. latency

struct LatencyRun {
    samples: Vec<f64>,
    /// Samples not taken: the message had not arrived, or its event was
    /// dropped by the bounded event channel (`lagged`).
    missing: usize,
    /// Messages absent from a node's document when the run ended.
    lost: usize,
    achieved_rate: f64,
    send_p50: f64,
    send_p99: f64,
    lagged: u64,
}

/// Sends `count` messages at `rate` per second (open loop: each send starts
/// at its scheduled time whether or not earlier ones returned), round-robin
/// over the nodes as senders, into one group conversation of all nodes.
/// Latency: from the send command returning on the author's node to the
/// `MessageAdded` event on each other node.
async fn latency_once(
    nodes: &[InProc],
    ids: &[Ident],
    rate: f64,
    count: usize,
    tag: &str,
) -> LatencyRun {
    let members: Vec<MemberId> = ids.iter().map(|i| i.member).collect();
    let conv = create_group(&nodes[0], tag, &members).await;
    for n in nodes {
        let h = n.handle.clone();
        wait_for(
            "the conversation everywhere",
            Duration::from_secs(30),
            || {
                let h = h.clone();
                async move {
                    h.query(move |n| n.conversation(&conv).is_some())
                        .await
                        .unwrap_or(false)
                }
            },
        )
        .await;
        n.arrivals.lock().expect("lock").clear();
    }
    let lag0: u64 = nodes.iter().map(|n| n.lagged.load(Ordering::Relaxed)).sum();
    let sent: Sent = Arc::default();
    let period = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for k in 0..count {
        tokio::time::sleep_until((t0 + period * k as u32).into()).await;
        let s = k % nodes.len();
        let h = nodes[s].handle.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let call = Instant::now();
            if let Ok(Reply::Message(id)) = h.command(send_cmd(conv, k)).await {
                sent.lock()
                    .expect("lock")
                    .insert(id, (s, call, Instant::now()));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let achieved_rate = count as f64 / t0.elapsed().as_secs_f64();
    let expected = count * (nodes.len() - 1);
    wait_for(
        "every message everywhere",
        Duration::from_secs(30),
        || async {
            nodes
                .iter()
                .map(|n| n.arrivals.lock().expect("lock").len())
                .sum::<usize>()
                >= expected
        },
    )
    .await;
    let sent = sent.lock().expect("lock").clone();
    let mut lost = 0;
    for n in nodes {
        let have = n
            .handle
            .query(move |n| n.conversation(&conv).map_or(0, |c| c.len()))
            .await
            .unwrap_or(0);
        lost += sent.len().saturating_sub(have);
    }
    let mut samples = Vec::with_capacity(expected);
    for (r, n) in nodes.iter().enumerate() {
        for (id, at) in n.arrivals.lock().expect("lock").iter() {
            if let Some((s, _, ret)) = sent.get(id) {
                if *s != r {
                    samples.push(at.saturating_duration_since(*ret).as_secs_f64() * 1e3);
                }
            }
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let mut send: Vec<f64> = sent
        .values()
        .map(|(_, c, r)| r.duration_since(*c).as_secs_f64() * 1e3)
        .collect();
    send.sort_by(|a, b| a.total_cmp(b));
    let lagged = nodes
        .iter()
        .map(|n| n.lagged.load(Ordering::Relaxed))
        .sum::<u64>()
        - lag0;
    LatencyRun {
        missing: expected.saturating_sub(samples.len()),
        lost,
        samples,
        achieved_rate,
        send_p50: pct(&send, 0.5),
        send_p99: pct(&send, 0.99),
        lagged,
    }
}

async fn bench_latency(o: &Opts) {
    let team = Team::new(1);
    // (rate, seconds): 200, 1,000 and 5,000 messages (tiny: 20 and 100).
    let secs_for = |rate: usize| match (o.tiny, rate) {
        (true, r) if r <= 10 => 2.0,
        (true, _) => 1.0,
        (false, r) if r <= 10 => 20.0,
        (false, r) if r <= 100 => 10.0,
        (false, _) => 5.0,
    };
    let rates: Vec<(f64, f64)> = o.rates.iter().map(|r| (*r as f64, secs_for(*r))).collect();
    for &n in &o.nodes {
        let root = tempfile::tempdir().expect("tempdir");
        let (nodes, ids) = mesh(&team, n, root.path(), 100 * n as u64).await;
        for &(rate, secs) in &rates {
            let count = (rate * secs) as usize;
            let mut p50s = Vec::new();
            let mut p99s = Vec::new();
            let mut p999s = Vec::new();
            let mut maxs = Vec::new();
            let mut missing = 0;
            let mut lost = 0;
            let mut lagged = 0;
            let mut rates_got = Vec::new();
            let mut send50 = Vec::new();
            let mut send99 = Vec::new();
            for run in 0..o.runs {
                let r =
                    latency_once(&nodes, &ids, rate, count, &format!("lat {n} {rate} {run}")).await;
                println!(
                    "latency nodes={n} rate={rate}/s run={run}: samples={} p50={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms missing={} (not yet arrived={}, events dropped={}) achieved={:.0}/s send p50={:.2}ms p99={:.2}ms",
                    r.samples.len(),
                    pct(&r.samples, 0.5),
                    pct(&r.samples, 0.99),
                    pct(&r.samples, 0.999),
                    r.samples.last().copied().unwrap_or(f64::NAN),
                    r.missing,
                    r.lost,
                    r.lagged,
                    r.achieved_rate,
                    r.send_p50,
                    r.send_p99
                );
                p50s.push(pct(&r.samples, 0.5));
                p99s.push(pct(&r.samples, 0.99));
                p999s.push(pct(&r.samples, 0.999));
                maxs.push(r.samples.last().copied().unwrap_or(f64::NAN));
                missing += r.missing;
                lost += r.lost;
                lagged += r.lagged;
                let overloaded = r.missing > 0;
                rates_got.push(r.achieved_rate);
                send50.push(r.send_p50);
                send99.push(r.send_p99);
                if overloaded {
                    // The mesh is behind; further runs would start with its backlog.
                    println!("latency nodes={n} rate={rate}/s: overloaded, no further runs");
                    break;
                }
            }
            let samples_per_run = count * (n - 1);
            result(json!({
                "impl": "huddle", "bench": "latency", "nodes": n, "rate": rate,
                "messages": count, "samples_per_run": samples_per_run, "runs": o.runs,
                "p50_ms": median(&mut p50s.clone()), "p50_spread": spread(&p50s),
                "p99_ms": median(&mut p99s.clone()), "p99_spread": spread(&p99s),
                "p999_ms": median(&mut p999s.clone()), "p999_spread": spread(&p999s),
                "max_ms": median(&mut maxs.clone()),
                "runs_done": p50s.len(), "missing": missing, "not_arrived": lost, "lagged_events": lagged,
                "achieved_rate": median(&mut rates_got),
                "send_p50_ms": median(&mut send50), "send_p99_ms": median(&mut send99),
            }));
        }
        for node in nodes {
            node.stop().await;
        }
    }
}

// ----------------------------------------------------------------- 2. throughput

/// Messages per second one node (no peers) makes durable: `workers`
/// concurrent senders for `secs`, into `convs` conversations round-robin.
async fn throughput_once(team: &Team, convs: usize, workers: usize, secs: f64) -> (f64, usize) {
    let root = tempfile::tempdir().expect("tempdir");
    let id = team.member(900, "solo");
    let node = start_inproc(&id, root.path(), vec![]).await;
    let mut ids = Vec::new();
    for i in 0..convs {
        ids.push(create_group(&node, &format!("tp {i}"), &[id.member]).await);
    }
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (h, ids, next, done) = (node.handle.clone(), ids.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            // Bounded by time and by a count no run can reach.
            while Instant::now() < end {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= 10_000_000 {
                    break;
                }
                if h.command(send_cmd(ids[k % ids.len()], k)).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    node.stop().await;
    (n as f64 / elapsed, n)
}

async fn bench_throughput(o: &Opts) {
    let team = Team::new(2);
    let secs = if o.tiny { 1.0 } else { 10.0 };
    for convs in [1usize, 100] {
        for workers in [1usize, 64] {
            let mut rates = Vec::new();
            for run in 0..o.runs {
                let (r, n) = throughput_once(&team, convs, workers, secs).await;
                println!(
                    "throughput convs={convs} concurrent={workers} run={run}: {r:.0} msg/s ({n} messages in {secs}s)"
                );
                rates.push(r);
            }
            result(json!({
                "impl": "huddle", "bench": "throughput", "conversations": convs,
                "concurrent": workers, "secs": secs, "runs": o.runs,
                "msgs_per_s": median(&mut rates.clone()), "spread": spread(&rates),
                "target": 5000, "met": median(&mut rates.clone()) >= 5000.0,
            }));
        }
    }
}

// ----------------------------------------------------------------- 3. catch-up

/// A TCP relay on 127.0.0.1 that counts the bytes in each direction.
struct Proxy {
    addr: SocketAddr,
    /// Client (the rejoining node) to target.
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

async fn proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let (u, d) = (up.clone(), down.clone());
    let task = tokio::spawn(async move {
        let mut conns = Vec::new();
        // At most 64 connections over the proxy's life.
        for _ in 0..64 {
            let Ok((client, _)) = listener.accept().await else {
                break;
            };
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            conns.push(tokio::spawn(pipe(cr, sw, u.clone())));
            conns.push(tokio::spawn(pipe(sr, cw, d.clone())));
        }
        for c in conns {
            c.abort();
        }
    });
    Proxy {
        addr,
        up,
        down,
        task,
    }
}

fn tcp_port(a: &Multiaddr) -> u16 {
    a.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a tcp address")
}

fn via(a: &Multiaddr, port: u16) -> Multiaddr {
    a.iter()
        .map(|p| match p {
            Protocol::Tcp(_) => Protocol::Tcp(port),
            p => p,
        })
        .collect()
}

struct CatchUp {
    secs: f64,
    connected_secs: f64,
    bytes_to_b: u64,
    bytes_from_b: u64,
    settled_total: u64,
    missing_chunk_bytes: u64,
    missing_saved_bytes: u64,
    got: usize,
}

/// A and B share `conv_count` conversations; B goes offline; A writes
/// `msgs` messages over them; B starts again (from its own store) and dials
/// A through a counting proxy. Time from B's `start` until B holds every
/// message.
async fn catchup_once(team: &Team, msgs: usize, conv_count: usize) -> CatchUp {
    let root = tempfile::tempdir().expect("tempdir");
    let (da, db) = (root.path().join("a"), root.path().join("b"));
    let a_id = team.member(500, "writer");
    let b_id = team.member(501, "rejoiner");
    // The conversations, on A.
    let mut g = Gen::open(&a_id, &da);
    let convs: Vec<ConversationId> = (0..conv_count)
        .map(|i| g.group(i, &[a_id.member, b_id.member]))
        .collect();
    g.close();
    // B meets A and learns them, then leaves.
    let a = start_inproc(&a_id, &da, vec![]).await;
    let b = start_inproc(&b_id, &db, vec![a.addr.clone()]).await;
    wait_for("B to learn the conversations", DEADLINE, || async {
        b.conversations().await == conv_count
    })
    .await;
    b.stop().await;
    a.stop().await;
    // A writes while B is away.
    let mut g = Gen::open(&a_id, &da);
    let before = g.saved_bytes(&convs);
    g.messages(&convs, msgs, 0);
    let missing_saved_bytes = g.saved_bytes(&convs) - before;
    let missing_chunk_bytes = g.chunk_bytes;
    g.close();
    // B rejoins through the proxy.
    let a = start_inproc(&a_id, &da, vec![]).await;
    let p = proxy(SocketAddr::from(([127, 0, 0, 1], tcp_port(&a.addr)))).await;
    let t0 = Instant::now();
    let b = start_inproc(&b_id, &db, vec![via(&a.addr, p.addr.port())]).await;
    let mut connected_secs = f64::NAN;
    let mut got = 0;
    let deadline = t0 + DEADLINE;
    while Instant::now() < deadline {
        if connected_secs.is_nan() && b.verified_peers().await == 1 {
            connected_secs = t0.elapsed().as_secs_f64();
        }
        got = b.total_messages().await;
        if got >= msgs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (bytes_from_b, bytes_to_b) = (p.up.load(Ordering::Relaxed), p.down.load(Ordering::Relaxed));
    // Whatever follows (delivered receipts going back, acks) until quiet.
    let mut last = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let total = p.up.load(Ordering::Relaxed) + p.down.load(Ordering::Relaxed);
        if total == last {
            break;
        }
        last = total;
    }
    let settled_total = p.up.load(Ordering::Relaxed) + p.down.load(Ordering::Relaxed);
    b.stop().await;
    a.stop().await;
    drop(p);
    CatchUp {
        secs,
        connected_secs,
        bytes_to_b,
        bytes_from_b,
        settled_total,
        missing_chunk_bytes,
        missing_saved_bytes,
        got,
    }
}

async fn bench_catchup(o: &Opts) {
    let team = Team::new(3);
    let conv_count = if o.tiny { 10 } else { 50 };
    for &msgs in &o.catchup {
        let runs = if msgs > 20_000 { 1 } else { o.runs };
        let mut secs = Vec::new();
        let mut ratios = Vec::new();
        let mut ratios_saved = Vec::new();
        let mut last = None;
        for run in 0..runs {
            let c = catchup_once(&team, msgs, conv_count).await;
            let wire = c.bytes_to_b + c.bytes_from_b;
            println!(
                "catch-up {msgs} msgs / {conv_count} convs run={run}: all {}/{msgs} in {:.3}s (connected+verified at {:.3}s); wire to B {} B, from B {} B, total {} B (settled {} B); missing changes {} B as chunks, {} B as compressed save; ratio {:.2}x chunks, {:.2}x save",
                c.got, c.secs, c.connected_secs, c.bytes_to_b, c.bytes_from_b, wire, c.settled_total,
                c.missing_chunk_bytes, c.missing_saved_bytes,
                wire as f64 / c.missing_chunk_bytes as f64,
                wire as f64 / c.missing_saved_bytes as f64,
            );
            secs.push(c.secs);
            ratios.push(wire as f64 / c.missing_chunk_bytes as f64);
            ratios_saved.push(wire as f64 / c.missing_saved_bytes as f64);
            last = Some(c);
        }
        let c = last.expect("one run");
        let s = median(&mut secs.clone());
        let r = median(&mut ratios.clone());
        result(json!({
            "impl": "huddle", "bench": "catchup", "messages": msgs, "conversations": conv_count,
            "runs": runs, "secs": s, "secs_spread": spread(&secs),
            "connected_secs": c.connected_secs, "complete": c.got >= msgs,
            "wire_bytes": c.bytes_to_b + c.bytes_from_b, "wire_to_b": c.bytes_to_b,
            "wire_from_b": c.bytes_from_b, "settled_wire_bytes": c.settled_total,
            "missing_chunk_bytes": c.missing_chunk_bytes, "missing_saved_bytes": c.missing_saved_bytes,
            "ratio_vs_chunks": r, "ratio_spread": spread(&ratios),
            "ratio_vs_save": median(&mut ratios_saved),
            "target_secs": if msgs <= 10_000 { json!(1.0) } else { json!(null) },
            "met_secs": msgs > 10_000 || s <= 1.0, "met_bytes": r <= 1.25,
        }));
    }
}

// ----------------------------------------------------------------- processes

/// Child processes, stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
#[derive(Default)]
struct Procs {
    children: Vec<Child>,
}

impl Procs {
    fn stop_all(&mut self) {
        for c in &self.children {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The release `huddle` binary cargo built for this bench, or `HUDDLE_BIN`.
fn huddle_bin() -> PathBuf {
    std::env::var_os("HUDDLE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_huddle")))
}

/// Starts `huddle run` on `dir`; returns the child and its listen address
/// (from the `started` line of `--json`). The rest of stdout is drained.
fn spawn_run(dir: &Path, peers: &[String], procs: &mut Procs) -> String {
    let log = std::fs::File::create(dir.join("run.log")).expect("log file");
    let mut cmd = std::process::Command::new(huddle_bin());
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .args(["--api", "127.0.0.1:0"]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn huddle run");
    let stdout = child.stdout.take().expect("stdout");
    procs.children.push(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(t) = tx.take() {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let addr = v["listen"][0].as_str().unwrap_or_default().to_owned();
                let _ = t.send(addr);
            }
        }
    });
    rx.recv_timeout(DEADLINE).expect("huddle run started")
}

/// Waits for the API of the process `pid` serving `dir`, and connects.
fn api_of(dir: &Path, pid: u32, limit: Duration) -> Option<ApiClient> {
    let d = DataDir::new(dir);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(info)) = d.api_info() {
            if info.pid == pid {
                let c = ApiClient::new(info);
                if c.status().is_ok() {
                    return Some(c);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime in seconds.
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

// ----------------------------------------------------------------- 4. scale

fn bench_scale(o: &Opts) {
    let team = Team::new(4);
    let n = o.scale_nodes;
    let (seed_msgs, seed_convs, per_node_rate) = if o.tiny {
        (100, 2, 2.0)
    } else {
        (10_000, 10, 1.0)
    };
    let root = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("HUDDLE_E2E_KEEP").is_some() {
        println!("scale: keeping {} (HUDDLE_E2E_KEEP)", root.path().display());
    }
    let ids: Vec<Ident> = (0..n)
        .map(|i| team.member(4000 + i as u64, &format!("node {i}")))
        .collect();
    let members: Vec<MemberId> = ids.iter().map(|i| i.member).collect();
    let dirs: Vec<PathBuf> = (0..n).map(|i| root.path().join(format!("n{i}"))).collect();
    for (d, id) in dirs.iter().zip(&ids) {
        write_datadir(d, id);
    }
    // Node 0 writes the seed history; every other node gets a copy of the
    // store, so all start level with `seed_msgs` messages stored.
    let t = Instant::now();
    let mut g = Gen::open(&ids[0], &dirs[0]);
    let convs: Vec<ConversationId> = (0..seed_convs).map(|i| g.group(i, &members)).collect();
    g.messages(&convs, seed_msgs, 0);
    g.close();
    for d in &dirs[1..] {
        copy_dir(&dirs[0].join("db"), &d.join("db"));
    }
    println!(
        "scale: seeded {seed_msgs} messages in {seed_convs} conversations in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let mut procs = Procs::default();
    let mut addrs: Vec<String> = Vec::new();
    for d in &dirs {
        let a = spawn_run(d, &addrs, &mut procs);
        addrs.push(a);
    }
    let pids: Vec<u32> = procs.children.iter().map(|c| c.id()).collect();
    let clients: Vec<ApiClient> = dirs
        .iter()
        .zip(&pids)
        .map(|(d, p)| api_of(d, *p, DEADLINE).expect("API up"))
        .collect();
    let t = Instant::now();
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        let full = clients.iter().all(|c| {
            c.peers()
                .map(|p| p.iter().filter(|p| p.verified).count() >= n - 1)
                .unwrap_or(false)
        });
        if full {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "scale: {n} processes in a full mesh after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let idle_rss: Vec<u64> = pids
        .iter()
        .map(|p| proc_status(*p, "VmRSS:").unwrap_or(0))
        .collect();
    let cpu0: Vec<f64> = pids
        .iter()
        .map(|p| proc_cpu_secs(*p).unwrap_or(0.0))
        .collect();
    // Steady traffic: each node sends `per_node_rate` messages a second.
    let per_node = (o.scale_secs as f64 * per_node_rate) as usize;
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut rss_samples: Vec<Vec<u64>> = Vec::new();
    std::thread::scope(|s| {
        for (i, c) in clients.iter().enumerate() {
            let (ok, failed, convs) = (ok.clone(), failed.clone(), &convs);
            s.spawn(move || {
                let offset = Duration::from_secs_f64(i as f64 / (n as f64 * per_node_rate));
                for k in 0..per_node {
                    let at = t0 + offset + Duration::from_secs_f64(k as f64 / per_node_rate);
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let req = SendRequest {
                        body: body(i * 1_000_000 + k),
                        priority: Priority::Routine,
                        reply_to: None,
                    };
                    match c.send(&convs[(i + k) % convs.len()], &req) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        // Sample memory every 5 s while the traffic runs.
        let end = t0 + Duration::from_secs(o.scale_secs + 30);
        while ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n * per_node
            && Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(500));
            if rss_samples.len() < (t0.elapsed().as_secs() / 5) as usize + 1 {
                rss_samples.push(
                    pids.iter()
                        .map(|p| proc_status(*p, "VmRSS:").unwrap_or(0))
                        .collect(),
                );
            }
        }
    });
    let traffic_secs = t0.elapsed().as_secs_f64();
    let cpu1: Vec<f64> = pids
        .iter()
        .map(|p| proc_cpu_secs(*p).unwrap_or(0.0))
        .collect();
    let sent = ok.load(Ordering::Relaxed);
    // Nothing lost: every node ends with the seed plus every message sent.
    let expected = seed_msgs + sent;
    let t = Instant::now();
    let mut counts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(o.scale_wait_secs);
    while Instant::now() < deadline {
        counts = clients
            .iter()
            .map(|c| {
                c.chats()
                    .map(|cs| cs.iter().map(|c| c.messages).sum::<usize>())
                    .unwrap_or(0)
            })
            .collect();
        if counts.iter().all(|c| *c == expected) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let converge_secs = t.elapsed().as_secs_f64();
    let lost = counts.iter().filter(|c| **c != expected).count();
    let end_rss: Vec<u64> = pids
        .iter()
        .map(|p| proc_status(*p, "VmRSS:").unwrap_or(0))
        .collect();
    let hwm: Vec<u64> = pids
        .iter()
        .map(|p| proc_status(*p, "VmHWM:").unwrap_or(0))
        .collect();
    let cpu_pct: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| (b - a) / traffic_secs * 100.0)
        .collect();
    let disk: Vec<u64> = dirs.iter().map(|d| dir_size(&d.join("db"))).collect();
    procs.stop_all();
    if std::env::var_os("HUDDLE_E2E_KEEP").is_some() {
        // Leave the data directories and each node's run.log for a post-mortem.
        let _ = root.keep();
    }
    let mb = |v: &[u64]| -> Vec<f64> { v.iter().map(|k| *k as f64 / 1024.0).collect() };
    let (mut e, mut h, mut i0) = (mb(&end_rss), mb(&hwm), mb(&idle_rss));
    let max_sampled = rss_samples.iter().flatten().copied().max().unwrap_or(0) as f64 / 1024.0;
    let mut c = cpu_pct.clone();
    println!(
        "scale: {n} nodes, {sent} sent ok, {} failed in {traffic_secs:.1}s; converged={} ({converge_secs:.1}s after the traffic); counts {:?}",
        failed.load(Ordering::Relaxed),
        lost == 0,
        counts
    );
    println!(
        "scale: RSS MB idle median {:.1}, end median {:.1} max {:.1}, peak (VmHWM) max {:.1}; CPU % per node during traffic median {:.1} max {:.1}, sum {:.0}%; store on disk median {:.1} MB",
        median(&mut i0),
        median(&mut e.clone()),
        e.iter().copied().fold(0.0, f64::max),
        h.iter().copied().fold(0.0, f64::max),
        median(&mut c),
        cpu_pct.iter().copied().fold(0.0, f64::max),
        cpu_pct.iter().sum::<f64>(),
        median(&mut disk.iter().map(|d| *d as f64 / 1e6).collect::<Vec<_>>()),
    );
    let end_max = e.iter().copied().fold(0.0, f64::max);
    result(json!({
        "impl": "huddle", "bench": "scale", "nodes": n, "seed_messages": seed_msgs,
        "traffic_secs": traffic_secs, "rate_total": per_node_rate * n as f64,
        "sent": sent, "failed": failed.load(Ordering::Relaxed), "expected_each": expected,
        "nodes_incomplete": lost, "converge_secs": converge_secs,
        "rss_idle_median_mb": median(&mut i0), "rss_end_median_mb": median(&mut e),
        "rss_end_max_mb": end_max, "rss_sampled_max_mb": max_sampled,
        "vmhwm_max_mb": h.iter().copied().fold(0.0, f64::max), "vmhwm_median_mb": median(&mut h),
        "cpu_pct_median": median(&mut cpu_pct.clone()),
        "cpu_pct_max": cpu_pct.iter().copied().fold(0.0, f64::max),
        "cpu_pct_sum": cpu_pct.iter().sum::<f64>(),
        "target_rss_mb": 60, "met": end_max < 60.0 && lost == 0,
    }));
}

// ----------------------------------------------------------------- 5. cold start

fn bench_cold(o: &Opts) {
    let team = Team::new(5);
    for &(msgs, convs) in &o.cold {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("d");
        let id = team.member(5000, "cold");
        write_datadir(&dir, &id);
        let t = Instant::now();
        let mut g = Gen::open(&id, &dir);
        let cs: Vec<ConversationId> = (0..convs).map(|i| g.group(i, &[id.member])).collect();
        g.messages(&cs, msgs, 0);
        g.close();
        let gen_secs = t.elapsed().as_secs_f64();
        let disk = dir_size(&dir.join("db"));
        let mut secs = Vec::new();
        let mut rss = Vec::new();
        let mut hwm = Vec::new();
        for run in 0..o.runs {
            let mut procs = Procs::default();
            let t0 = Instant::now();
            let _ = spawn_run(&dir, &[], &mut procs);
            let pid = procs.children[0].id();
            let api = api_of(&dir, pid, DEADLINE);
            let s = t0.elapsed().as_secs_f64();
            let ok = api.is_some_and(|c| {
                c.chats()
                    .map(|cs| cs.iter().map(|c| c.messages).sum::<usize>() == msgs)
                    .unwrap_or(false)
            });
            let r = proc_status(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
            let h = proc_status(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
            procs.stop_all();
            println!(
                "cold start {msgs} msgs / {convs} convs run={run}: API answered after {s:.3}s (all messages listed: {ok}); RSS {r:.1} MB, peak {h:.1} MB; store {:.1} MB (generated in {gen_secs:.1}s)",
                disk as f64 / 1e6
            );
            secs.push(s);
            rss.push(r);
            hwm.push(h);
        }
        let s = median(&mut secs.clone());
        result(json!({
            "impl": "huddle", "bench": "cold", "messages": msgs, "conversations": convs,
            "runs": o.runs, "secs": s, "secs_spread": spread(&secs),
            "rss_mb": median(&mut rss), "vmhwm_mb": median(&mut hwm),
            "store_mb": disk as f64 / 1e6,
            "extrapolated_1m_secs": s * 1_000_000.0 / msgs as f64,
            "target_secs": 1.0, "met": msgs >= 1_000_000 && s <= 1.0,
        }));
    }
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
    if o.wants("cold") {
        bench_cold(&o);
    }
    println!("e2e: done in {:.1}s", t.elapsed().as_secs_f64());
}
