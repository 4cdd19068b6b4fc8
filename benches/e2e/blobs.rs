//! Attachments (issue 23): nine devices fetch one 10 MiB blob from its
//! author on loopback (time until all nine hold it, peak extra RSS per
//! node); and, in two network namespaces joined by a veth pair shaped to
//! 2 Mbit/s with `tc tbf` (root only), the latency of STAT messages sent
//! while a 25 MiB attachment crosses that link.

use super::*;

#[path = "../shared/netns.rs"]
mod netns;

/// A blob of `len` bytes that does not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Resets the peak RSS the kernel keeps for `pid` (VmHWM) to its RSS now.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

pub(crate) fn bench_blobs(o: &Opts) {
    nine_fetch(o);
    match netns::missing_prerequisite() {
        None => shaped(o),
        Some(why) => println!("blobs: SKIPPED the shaped-link part: {why}"),
    }
}

/// Writes `n` data directories of one team, all in one group, copied from
/// the first so that every node starts with the conversation.
fn ward(root: &Path, n: usize, seed: u64) -> (Vec<PathBuf>, ConversationId) {
    let team = Team::new(seed);
    let ids: Vec<Ident> = (0..n)
        .map(|i| team.member(seed * 100 + i as u64, &format!("node {i}")))
        .collect();
    let members: Vec<MemberId> = ids.iter().map(|i| i.member).collect();
    let dirs: Vec<PathBuf> = (0..n).map(|i| root.join(format!("n{i}"))).collect();
    for (d, id) in dirs.iter().zip(&ids) {
        write_datadir(d, id);
    }
    let mut g = Gen::open(&ids[0], &dirs[0]);
    let conv = g.group(0, &members);
    g.close();
    for d in &dirs[1..] {
        copy_dir(&dirs[0].join("db"), &d.join("db"));
    }
    (dirs, conv)
}

fn attach(c: &ApiClient, conv: &ConversationId, data: &[u8], body: &str) -> MessageId {
    let up = c
        .upload(data, "scan.bin", "application/octet-stream")
        .expect("upload");
    let req = SendRequest {
        body: body.into(),
        priority: Priority::Routine,
        reply_to: None,
        ack_by: None,
        reminder: None,
        attachments: vec![huddle::api::types::AttachmentRequest {
            hash: up.hash,
            name: up.name,
            media_type: up.media_type,
            thumbnail: None,
        }],
    };
    c.send(conv, &req).expect("send")
}

fn nine_fetch(o: &Opts) {
    let n = 10;
    let size = if o.tiny { 1 << 20 } else { 10 << 20 };
    let root = tempfile::tempdir().expect("tempdir");
    let (dirs, conv) = ward(root.path(), n, 23);
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
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline
        && !clients.iter().all(|c| {
            c.peers()
                .map(|p| p.iter().filter(|p| p.verified).count() >= n - 1)
                .unwrap_or(false)
        })
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let data = noise(size, 5);
    let msg = attach(&clients[0], &conv, &data, "scan");
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline
        && !clients[1..].iter().all(|c| {
            c.attachments(&conv, &msg)
                .map(|a| !a.is_empty())
                .unwrap_or(false)
        })
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before: Vec<u64> = pids
        .iter()
        .map(|p| proc_status(*p, "VmRSS:").unwrap_or(0))
        .collect();
    for p in &pids {
        reset_peak(*p);
    }
    let t = Instant::now();
    let times: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = clients[1..]
            .iter()
            .map(|c| {
                s.spawn(move || {
                    c.fetch_attachment(&conv, &msg, 0).expect("fetched");
                    t.elapsed().as_secs_f64()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("fetch thread"))
            .collect()
    });
    let all = t.elapsed().as_secs_f64();
    let extra: Vec<u64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| proc_status(*p, "VmHWM:").unwrap_or(0).saturating_sub(*b))
        .collect();
    for c in &clients[1..] {
        let bytes = c.download_attachment(&conv, &msg, 0).expect("download");
        assert_eq!(bytes.len(), data.len());
        assert!(bytes == data, "a fetched blob differs from the original");
    }
    let max_extra = extra.iter().max().copied().unwrap_or(0);
    let author_extra = extra[0];
    let fetcher_max = extra[1..].iter().max().copied().unwrap_or(0);
    println!(
        "blobs: {n_f} devices hold a {mib} MiB blob after {all:.2}s (first {first:.2}s); peak extra RSS per node: author {a:.1} MiB, fetchers up to {f:.1} MiB",
        n_f = n - 1,
        mib = size >> 20,
        first = times.iter().cloned().fold(f64::INFINITY, f64::min),
        a = author_extra as f64 / 1024.0,
        f = fetcher_max as f64 / 1024.0,
    );
    result(json!({
        "part": "blobs_nine", "bytes": size, "devices": n - 1, "seconds": all,
        "max_extra_rss_kib": max_extra, "author_extra_rss_kib": author_extra,
        "fetcher_max_extra_rss_kib": fetcher_max,
    }));
}

/// Runs `args` inside network namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec!["ip".to_owned(), "netns".into(), "exec".into(), ns.into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = netns::run(&["ip", "netns", "del", ns]);
        }
    }
}

/// `huddle run` in `ns`, its stdout lines sent to `tx` with when they came.
fn spawn_in(
    ns: &str,
    dir: &Path,
    listen: &str,
    peer: Option<&str>,
    procs: &mut Procs,
    tx: std::sync::mpsc::Sender<(Instant, serde_json::Value)>,
) {
    let bin = huddle_bin();
    let mut args = vec![
        "ip".to_owned(),
        "netns".into(),
        "exec".into(),
        ns.into(),
        bin.display().to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--json".into(),
        "run".into(),
        "--listen".into(),
        listen.into(),
        "--no-mdns".into(),
        "--api".into(),
        "127.0.0.1:0".into(),
    ];
    if let Some(p) = peer {
        args.extend(["--peer".into(), p.into()]);
    }
    let log = std::fs::File::create(dir.join("run.log")).expect("log");
    let mut child = std::process::Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn huddle run in a namespace");
    let out = child.stdout.take().expect("stdout");
    procs.children.push(child);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send((Instant::now(), v));
            }
        }
    });
}

fn cli_in(ns: &str, dir: &Path, args: &[&str]) -> String {
    let bin = huddle_bin().display().to_string();
    let d = dir.display().to_string();
    let mut all = vec![bin.as_str(), "--data-dir", d.as_str()];
    all.extend_from_slice(args);
    let v = in_ns(ns, &all);
    let out = std::process::Command::new(&v[0])
        .args(&v[1..])
        .output()
        .expect("run huddle");
    assert!(
        out.status.success(),
        "huddle {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Sends a STAT from A; returns how long until B's node reported it.
fn stat_latency(
    a: (&str, &Path),
    conv: &ConversationId,
    text: &str,
    rx: &std::sync::mpsc::Receiver<(Instant, serde_json::Value)>,
) -> f64 {
    let t = Instant::now();
    let id = cli_in(a.0, a.1, &["send", &conv.to_string(), text, "--stat"]);
    loop {
        let (at, v) = rx.recv_timeout(DEADLINE).expect("B reports the message");
        if v["type"] == "message_added" && v["message"].as_str() == Some(id.as_str()) {
            return at.duration_since(t).as_secs_f64();
        }
    }
}

fn shaped(o: &Opts) {
    let (rate, size) = if o.tiny {
        ("2mbit", 1 << 20)
    } else {
        ("2mbit", 25 << 20)
    };
    let tag = format!("hb{}", std::process::id() % 100_000);
    let (na, nb) = (format!("{tag}a"), format!("{tag}b"));
    let _guard = Namespaces(vec![na.clone(), nb.clone()]);
    let (va, vb) = (format!("{tag}va"), format!("{tag}vb"));
    for c in [
        vec!["ip", "netns", "add", &na],
        vec!["ip", "netns", "add", &nb],
        vec![
            "ip", "link", "add", &va, "netns", &na, "type", "veth", "peer", "name", &vb, "netns",
            &nb,
        ],
        vec!["ip", "-n", &na, "addr", "add", "10.231.0.1/24", "dev", &va],
        vec!["ip", "-n", &nb, "addr", "add", "10.231.0.2/24", "dev", &vb],
        vec!["ip", "-n", &na, "link", "set", &va, "up"],
        vec!["ip", "-n", &nb, "link", "set", &vb, "up"],
        vec!["ip", "-n", &na, "link", "set", "lo", "up"],
        vec!["ip", "-n", &nb, "link", "set", "lo", "up"],
        vec![
            "tc", "-n", &na, "qdisc", "add", "dev", &va, "root", "tbf", "rate", rate, "burst",
            "16kb", "latency", "200ms",
        ],
        vec![
            "tc", "-n", &nb, "qdisc", "add", "dev", &vb, "root", "tbf", "rate", rate, "burst",
            "16kb", "latency", "200ms",
        ],
    ] {
        if let Err(e) = netns::must(&c) {
            println!("blobs: SKIPPED the shaped-link part: {e}");
            return;
        }
    }
    let root = tempfile::tempdir().expect("tempdir");
    let (dirs, conv) = ward(root.path(), 2, 24);
    let mut procs = Procs::default();
    let (tx_a, rx_a) = std::sync::mpsc::channel();
    spawn_in(
        &na,
        &dirs[0],
        "/ip4/10.231.0.1/tcp/4101",
        None,
        &mut procs,
        tx_a,
    );
    let (_, started) = rx_a.recv_timeout(DEADLINE).expect("A started");
    let a_addr = started["listen"][0]
        .as_str()
        .expect("A's address")
        .to_owned();
    let (tx_b, rx_b) = std::sync::mpsc::channel();
    spawn_in(
        &nb,
        &dirs[1],
        "/ip4/10.231.0.2/tcp/4102",
        Some(&a_addr),
        &mut procs,
        tx_b,
    );
    rx_b.recv_timeout(DEADLINE).expect("B started");
    let a = (na.as_str(), dirs[0].as_path());
    // Connected once B has A's first message.
    let idle: Vec<f64> = (0..5)
        .map(|i| stat_latency(a, &conv, &format!("idle {i}"), &rx_b))
        .collect();
    let file = root.path().join("scan.bin");
    std::fs::write(&file, noise(size, 9)).expect("write blob");
    let id = cli_in(
        &na,
        &dirs[0],
        &[
            "send",
            &conv.to_string(),
            "scan",
            "--attach",
            &file.display().to_string(),
        ],
    );
    let fetch_t = Instant::now();
    let bin = huddle_bin().display().to_string();
    let out = root.path().join("got");
    let v = in_ns(
        &nb,
        &[
            &bin,
            "--data-dir",
            &dirs[1].display().to_string(),
            "fetch",
            &id,
            "--out",
            &out.display().to_string(),
        ],
    );
    let mut fetch = std::process::Command::new(&v[0])
        .args(&v[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fetch");
    let mut during = Vec::new();
    let mut k = 0;
    while fetch.try_wait().expect("fetch state").is_none() {
        std::thread::sleep(Duration::from_millis(700));
        if fetch.try_wait().expect("fetch state").is_some() {
            break;
        }
        during.push(stat_latency(a, &conv, &format!("during {k}"), &rx_b));
        k += 1;
    }
    let fetched = fetch_t.elapsed().as_secs_f64();
    assert!(fetch.wait().expect("fetch").success(), "the fetch failed");
    let stats = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        (
            s.get(s.len() / 2).copied().unwrap_or(0.0),
            s.last().copied().unwrap_or(0.0),
        )
    };
    let (i50, imax) = stats(&idle);
    let (d50, dmax) = stats(&during);
    println!(
        "blobs: over a {rate} tbf link, a {mib} MiB attachment took {fetched:.1}s; STAT latency idle p50 {i50:.3}s max {imax:.3}s; during the transfer ({n} sent) p50 {d50:.3}s max {dmax:.3}s",
        mib = size >> 20,
        n = during.len()
    );
    result(json!({
        "part": "blobs_shaped", "rate": rate, "bytes": size, "fetch_seconds": fetched,
        "stat_idle_p50": i50, "stat_idle_max": imax, "stat_during_p50": d50,
        "stat_during_max": dmax, "stat_during_n": during.len(),
    }));
}
