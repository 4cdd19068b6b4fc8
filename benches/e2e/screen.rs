//! The screen (issue 21): two `huddle run` processes holding one
//! conversation of N messages, Ana's and Ben's pages in headless Chromium
//! (`tests/browser/bench.mjs`, playwright-core). Measures opening a sign-in
//! URL → an interactive conversation list, clicking the conversation → its
//! newest page painted, and send in Ana's page → painted in Ben's page.
//! Needs /usr/bin/chromium and Node.js: skipped with a line without them,
//! except under `CI=true`.

use super::*;

fn browser_ready() -> Result<PathBuf, String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("no browser at {chromium}"));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let ok = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("npm ci in tests/browser failed".into());
        }
    }
    Ok(dir)
}

fn stats(name: &str, v: &[f64]) -> serde_json::Value {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (pct(&s, 0.5), pct(&s, 0.99));
    println!(
        "  {name}: n={} median {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        s.len(),
        s.last().copied().unwrap_or(f64::NAN)
    );
    json!({ "n": s.len(), "median_ms": p50, "p99_ms": p99, "max_ms": s.last() })
}

pub(crate) fn bench_screen(o: &Opts) {
    let dir = match browser_ready() {
        Ok(d) => d,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the screen benchmark needs its browser under CI: {why}")
        }
        Err(why) => {
            println!("screen: SKIPPED ({why}; apt install chromium nodejs npm)");
            return;
        }
    };
    let team = Team::new(21);
    for &n in &o.screen {
        let root = tempfile::tempdir().expect("tempdir");
        let (a_dir, b_dir) = (root.path().join("ana"), root.path().join("ben"));
        let ana = team.member(2100, "Ana Silva");
        let ben = team.member(2101, "Ben Okafor");
        write_datadir(&a_dir, &ana);
        write_datadir(&b_dir, &ben);
        let t = Instant::now();
        let mut g = Gen::open(&ana, &a_dir);
        let conv = g.group(0, &[ana.member, ben.member]);
        g.messages(&[conv], n, 0);
        g.close();
        println!(
            "screen, {n} messages: generated in {:.1}s",
            t.elapsed().as_secs_f64()
        );

        let mut procs = Procs::default();
        let a_addr = spawn_run(&a_dir, &[], &mut procs);
        api_of(&a_dir, procs.children[0].id(), DEADLINE).expect("Ana's API");
        spawn_run(&b_dir, &[a_addr], &mut procs);
        let b_api = api_of(&b_dir, procs.children[1].id(), DEADLINE).expect("Ben's API");
        let deadline = Instant::now() + DEADLINE;
        while !b_api
            .chats()
            .is_ok_and(|cs| cs.iter().any(|c| c.id == conv && c.messages == n))
        {
            assert!(
                Instant::now() < deadline,
                "Ben's node never held the {n} messages"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let info = |d: &Path| {
            DataDir::new(d)
                .api_info()
                .expect("api.json")
                .expect("a running node")
        };
        let (ai, bi) = (info(&a_dir), info(&b_dir));
        let out = std::process::Command::new("node")
            .arg(dir.join("bench.mjs"))
            .env("ANA_API", &ai.url)
            .env("ANA_TOKEN", &ai.token)
            .env("BEN_API", &bi.url)
            .env("BEN_TOKEN", &bi.token)
            .env("SENDS", o.screen_sends.to_string())
            .env("OPENS", o.screen_opens.to_string())
            .output()
            .expect("node runs");
        procs.stop_all();
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find_map(|l| l.strip_prefix("SCREEN ")) else {
            panic!(
                "the screen benchmark failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
        let samples = |k: &str| -> Vec<f64> {
            v[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_f64())
                .collect()
        };
        println!("screen, {n} messages in the open conversation:");
        let open = stats("open URL → interactive list", &samples("open"));
        let conversation = stats("click → conversation painted", &samples("conversation"));
        let render = stats("send in Ana's page → painted in Ben's", &samples("render"));
        let node = stats(
            "  of which: send in Ana's page → event from Ben's node",
            &samples("node"),
        );
        let met = render["p99_ms"].as_f64().is_some_and(|p| p <= 100.0)
            && open["median_ms"].as_f64().is_some_and(|m| m <= 300.0);
        result(json!({
            "impl": "huddle", "bench": "screen", "messages": n,
            "open": open, "conversation": conversation, "render": render, "node": node,
            "target_render_p99_ms": 100, "target_open_ms": 300, "met": met,
        }));
    }
}
