//! Workload 5, cold start: `huddle run` on a store of many messages.

use super::*;

pub(crate) fn bench_cold(o: &Opts) {
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
