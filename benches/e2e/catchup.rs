//! Workload 3, catch-up: a node that missed messages rejoins, through a
//! byte-counting proxy.

use super::*;

/// A TCP relay on 127.0.0.1 that counts the bytes in each direction.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    /// Client (the rejoining node) to target.
    pub(crate) up: Arc<AtomicU64>,
    pub(crate) down: Arc<AtomicU64>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn pipe(
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

pub(crate) async fn proxy(target: SocketAddr) -> Proxy {
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

pub(crate) fn tcp_port(a: &Multiaddr) -> u16 {
    a.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a tcp address")
}

pub(crate) fn via(a: &Multiaddr, port: u16) -> Multiaddr {
    a.iter()
        .map(|p| match p {
            Protocol::Tcp(_) => Protocol::Tcp(port),
            p => p,
        })
        .collect()
}

pub(crate) struct CatchUp {
    pub(crate) secs: f64,
    pub(crate) connected_secs: f64,
    pub(crate) bytes_to_b: u64,
    pub(crate) bytes_from_b: u64,
    pub(crate) settled_total: u64,
    pub(crate) missing_chunk_bytes: u64,
    pub(crate) missing_saved_bytes: u64,
    pub(crate) got: usize,
}

/// A and B share `conv_count` conversations; B goes offline; A writes
/// `msgs` messages over them; B starts again (from its own store) and dials
/// A through a counting proxy. Time from B's `start` until B holds every
/// message.
pub(crate) async fn catchup_once(team: &Team, msgs: usize, conv_count: usize) -> CatchUp {
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

pub(crate) async fn bench_catchup(o: &Opts) {
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
