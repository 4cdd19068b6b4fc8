//! Workload 2, durable ingest into one conversation and into many.

use super::*;

/// Messages per second one node (no peers) makes durable: `workers`
/// concurrent senders for `secs`, into `convs` conversations round-robin.
pub(crate) async fn throughput_once(
    team: &Team,
    convs: usize,
    workers: usize,
    secs: f64,
) -> (f64, usize) {
    throughput_once_with(team, convs, workers, secs, None).await
}

/// [`throughput_once`] on an encrypted store when given its keys.
pub(crate) async fn throughput_once_with(
    team: &Team,
    convs: usize,
    workers: usize,
    secs: f64,
    seal: Option<Arc<huddle::atrest::Keys>>,
) -> (f64, usize) {
    let root = tempfile::tempdir().expect("tempdir");
    let id = team.member(900, "solo");
    let node = start_inproc_with(&id, root.path(), vec![], seal).await;
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

pub(crate) async fn bench_throughput(o: &Opts) {
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
