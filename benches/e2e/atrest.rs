//! Encryption at rest beside the plain store, in one run (issue 24): the
//! unlock alone (Argon2id at the default cost, as `huddle run` pays once
//! at start); durable ingest into one conversation by 64 senders, plain
//! and encrypted runs alternating; and cold start of `huddle run` on a
//! store of `--cold` messages, plain and an encrypted copy of it,
//! alternating. The encrypted copy is made the way `huddle passphrase set`
//! makes one (its store rewritten into a new database, `store/upgrade_sealed.rs`),
//! and that rewrite is timed too. Its key file is wrapped at Argon2's
//! cheapest cost so that the cold start measures the store, not the
//! unlock, which is reported apart. A rewrite also compacts sled's log
//! (the generated store carries every value it overwrote), so the
//! like-for-like plain store is the generated one rewritten the same way,
//! unencrypted; the store as generated is timed too. A rewrite also compacts sled's log
//! (the generated plain store carries every overwritten value), so the
//! like-for-like plain store is the generated one rewritten the same way,
//! unencrypted; the store as generated is timed too.

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
    let id = team.member(5000, "cold");
    let pass = root.path().join("passphrase");
    std::fs::write(&pass, PASSPHRASE).expect("passphrase file");
    // The same messages written by the node into a plain store and into
    // an encrypted one (its key wrapped at Argon2's cheapest cost).
    let generate = |dir: &Path, encrypted: bool| {
        write_datadir(dir, &id);
        let keys = encrypted.then(|| {
            let key = DataKey::generate();
            let wrapped = wrap::wrap(&key, PASSPHRASE.as_bytes(), Params::FAST_FOR_TESTS);
            std::fs::write(dir.join(WRAP_FILE), wrapped.expect("wrap")).expect("key.wrap");
            Arc::new(key.keys())
        });
        let t = Instant::now();
        let mut g = Gen::open_with(&id, dir, keys);
        let cs: Vec<ConversationId> = (0..convs).map(|i| g.group(i, &[id.member])).collect();
        g.messages(&cs, msgs, 0);
        g.close();
        if encrypted {
            // Seals the identity's files.
            let d = DataDir::with_passphrase(dir, Passphrase::File(pass.clone()));
            d.keys().expect("unlock");
        }
        t.elapsed().as_secs_f64()
    };
    let plain = root.path().join("plain");
    let sealed = root.path().join("sealed");
    let (gp, gs) = (generate(&plain, false), generate(&sealed, true));

    // Each rewritten into a new database: the plain one pair by pair, the
    // encrypted one as `passphrase set` makes it from the plain one.
    let rewritten = root.path().join("rewritten");
    copy_dir(&plain, &rewritten);
    let t = Instant::now();
    rewrite_plain(&rewritten.join("db"));
    let rewrite = t.elapsed().as_secs_f64();
    let upgraded = root.path().join("upgraded");
    copy_dir(&plain, &upgraded);
    let wrapped = wrap::wrap(
        &DataKey::generate(),
        PASSPHRASE.as_bytes(),
        Params::FAST_FOR_TESTS,
    );
    std::fs::write(upgraded.join(WRAP_FILE), wrapped.expect("wrap")).expect("key.wrap");
    let t = Instant::now();
    let d = DataDir::with_passphrase(&upgraded, Passphrase::File(pass.clone()));
    drop(d.open_store().expect("unlock").expect("upgrade the store"));
    let upgrade = t.elapsed().as_secs_f64();

    let stores = [
        ("plain, as written", &plain, "db"),
        ("encrypted, as written", &sealed, "sealed"),
        ("plain, rewritten", &rewritten, "db"),
        ("encrypted, upgraded", &upgraded, "sealed"),
    ];
    let mb: Vec<f64> = stores
        .iter()
        .map(|(_, d, db)| dir_size(&d.join(db)) as f64 / 1e6)
        .collect();
    println!(
        "{msgs} msgs: written in {gp:.1}s plain, {gs:.1}s encrypted; rewritten in {rewrite:.1}s, upgraded in {upgrade:.1}s; stores {mb:.1?} MB"
    );

    let mut secs: [Vec<f64>; 4] = Default::default();
    for run in 0..o.runs {
        for (kind, (name, dir, _)) in stores.iter().enumerate() {
            let mut procs = Procs::default();
            let env: Vec<(&str, &Path)> = if kind % 2 == 1 {
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
            assert!(ok, "the node on the {name} store lists every message");
            println!("cold start {msgs} msgs / {convs} convs, {name} run={run}: API answered after {s:.3}s");
            secs[kind].push(s);
        }
    }
    let m = secs.each_ref().map(|v| median(&mut v.clone()));
    result(json!({
        "impl": "huddle", "bench": "atrest_cold", "messages": msgs, "conversations": convs,
        "runs": o.runs,
        "written_plain_secs": m[0], "written_plain_spread": spread(&secs[0]),
        "written_encrypted_secs": m[1], "written_encrypted_spread": spread(&secs[1]),
        "rewritten_plain_secs": m[2], "rewritten_plain_spread": spread(&secs[2]),
        "upgraded_encrypted_secs": m[3], "upgraded_encrypted_spread": spread(&secs[3]),
        "written_ratio": m[1] / m[0], "rewritten_ratio": m[3] / m[2],
        "store_mb": mb, "generate_secs": [gp, gs], "rewrite_secs": rewrite, "upgrade_secs": upgrade,
        "target": "within 10%", "met_as_written": m[1] <= 1.1 * m[0], "met_rewritten": m[3] <= 1.1 * m[2],
    }));
}

/// Rewrites the plain sled database `db` pair by pair into a new one that
/// replaces it: what the upgrade does, without sealing.
fn rewrite_plain(db: &Path) {
    let fresh = db.with_extension("new");
    {
        let from = sled::open(db).expect("open the plain store");
        let to = sled::open(&fresh).expect("open a new store");
        for pair in from.iter() {
            let (k, v) = pair.expect("read");
            to.insert(k, v).expect("write");
        }
        to.flush().expect("flush");
    }
    std::fs::remove_dir_all(db).expect("remove the old store");
    std::fs::rename(&fresh, db).expect("rename");
}
