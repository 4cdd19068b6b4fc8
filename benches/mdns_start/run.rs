//! One run: two namespaces joined by a veth pair, two children, one sample.

use super::*;

/// A child node in a namespace; its stdout lines arrive on `lines`.
pub(crate) struct NodeProc {
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) lines: mpsc::Receiver<String>,
}

impl NodeProc {
    /// The next line, or an error at `deadline` or when the child is gone.
    pub(crate) fn next_line(&self, deadline: Instant, what: &str) -> Result<String, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => format!("timed out waiting for {what}"),
            mpsc::RecvTimeoutError::Disconnected => format!("the child exited before {what}"),
        })
    }
}

/// Everything one run creates; dropping it stops the children and then
/// deletes the namespaces.
pub(crate) struct RunGuard {
    pub(crate) nodes: Vec<NodeProc>,
    pub(crate) namespaces: Vec<String>,
}

impl RunGuard {
    pub(crate) fn stop_nodes(&mut self) {
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
pub(crate) fn create_namespaces(
    guard: &mut RunGuard,
    run_no: usize,
) -> Result<[String; 2], String> {
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
pub(crate) fn await_addresses(ns: &str) -> Result<Duration, String> {
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

pub(crate) struct Opts {
    pub(crate) runs: usize,
    pub(crate) settle: Duration,
    pub(crate) logs: Option<PathBuf>,
}

pub(crate) fn spawn_node(
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
pub(crate) struct Sample {
    /// B's node start (store open + `net::start`) until its listeners and
    /// mDNS daemon are up.
    pub(crate) start_up: f64,
    /// B's start → the first connection established (B's `since_ms`).
    pub(crate) connected: f64,
    /// B's start → `PeerJoined` (A proved membership).
    pub(crate) joined: f64,
    /// The bench spawning B's process → `PeerJoined`.
    pub(crate) spawn_joined: f64,
    /// B's start → A's message added on B.
    pub(crate) message: f64,
    /// How B's first connection came about.
    pub(crate) found_by: String,
    /// All of B's connections when A joined.
    pub(crate) conns: Vec<String>,
}

pub(crate) fn parse_t(line: &str, what: &str) -> Option<u64> {
    let rest = line.strip_prefix("T ")?;
    let mut it = rest.split_whitespace();
    (it.next()? == what).then_some(())?;
    it.next()?.parse().ok()
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn run_once(o: &Opts, run_no: usize, root: &Path) -> Result<Sample, String> {
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
