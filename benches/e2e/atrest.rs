//! Encryption at rest beside the plain store, in one run (issue 24): the
//! unlock alone (Argon2id at the default cost, as `huddle run` pays once
//! at start); durable ingest into one conversation by 64 senders, plain
//! and encrypted runs alternating; and cold start of `huddle run` on a
//! store of `--cold` messages, plain and an encrypted copy of it,
//! alternating. The encrypted copy is made the way `huddle passphrase set`
//! makes one (its store rewritten into a new database, `store/upgrade_sealed.rs`),
//! and that rewrite is timed too. Its key file is wrapped at Argon2's
//! cheapest cost so that the cold start measures the store, not the
//! unlock, which is reported apart.

use super::*;
use huddle::atrest::wrap::{self, Params};
use huddle::atrest::{DataKey, WRAP_FILE};
use huddle::datadir::Passphrase;

const PASSPHRASE: &str = "a long bench passphrase";

pub(crate) async fn bench_atrest(o: &Opts) {
    bench_unlock(o);
    bench_ingest(o).await;
    for &(msgs, convs) in &o.cold {
        bench_cold_sealed(o, msgs, convs);
    }
}

fn bench_unlock(o: &Opts) {
    let key = DataKey::generate();
    let wrapped = wrap::wrap(&key, PASSPHRASE.as_bytes(), Params::DEFAULT).expect("wrap");
    let mut secs = Vec::new();
    for _ in 0..o.runs.max(3) {
        let t = Instant::now();
        wrap::unwrap(&wrapped, PASSPHRASE.as_bytes()).expect("unwrap");
        secs.push(t.elapsed().as_secs_f64());
    }
    println!("unlock (Argon2id 64 MiB, 3 passes, 1 lane): {secs:.3?} s");
    result(json!({
        "impl": "huddle", "bench": "unlock", "params": "argon2id m=65536 t=3 p=1",
        "runs": secs.len(), "secs": median(&mut secs.clone()), "spread": spread(&secs),
    }));
}

async fn bench_ingest(o: &Opts) {
    let team = Team::new(2);
    let secs = if o.tiny { 1.0 } else { 10.0 };
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    for run in 0..o.runs {
        for encrypted in [false, true] {
            let keys = encrypted.then(|| Arc::new(DataKey::generate().keys()));
            let (r, n) = throughput_once_with(&team, 1, 64, secs, keys).await;
            println!("ingest 1 conversation, 64 senders, encrypted={encrypted} run={run}: {r:.0} msg/s ({n} in {secs}s)");
            if encrypted {
                sealed.push(r)
            } else {
                plain.push(r)
            }
        }
    }
    let (p, s) = (median(&mut plain.clone()), median(&mut sealed.clone()));
    result(json!({
        "impl": "huddle", "bench": "atrest_ingest", "conversations": 1, "concurrent": 64,
        "runs": o.runs, "plain_msgs_per_s": p, "plain_spread": spread(&plain),
        "encrypted_msgs_per_s": s, "encrypted_spread": spread(&sealed),
        "encrypted_vs_plain": s / p, "target": "within 10%", "met": s >= 0.9 * p,
    }));
}

fn bench_cold_sealed(o: &Opts, msgs: usize, convs: usize) {
    let team = Team::new(5);
    let root = tempfile::tempdir().expect("tempdir");
    let plain = root.path().join("plain");
    let id = team.member(5000, "cold");
    write_datadir(&plain, &id);
    let mut g = Gen::open(&id, &plain);
    let cs: Vec<ConversationId> = (0..convs).map(|i| g.group(i, &[id.member])).collect();
    g.messages(&cs, msgs, 0);
    g.close();

    // The encrypted copy, made as `passphrase set` makes it.
    let sealed = root.path().join("sealed");
    copy_dir(&plain, &sealed);
    let pass = root.path().join("passphrase");
    std::fs::write(&pass, PASSPHRASE).expect("passphrase file");
    let wrapped = wrap::wrap(
        &DataKey::generate(),
        PASSPHRASE.as_bytes(),
        Params::FAST_FOR_TESTS,
    );
    // (A new key: `unwrap` below reads it back from the file.)
    std::fs::write(sealed.join(WRAP_FILE), wrapped.expect("wrap")).expect("key.wrap");
    let t = Instant::now();
    let d = DataDir::with_passphrase(&sealed, Passphrase::File(pass.clone()));
    drop(d.open_store().expect("unlock").expect("upgrade the store"));
    let upgrade = t.elapsed().as_secs_f64();
    let (pd, sd) = (
        dir_size(&plain.join("db")),
        dir_size(&sealed.join("sealed")),
    );
    println!("{msgs} msgs: encrypted copy made in {upgrade:.1}s; store {:.1} MB plain, {:.1} MB encrypted", pd as f64 / 1e6, sd as f64 / 1e6);

    let (mut plain_secs, mut sealed_secs) = (Vec::new(), Vec::new());
    for run in 0..o.runs {
        for (dir, encrypted) in [(&plain, false), (&sealed, true)] {
            let mut procs = Procs::default();
            let env: Vec<(&str, &Path)> = if encrypted {
                vec![("HUDDLE_PASSPHRASE_FILE", pass.as_path())]
            } else {
                vec![]
            };
            let t0 = Instant::now();
            let _ = spawn_run_env(dir, &[], &env, &mut procs);
            let pid = procs.children[0].id();
            let api = api_of(dir, pid, DEADLINE);
            let s = t0.elapsed().as_secs_f64();
            let ok = api.is_some_and(|c| {
                c.chats()
                    .map(|cs| cs.iter().map(|c| c.messages).sum::<usize>() == msgs)
                    .unwrap_or(false)
            });
            procs.stop_all();
            assert!(
                ok,
                "the node on the {} store lists every message",
                if encrypted { "encrypted" } else { "plain" }
            );
            println!("cold start {msgs} msgs / {convs} convs, encrypted={encrypted} run={run}: API answered after {s:.3}s");
            if encrypted {
                sealed_secs.push(s)
            } else {
                plain_secs.push(s)
            }
        }
    }
    let (p, s) = (
        median(&mut plain_secs.clone()),
        median(&mut sealed_secs.clone()),
    );
    result(json!({
        "impl": "huddle", "bench": "atrest_cold", "messages": msgs, "conversations": convs,
        "runs": o.runs, "plain_secs": p, "plain_spread": spread(&plain_secs),
        "encrypted_secs": s, "encrypted_spread": spread(&sealed_secs),
        "encrypted_vs_plain": s / p, "upgrade_secs": upgrade,
        "plain_store_mb": pd as f64 / 1e6, "encrypted_store_mb": sd as f64 / 1e6,
        "target": "within 10%", "met": s <= 1.1 * p,
    }));
}
