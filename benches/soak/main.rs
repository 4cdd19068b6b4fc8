//! The crash soak (issue 19): SIGKILLs of a real `huddle run` (the victim,
//! V) at random moments while it answers sends through its API and takes
//! in its two peers' messages; after each, V is started again on the same
//! data directory and must come up and hold every message its API
//! confirmed. Method and figures: BENCHMARKS.md, "Session 12".
//!
//! Three devices of one team (V, P1, P2; set up with the CLI), each a
//! release `huddle run` on 127.0.0.1 with mDNS off; V dials P1 and P2 by
//! address. Two threads send to V's API and one to each peer's, all into a
//! group of the three (a new group every `--per-group` kills, so that no
//! conversation grows without bound over the soak).
//!
//! A kill comes either while V runs (after its API answered and the check
//! passed, 0 to `--max-life-ms` later) or during a start (0 to 300 ms
//! after the spawn: in the store's open or the node's start). After every
//! kill V is started again; every start that is not itself killed is
//! checked: V's API must answer within a minute (else "failed to open"),
//! every conversation must hold at least as many messages as V confirmed
//! in it, and the current group and every conversation V wrote to since the
//! last check are read id by id (every conversation, every 50 kills). At
//! the end every confirmed id is looked up, and V is given a minute to
//! hold every message P1 and P2 confirmed.
//!
//! Invariant: the bench exits non-zero if a start failed, V died other
//! than by SIGKILL, or any confirmed message was missing; every child is
//! killed on every way out; every wait has a deadline. The kill plan is
//! drawn from a seeded RNG (printed; `--seed N` replays the choices, not
//! the processes' timing).
//!
//! `cargo bench --bench soak` runs 1,000 kills; `-- --tiny` (or
//! `HUDDLE_SOAK_TINY=1`) runs 5; `--kills N`, `--max-life-ms N`,
//! `--per-group N` and `--peer-every-ms N` set sizes.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle::api::client::ApiClient;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

#[path = "../shared/body.rs"]
mod body;
mod check;
#[path = "../shared/child.rs"]
mod child;
mod postmortem;
mod team;
mod writers;

use child::{api_info_of, Run};
use team::{Team, START_WITHIN};
use writers::Shared;

/// Every so many kills, the check reads every conversation id by id (the
/// others in between are checked by count).
const FULL_CHECK_EVERY: usize = 50;
/// The longest a kill during a start waits after the spawn.
const MAX_START_KILL_MS: u64 = 300;

struct Opts {
    kills: usize,
    seed: u64,
    max_life_ms: u64,
    per_group: usize,
    peer_every: Duration,
}

impl Opts {
    fn parse() -> Result<Opts, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let tiny = args.iter().any(|a| a == "--tiny")
            || std::env::var("HUDDLE_SOAK_TINY").is_ok_and(|v| !v.is_empty() && v != "0");
        let value = |name: &str| -> Result<Option<u64>, String> {
            match args.iter().position(|a| a == name) {
                None => Ok(None),
                Some(i) => args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .map(Some)
                    .ok_or(format!("{name} takes a number")),
            }
        };
        let seed = match value("--seed")? {
            Some(s) => s,
            None => {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
                    ^ u64::from(std::process::id())
            }
        };
        Ok(Opts {
            kills: value("--kills")?.unwrap_or(if tiny { 5 } else { 1_000 }) as usize,
            seed,
            max_life_ms: value("--max-life-ms")?.unwrap_or(1_000),
            per_group: value("--per-group")?.unwrap_or(25).max(1) as usize,
            peer_every: Duration::from_millis(value("--peer-every-ms")?.unwrap_or(20)),
        })
    }
}

/// When one kill comes.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// This long after V's API answered and the check passed.
    Running(Duration),
    /// This long after the spawn, whether or not V is up by then.
    Starting(Duration),
}

fn plan(rng: &mut ChaCha8Rng, o: &Opts) -> Vec<Kill> {
    (0..o.kills)
        .map(|_| {
            if rng.next_u64().is_multiple_of(10) {
                Kill::Starting(Duration::from_millis(
                    rng.next_u64() % (MAX_START_KILL_MS + 1),
                ))
            } else {
                Kill::Running(Duration::from_millis(rng.next_u64() % (o.max_life_ms + 1)))
            }
        })
        .collect()
}

/// The figures, kept up to date so that a failure still reports them.
#[derive(Default)]
struct Tally {
    kills: usize,
    kills_starting: usize,
    checks: usize,
    failed_to_open: usize,
    died_alone: usize,
    missing: usize,
    groups: usize,
    slowest_start: Duration,
    /// Sends V's API confirmed, and how many of them V held at the end.
    v_confirmed: usize,
    v_found: usize,
    /// Sends P1's and P2's APIs confirmed, and how many of them V held.
    p_confirmed: usize,
    p_found: usize,
    v_failed: u64,
    p_failed: u64,
}

/// SIGKILLs V; an error if it had already ended by itself.
fn kill(v: &mut Run) -> Result<(), String> {
    if let Ok(Some(status)) = v.child.0.try_wait() {
        return Err(format!("V ended by itself ({status}) before its kill"));
    }
    v.child.0.kill().map_err(|e| format!("SIGKILL V: {e}"))?;
    let status = v.child.0.wait().map_err(|e| format!("reap V: {e}"))?;
    match status.signal() {
        Some(9) => Ok(()),
        _ => Err(format!("V ended with {status}, not by the SIGKILL")),
    }
}

/// V's log lines that say something went wrong (all its lives append to
/// one file), the last 20.
fn log_errors(root: &std::path::Path) -> String {
    let log = std::fs::read_to_string(root.join("v.log")).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("panic"))
        .collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Starts V until a start is not killed by the plan (from `plans[*k]` on,
/// each start the plan kills counts as a kill); V and its API once up.
fn start(
    dir: &std::path::Path,
    peers: &[String],
    log: &std::path::Path,
    plans: &[Kill],
    k: &mut usize,
    t: &mut Tally,
) -> Result<(Run, huddle::datadir::ApiInfo), String> {
    loop {
        let mut v = Run::spawn(dir, peers, log)?;
        let began = Instant::now();
        if let Some(&Kill::Starting(after)) = plans.get(*k) {
            // Fault injection, not synchronisation: the delay only moves
            // the kill to a random point of the start; nothing waits on it.
            std::thread::sleep(after);
            kill(&mut v).inspect_err(|_| t.failed_to_open += 1)?;
            t.kills += 1;
            t.kills_starting += 1;
            *k += 1;
            continue;
        }
        let api = api_info_of(dir, v.pid, START_WITHIN).map_err(|e| {
            t.failed_to_open += 1;
            format!("after kill {}: {e}", t.kills)
        })?;
        t.slowest_start = t.slowest_start.max(began.elapsed());
        return Ok((v, api));
    }
}

fn soak(o: &Opts, root: &std::path::Path, t: &mut Tally) -> Result<(), String> {
    let team = Team::create(root)?;
    let v_log = root.join("v.log");
    let peers = team.peer_addrs();
    let plans = plan(&mut ChaCha8Rng::seed_from_u64(o.seed), o);

    let mut k = 0;
    let (mut v, mut v_api) = start(&team.v_dir, &peers, &v_log, &plans, &mut k, t)?;
    let mut conv = team.new_group(&ApiClient::new(v_api.clone()), "soak 1")?;
    t.groups = 1;

    let shared = Arc::new(Shared::default());
    let mut threads = Vec::new();
    for w in 0..2 {
        let s = shared.clone();
        threads.push(std::thread::spawn(move || writers::v_writer(s, w)));
    }
    shared.publish(v_api.clone(), conv);
    for (i, p) in team.p.iter().enumerate() {
        let (s, api, every) = (shared.clone(), p.api.clone(), o.peer_every);
        threads.push(std::thread::spawn(move || {
            writers::p_writer(s, api, 2 + i, every)
        }));
    }

    let outcome = (|| -> Result<(), String> {
        while k < plans.len() {
            let Kill::Running(life) = plans[k] else {
                return Err("a start kill where V should be running".into());
            };
            // Fault injection, not synchronisation: the delay only moves
            // the kill to a random point of V's work; nothing waits on it.
            std::thread::sleep(life);
            kill(&mut v).inspect_err(|_| t.died_alone += 1)?;
            t.kills += 1;
            k += 1;
            if !shared.unpublish(START_WITHIN) {
                return Err("a send to the killed V did not end within a minute".into());
            }
            (v, v_api) = start(&team.v_dir, &peers, &v_log, &plans, &mut k, t)?;
            let api = ApiClient::new(v_api.clone());
            let (ledger, mut read) = {
                let mut s = shared.lock();
                (s.v_confirmed.clone(), std::mem::take(&mut s.v_dirty))
            };
            read.insert(conv);
            if t.kills.is_multiple_of(FULL_CHECK_EVERY) {
                read.extend(ledger.keys().copied());
            }
            let found = check::check(&api, &ledger, &read)?;
            t.checks += 1;
            if !found.problems.is_empty() {
                t.missing += found.problems.len();
                return Err(format!(
                    "after kill {} (seed {}): {}",
                    t.kills,
                    o.seed,
                    found.problems.join("; ")
                ));
            }
            if t.kills.is_multiple_of(FULL_CHECK_EVERY) || k == plans.len() {
                let s = shared.lock();
                println!(
                    "  {} kills ({} during a start), {} confirmed by V, {} by its peers, start at most {:.2}s",
                    t.kills,
                    t.kills_starting,
                    s.v_confirmed.values().map(Vec::len).sum::<usize>(),
                    s.p_confirmed.values().map(Vec::len).sum::<usize>(),
                    t.slowest_start.as_secs_f64()
                );
            }
            if k < plans.len() && t.kills / o.per_group >= t.groups {
                t.groups += 1;
                conv = team.new_group(&api, &format!("soak {}", t.groups))?;
            }
            shared.publish(v_api.clone(), conv);
        }
        Ok(())
    })();
    shared.stop();
    for th in threads {
        let _ = th.join();
    }
    let s = shared.lock();
    t.v_confirmed = s.v_confirmed.values().map(Vec::len).sum();
    t.p_confirmed = s.p_confirmed.values().map(Vec::len).sum();
    (t.v_failed, t.p_failed) = (s.v_failed, s.p_failed);
    if let Some(e) = &s.last_p_error {
        println!("  the peers' last failed send: {e}");
    }
    outcome?;
    // V is up after the last check (and took a few more sends since): look
    // up every confirmed id, and give its peers a minute to reach it.
    let api = ApiClient::new(v_api);
    (t.v_found, _) = check::count_found(&api, &s.v_confirmed)?;
    let converged = team::wait_for("V to hold every message of its peers", || {
        Ok(check::count_found(&api, &s.p_confirmed)?.0 == t.p_confirmed)
    });
    (t.p_found, _) = check::count_found(&api, &s.p_confirmed)?;
    converged
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--inspect") {
        let (Some(dir), Some(conv)) = (args.get(i + 1), args.get(i + 2)) else {
            eprintln!("soak: --inspect takes the kept data directory of V and a conversation id");
            return ExitCode::FAILURE;
        };
        return match postmortem::inspect(std::path::Path::new(dir), conv) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("soak: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let o = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "huddle crash soak: {} kills, seed {} (replay with --seed {}), max life {} ms, a new group every {} kills",
        o.kills, o.seed, o.seed, o.max_life_ms, o.per_group
    );
    let root = match tempfile::tempdir() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: tempdir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut t = Tally::default();
    let result = soak(&o, root.path(), &mut t);
    let wall = started.elapsed();
    if result.is_err() {
        // Keep the data directories for a post-mortem.
        let kept = root.keep();
        eprintln!("V's log, its warnings and errors:\n{}", log_errors(&kept));
        eprintln!(
            "the data directories are kept in {}; look inside V's store with `--inspect {}/v CONVERSATION`",
            kept.display(),
            kept.display()
        );
    }
    let per_min = t.kills as f64 / wall.as_secs_f64().max(1e-9) * 60.0;
    println!();
    println!("| figure | value |");
    println!("|---|---:|");
    for (what, v) in [
        ("SIGKILLs of V", t.kills.to_string()),
        ("… of them during a start", t.kills_starting.to_string()),
        ("restarts checked", t.checks.to_string()),
        ("messages V's API confirmed", t.v_confirmed.to_string()),
        ("… found in V after its restarts", t.v_found.to_string()),
        (
            "confirmed messages missing at a check",
            t.missing.to_string(),
        ),
        ("stores that failed to open", t.failed_to_open.to_string()),
        ("V ended other than by SIGKILL", t.died_alone.to_string()),
        (
            "messages P1's and P2's APIs confirmed",
            t.p_confirmed.to_string(),
        ),
        ("… found in V", t.p_found.to_string()),
        (
            "sends to V not confirmed (cut by a kill)",
            t.v_failed.to_string(),
        ),
        ("sends to P1/P2 not confirmed", t.p_failed.to_string()),
        ("groups", t.groups.to_string()),
        (
            "slowest start to API answering",
            format!("{:.2} s", t.slowest_start.as_secs_f64()),
        ),
        ("wall time", format!("{:.1} min", wall.as_secs_f64() / 60.0)),
        ("kills per minute", format!("{per_min:.1}")),
    ] {
        println!("| {what} | {v} |");
    }
    println!(
        "RESULT {}",
        json!({
            "bench": "soak", "seed": o.seed, "kills": t.kills,
            "kills_starting": t.kills_starting, "checks": t.checks,
            "v_confirmed": t.v_confirmed, "v_found": t.v_found, "missing": t.missing,
            "failed_to_open": t.failed_to_open, "died_alone": t.died_alone,
            "p_confirmed": t.p_confirmed, "p_found": t.p_found,
            "wall_s": wall.as_secs_f64(), "kills_per_min": per_min,
        })
    );
    let ok = result.is_ok() && t.v_found == t.v_confirmed && t.failed_to_open == 0;
    match result {
        Err(e) => eprintln!("soak FAILED (seed {}): {e}", o.seed),
        Ok(()) if !ok => eprintln!(
            "soak FAILED (seed {}): {} of {} confirmed messages found",
            o.seed, t.v_found, t.v_confirmed
        ),
        Ok(()) => println!("soak: passed"),
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
