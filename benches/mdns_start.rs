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
use std::process::{Child, ChildStdin, Command as Process, Output, Stdio};
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

// ----------------------------------------------------------------- child

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    A,
    B,
}

/// One node inside a namespace. Protocol on stdout, one line each:
/// `T <what> <µs since the epoch>`, `CONN <found_by> <since_ms> <addr>`,
/// `READY` (A), `DONE` (B). Stops when stdin closes.
fn child(role: Role) {
    let t_main = now_us();
    if let Ok(filter) = std::env::var(LOG_ENV) {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("seed from the parent");
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("data dir from the parent"));
    let (ana, ben) = identities(seed);
    let (me, members) = match role {
        Role::A => (&ana, [ana.member, ben.member]),
        Role::B => (&ben, [ana.member, ben.member]),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // The parent closes our stdin to stop us.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = stop_tx.send(());
        });
        let t_start = now_us();
        let store = SledStore::open(&dir).expect("open store");
        let config = ShellConfig {
            key: me.key.clone(),
            certificate: Some(me.cert.clone()),
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().expect("multiaddr")],
            peers: vec![],
            mdns: true,
            node: NodeConfig::default(),
        };
        let (handle, mut task) = huddle::net::start(config, store).await.expect("start node");
        let t_started = now_us();
        // The loop has not run yet (current-thread runtime): nothing missed.
        let mut events = handle.subscribe();
        println!("T main {t_main}");
        println!("T start {t_start}");
        println!("T started {t_started}");
        if role == Role::A {
            let Reply::Conversation(conversation) = handle
                .command(Command::CreateConversation {
                    kind: ConversationKind::Direct { members },
                })
                .await
                .expect("create conversation")
            else {
                panic!("no conversation id")
            };
            handle
                .command(Command::Send {
                    conversation,
                    body: "bed 12 obs stable, please review at 9".into(),
                    priority: Priority::Routine,
                    reply_to: None,
                })
                .await
                .expect("send");
            println!("READY {}", now_us());
        }
        let h = handle.clone();
        let watcher = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let (mut joined, mut message) = (false, role == Role::A);
            loop {
                match events.recv().await {
                    Ok(Event::PeerJoined { .. }) if !joined => {
                        let t = now_us();
                        joined = true;
                        println!("T joined {t}");
                        for c in h.connections().await.unwrap_or_default() {
                            println!("CONN {:?} {} {}", c.found_by, c.since_ms, c.addr);
                        }
                    }
                    Ok(Event::MessageAdded { local: false, .. }) if !message => {
                        let t = now_us();
                        message = true;
                        println!("T message {t}");
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => println!("WARN lagged {n}"),
                    Err(RecvError::Closed) => return,
                }
                if joined && message {
                    println!("DONE");
                    return;
                }
            }
        });
        tokio::select! {
            _ = stop_rx => {}
            r = &mut task => {
                eprintln!("the node stopped by itself: {r:?}");
                std::process::exit(1);
            }
        }
        watcher.abort();
        let _ = tokio::time::timeout(CHILD_SHUTDOWN, handle.shutdown()).await;
        let _ = tokio::time::timeout(CHILD_SHUTDOWN, task).await;
    });
}

// ----------------------------------------------------------------- system

fn run(args: &[&str]) -> Result<Output, String> {
    Process::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.join(" ")))
}

fn must(args: &[&str]) -> Result<(), String> {
    let out = run(args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces and child pids alive right now, for the signal handler.
struct Live {
    namespaces: Vec<String>,
    pids: Vec<u32>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    namespaces: Vec::new(),
    pids: Vec::new(),
});

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn kill_pid(pid: u32) {
    let _ = Process::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// On SIGINT or SIGTERM: kill our children (by pid), delete our namespaces,
/// exit.
fn watch_signals() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let got = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return false;
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                _ = term.recv() => true,
            }
        });
        if got {
            eprintln!("\ninterrupted: stopping the nodes and deleting the namespaces");
            let l = live();
            for pid in &l.pids {
                kill_pid(*pid);
            }
            for n in &l.namespaces {
                let _ = run(&["ip", "netns", "del", n]);
            }
            std::process::exit(130);
        }
    });
}

/// Why this machine cannot run the bench, if it cannot.
fn missing_prerequisite() -> Option<String> {
    match run(&["ip", "-V"]) {
        Ok(o) if o.status.success() => {}
        _ => return Some("the `ip` command (iproute2) is not installed".into()),
    }
    let uid = run(&["id", "-u"])
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some("creating network namespaces needs root".into());
    }
    let probe = format!("{NS_PREFIX}{}-probe", std::process::id());
    if let Err(e) = must(&["ip", "netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace ({e})"));
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    None
}

/// Deletes namespaces left by an earlier run of this bench that died
/// without cleaning up (their pid no longer exists). Only ours, by prefix.
fn delete_stale_namespaces() {
    let Ok(out) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            println!("deleting stale namespace {name} (its bench, pid {pid}, is gone)");
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ----------------------------------------------------------------- one run

/// A child node in a namespace; its stdout lines arrive on `lines`.
struct NodeProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl NodeProc {
    /// The next line, or an error at `deadline` or when the child is gone.
    fn next_line(&self, deadline: Instant, what: &str) -> Result<String, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => format!("timed out waiting for {what}"),
            mpsc::RecvTimeoutError::Disconnected => format!("the child exited before {what}"),
        })
    }
}

/// Everything one run creates; dropping it stops the children and then
/// deletes the namespaces.
struct RunGuard {
    nodes: Vec<NodeProc>,
    namespaces: Vec<String>,
}

impl RunGuard {
    fn stop_nodes(&mut self) {
        // Closing stdin asks each child to shut its node down.
        for n in &mut self.nodes {
            n.stdin.take();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for n in &mut self.nodes {
            loop {
                match n.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = n.child.kill();
                        let _ = n.child.wait();
                        break;
                    }
                }
            }
            live().pids.retain(|p| *p != n.child.id());
        }
        self.nodes.clear();
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.stop_nodes();
        for n in &self.namespaces {
            // Deleting a namespace also deletes its end of the veth pair.
            let _ = run(&["ip", "netns", "del", n]);
        }
        live().namespaces.retain(|n| !self.namespaces.contains(n));
        self.namespaces.clear();
    }
}

/// Two fresh namespaces joined by a veth pair, registered with `guard`
/// as they are created.
fn create_namespaces(guard: &mut RunGuard, run_no: usize) -> Result<[String; 2], String> {
    let pid = std::process::id();
    let a = format!("{NS_PREFIX}{pid}-{run_no}-a");
    let b = format!("{NS_PREFIX}{pid}-{run_no}-b");
    for n in [&a, &b] {
        must(&["ip", "netns", "add", n])?;
        guard.namespaces.push(n.clone());
        live().namespaces.push(n.clone());
    }
    let (va, vb) = ("hmb-a", "hmb-b");
    let net = (pid as usize + run_no) % 250 + 1;
    // Both ends are created inside the namespaces: nothing appears in the
    // namespace this bench runs in.
    must(&[
        "ip", "link", "add", va, "netns", &a, "type", "veth", "peer", "name", vb, "netns", &b,
    ])?;
    for (n, dev, host) in [(&a, va, 1), (&b, vb, 2)] {
        let addr = format!("10.77.{net}.{host}/24");
        must(&["ip", "-n", n, "addr", "add", &addr, "dev", dev])?;
        must(&["ip", "-n", n, "link", "set", dev, "up"])?;
        must(&["ip", "-n", n, "link", "set", "lo", "up"])?;
    }
    Ok([a, b])
}

/// Waits (polling every 10 ms, bounded) until no address in `ns` is still
/// tentative (IPv6 duplicate address detection), so that both nodes see a
/// settled network. Returns how long that took.
fn await_addresses(ns: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let deadline = t + DAD_DEADLINE;
    loop {
        let out = run(&["ip", "-n", ns, "addr", "show", "tentative"])?;
        if out.status.success() && out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(t.elapsed());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "addresses in {ns} still tentative after {DAD_DEADLINE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Opts {
    runs: usize,
    settle: Duration,
    logs: Option<PathBuf>,
}

fn spawn_node(
    guard: &mut RunGuard,
    ns: &str,
    role: &str,
    seed: u64,
    dir: &Path,
    log: &Path,
    filter: Option<&str>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("bench binary path: {e}"))?;
    let log_file =
        std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let mut cmd = Process::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .env(CHILD_ENV, role)
        .env(SEED_ENV, seed.to_string())
        .env(DIR_ENV, dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    match filter {
        Some(f) => cmd.env(LOG_ENV, f),
        None => cmd.env_remove(LOG_ENV),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start a child in {ns}: {e}"))?;
    live().pids.push(child.id());
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    guard.nodes.push(NodeProc {
        child,
        stdin,
        lines: rx,
    });
    Ok(())
}

/// One measurement, in ms (NaN where not observed).
#[derive(Clone, Debug)]
struct Sample {
    /// B's node start (store open + `net::start`) until its listeners and
    /// mDNS daemon are up.
    start_up: f64,
    /// B's start → the first connection established (B's `since_ms`).
    connected: f64,
    /// B's start → `PeerJoined` (A proved membership).
    joined: f64,
    /// The bench spawning B's process → `PeerJoined`.
    spawn_joined: f64,
    /// B's start → A's message added on B.
    message: f64,
    /// How B's first connection came about.
    found_by: String,
    /// All of B's connections when A joined.
    conns: Vec<String>,
}

fn parse_t(line: &str, what: &str) -> Option<u64> {
    let rest = line.strip_prefix("T ")?;
    let mut it = rest.split_whitespace();
    (it.next()? == what).then_some(())?;
    it.next()?.parse().ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn run_once(o: &Opts, run_no: usize, root: &Path) -> Result<Sample, String> {
    let mut guard = RunGuard {
        nodes: Vec::new(),
        namespaces: Vec::new(),
    };
    let [ns_a, ns_b] = create_namespaces(&mut guard, run_no)?;
    let dad = await_addresses(&ns_a)?.max(await_addresses(&ns_b)?);
    if run_no == 0 {
        println!(
            "(addresses settled {:.0} ms after the links came up)",
            dad.as_secs_f64() * 1e3
        );
    }
    let seed = u64::from(std::process::id()) * 1000 + run_no as u64;
    let filter = o
        .logs
        .as_ref()
        .map(|_| std::env::var(LOG_ENV).unwrap_or_else(|_| "huddle=debug,mdns_sd=debug".into()));
    let log_dir = o.logs.clone().unwrap_or_else(|| root.to_owned());
    let run_dir = root.join(format!("run{run_no}"));
    let log = |r: &str| log_dir.join(format!("run{run_no}-{r}.log"));

    let result = (|| {
        spawn_node(
            &mut guard,
            &ns_a,
            "a",
            seed,
            &run_dir.join("a"),
            &log("a"),
            filter.as_deref(),
        )?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let l = guard.nodes[0].next_line(deadline, "A to be ready")?;
            if l.starts_with("READY") {
                break;
            }
        }
        // A runs alone for `settle`; it must not exit meanwhile.
        let settled = Instant::now() + o.settle;
        loop {
            match guard.nodes[0].next_line(settled, "A to settle") {
                Ok(_) => continue,
                Err(e) if e.starts_with("timed out") => break,
                Err(e) => return Err(e),
            }
        }
        let t_spawn = now_us();
        spawn_node(
            &mut guard,
            &ns_b,
            "b",
            seed,
            &run_dir.join("b"),
            &log("b"),
            filter.as_deref(),
        )?;
        let deadline = Instant::now() + RUN_DEADLINE;
        let (mut start, mut started, mut joined, mut message) = (None, None, None, None);
        let mut conns: Vec<(String, u64, String)> = Vec::new();
        loop {
            let l = guard.nodes[1].next_line(deadline, "B's connection and message")?;
            if l == "DONE" {
                break;
            } else if let Some(t) = parse_t(&l, "start") {
                start = Some(t);
            } else if let Some(t) = parse_t(&l, "started") {
                started = Some(t);
            } else if let Some(t) = parse_t(&l, "joined") {
                joined = Some(t);
            } else if let Some(t) = parse_t(&l, "message") {
                message = Some(t);
            } else if let Some(rest) = l.strip_prefix("CONN ") {
                let mut it = rest.splitn(3, ' ');
                let found_by = it.next().unwrap_or("").to_owned();
                let since: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                conns.push((found_by, since, it.next().unwrap_or("").to_owned()));
            } else if l.starts_with("WARN") {
                println!("  B: {l}");
            }
        }
        let start = start.ok_or("B did not report its start")?;
        let ms = |t: Option<u64>| t.map_or(f64::NAN, |t| (t as f64 - start as f64) / 1e3);
        conns.sort_by_key(|c| c.1);
        let first = conns.first();
        Ok(Sample {
            start_up: ms(started),
            connected: first.map_or(f64::NAN, |c| c.1 as f64 - start as f64 / 1e3),
            joined: ms(joined),
            spawn_joined: joined.map_or(f64::NAN, |j| (j as f64 - t_spawn as f64) / 1e3),
            message: ms(message),
            found_by: first.map_or("?".into(), |c| c.0.clone()),
            conns: conns
                .iter()
                .map(|c| format!("{}@+{:.0}ms {}", c.0, c.1 as f64 - start as f64 / 1e3, c.2))
                .collect(),
        })
    })();
    if result.is_err() {
        guard.stop_nodes();
        for r in ["a", "b"] {
            let t = tail(&log(r), 15);
            if !t.is_empty() {
                println!("  --- log of node {r} (last lines) ---\n{t}");
            }
        }
    }
    drop(guard);
    result
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
