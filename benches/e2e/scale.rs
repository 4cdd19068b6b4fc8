//! Workload 4, scale: 20 `huddle run` processes in a full mesh.

use super::*;

pub(crate) fn bench_scale(o: &Opts) {
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
                        ack_by: None,
                        reminder: None,
                        attachments: Vec::new(),
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
