//! Workload 1, latency: from `send` returning on one node to the message
//! being rendered on every other.

use super::*;

pub(crate) struct LatencyRun {
    pub(crate) samples: Vec<f64>,
    /// Samples not taken: the message had not arrived, or its event was
    /// dropped by the bounded event channel (`lagged`).
    pub(crate) missing: usize,
    /// Messages absent from a node's document when the run ended.
    pub(crate) lost: usize,
    pub(crate) achieved_rate: f64,
    pub(crate) send_p50: f64,
    pub(crate) send_p99: f64,
    pub(crate) lagged: u64,
}

/// Sends `count` messages at `rate` per second (open loop: each send starts
/// at its scheduled time whether or not earlier ones returned), round-robin
/// over the nodes as senders, into one group conversation of all nodes.
/// Latency: from the send command returning on the author's node to the
/// `MessageAdded` event on each other node.
pub(crate) async fn latency_once(
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

pub(crate) async fn bench_latency(o: &Opts) {
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
