//! Issue 18's acceptance on memory, against a real `huddle run`: strangers
//! that claim 1 MiB frames and stall (hole 3), a member's decompression
//! bomb (hole 2), a member's blobs in the team document (hole 5), and
//! members filling its mailbox past its quota (issue 25, `mail.rs`). For
//! each phase (before, each attack at its peak, after) it reports the
//! node's RSS and VmHWM (`/proc`) and every `resources` figure of `GET
//! /v1/status` — what the node counts it holds for remote devices. Method
//! and results: BENCHMARKS.md, "Session 11".
//!
//! Invariant: the bench fails (exits non-zero) unless, after every attack,
//! the node holds no session, reader or writer task, frame buffer,
//! reassembly buffer or pending handshake within [`SETTLE`]; refused each
//! member attack; held no more envelopes than its mailbox's bounds; stayed
//! up; and kept storing the messages its own member
//! sends through the API. Only 127.0.0.0/8 is used, every loop is bounded,
//! and the child process is killed on every way out.
//!
//! `cargo bench --bench attack` runs the full sizes (5 waves of 90
//! strangers, 10 bombs of 1 GiB, six 8 MiB blobs); `-- --tiny` (or
//! `HUDDLE_ATTACK_TINY=1`) runs 1 wave of 10, one 128 MiB bomb, six
//! 256 KiB blobs and one member of each mailbox phase, in under a minute
//! (CI). The full mailbox phases offer 5 × 8 MiB of 64 KiB envelopes and
//! 3 × 4,096 small ones. `--waves N`, `--strangers N`, `--bombs N`,
//! `--bomb-mib N`, `--blob-kib N`, `--mail-large N` and `--mail-small N`
//! set sizes.

use std::process::ExitCode;
use std::time::Duration;

use libp2p::Multiaddr;
use serde_json::json;

#[path = "../shared/child.rs"]
mod child;
mod mail;
mod member;
mod node;
mod peer;
mod stranger;

use node::{settle, Node, Sample, Sampler};

/// How long the node may take to let go of everything an attack made it
/// hold (the hello timeout is 10 s).
const SETTLE: Duration = Duration::from_secs(60);

struct Opts {
    tiny: bool,
    waves: usize,
    strangers: usize,
    bombs: usize,
    bomb_mib: usize,
    blobs: usize,
    blob_kib: usize,
    /// Members handing over large envelopes, and small ones.
    mail_large: usize,
    mail_small: usize,
}

impl Opts {
    fn parse() -> Opts {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let tiny = args.iter().any(|a| a == "--tiny")
            || std::env::var("HUDDLE_ATTACK_TINY").is_ok_and(|v| !v.is_empty() && v != "0");
        let value = |name: &str, default: usize| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let pick = |full: usize, small: usize| if tiny { small } else { full };
        Opts {
            tiny,
            waves: value("--waves", pick(5, 1)),
            strangers: value("--strangers", pick(90, 10)),
            bombs: value("--bombs", pick(10, 1)),
            bomb_mib: value("--bomb-mib", pick(1024, 128)),
            blobs: 6,
            blob_kib: value("--blob-kib", pick(8 << 10, 256)),
            mail_large: value("--mail-large", pick(5, 1)),
            mail_small: value("--mail-small", pick(3, 1)),
        }
    }
}

/// One line of the table.
struct Row {
    phase: String,
    s: Sample,
    note: String,
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| phase | VmRSS MB | VmHWM MB | sessions | reader_tasks | writer_tasks | frame_buffer_bytes | pending_incoming | suppressed_log_lines | reassembly_bytes | contained_panics | notes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let x = &r.s.r;
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.phase,
            r.s.rss_kb as f64 / 1024.0,
            r.s.hwm_kb as f64 / 1024.0,
            x.sessions,
            x.reader_tasks,
            x.writer_tasks,
            x.frame_buffer_bytes,
            x.pending_incoming,
            x.suppressed_log_lines,
            x.reassembly_bytes,
            x.contained_panics,
            r.note
        );
        println!(
            "RESULT {}",
            json!({
                "bench": "attack", "phase": r.phase,
                "rss_mb": r.s.rss_kb as f64 / 1024.0, "vmhwm_mb": r.s.hwm_kb as f64 / 1024.0,
                "resources": serde_json::to_value(x).unwrap_or_default(),
            })
        );
    }
}

/// After an attack: the node is up, lets go of everything within
/// [`SETTLE`], and still stores its member's messages.
fn after(
    node: &mut Node,
    api: &huddle::api::client::ApiClient,
    what: &str,
) -> Result<Sample, String> {
    let (s, settled, took) = settle(api, node.pid, SETTLE);
    if !node.alive() {
        return Err(format!("the node died during {what}"));
    }
    if !settled {
        return Err(format!(
            "after {what} the node still holds {:?} after {SETTLE:?}",
            s.r
        ));
    }
    node.serve_honest(api)
        .map_err(|e| format!("after {what}: honest use failed: {e}"))?;
    println!(
        "  {what}: released within {:.1}s (RSS {:.1} MB); a message sent through the API was stored",
        took.as_secs_f64(),
        s.rss_kb as f64 / 1024.0
    );
    Ok(s)
}

fn run(o: &Opts) -> Result<Vec<Row>, String> {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut node = Node::start(&root.path().join("ana"))?;
    let api = node.api(Duration::from_secs(30))?;
    let to: Multiaddr = node.addr.parse().map_err(|e| format!("{e}"))?;
    println!("node pid {} at {}", node.pid, node.addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let before = after(&mut node, &api, "start")?;
    rows.push(Row {
        phase: "before".into(),
        s: before,
        note: String::new(),
    });

    // Hole 3: waves of stalling strangers.
    let mut peak = Sample::default();
    let mut after_s = Sample::default();
    let mut cut = 0;
    let mut timeouts = 0;
    for w in 0..o.waves {
        let sampler = Sampler::start(node.api(SETTLE)?, node.pid);
        let wave = rt.block_on(stranger::wave(&to, o.strangers));
        let (p, n) = sampler.finish();
        println!(
            "strangers wave {}: {} stalled, {} cut ({} on the hello timeout) in {:.1}s; peak frame buffers {} B, sessions {} ({} samples)",
            w + 1, wave.stalled, wave.cut, wave.hello_timeouts, wave.secs,
            p.r.frame_buffer_bytes, p.r.sessions, n
        );
        if let Some(e) = wave.errors.first() {
            return Err(format!(
                "wave {}: {} strangers failed, first: {e}",
                w + 1,
                wave.errors.len()
            ));
        }
        peak = peak.max(p);
        cut += wave.cut;
        timeouts += wave.hello_timeouts;
        after_s = after(&mut node, &api, &format!("strangers wave {}", w + 1))?;
    }
    rows.push(Row {
        phase: format!(
            "strangers ({}×{}, {} B each): peak",
            o.waves,
            o.strangers,
            stranger::SENT
        ),
        s: peak,
        note: format!("{cut} cut, {timeouts} with reason HelloTimeout"),
    });
    rows.push(Row {
        phase: "strangers: after".into(),
        s: after_s,
        note: String::new(),
    });

    // Hole 2: a member's decompression bomb, repeated.
    let team = node.status.team.ok_or("the node has no team")?;
    let team_name = node.status.team_name.clone().unwrap_or_default();
    let t = std::time::Instant::now();
    let bomb = member::bomb(o.bomb_mib);
    println!(
        "bomb: {} B on the wire inflating to {} MiB (built in {:.1}s)",
        bomb.len(),
        o.bomb_mib,
        t.elapsed().as_secs_f64()
    );
    let probe = node::Probe::new(node.api(SETTLE)?, node.pid);
    let mut peak = Sample::default();
    let mut reasons = Vec::new();
    for i in 0..o.bombs {
        let m = member::Member::admit(&node.authority, &team_name, 100 + i as u64);
        let sampler = Sampler::start(node.api(SETTLE)?, node.pid);
        let out = rt.block_on(member::attack(&to, m, &bomb, &probe));
        let (p, _) = sampler.finish();
        let out = out.map_err(|e| format!("bomb {}: {e}", i + 1))?;
        println!(
            "bomb {}: {} frames, refused: {:?} ({:.2}s)",
            i + 1,
            out.frames,
            out.reason,
            out.secs
        );
        let Some(reason) = out.reason else {
            return Err(format!("bomb {}: cut without a refusal", i + 1));
        };
        reasons.push(reason.to_string());
        peak = peak.max(p).max(out.during);
        after_s = after(&mut node, &api, &format!("bomb {}", i + 1))?;
    }
    reasons.dedup();
    rows.push(Row {
        phase: format!(
            "bombs ({}× {} MiB, {} B sent): peak",
            o.bombs,
            o.bomb_mib,
            bomb.len()
        ),
        s: peak,
        note: format!("refused: {}", reasons.join(", ")),
    });
    rows.push(Row {
        phase: "bombs: after".into(),
        s: after_s,
        note: String::new(),
    });

    // Hole 5: a member's blobs in the team document.
    let msg = member::blobs(team, o.blobs, o.blob_kib << 10);
    let m = member::Member::admit(&node.authority, &team_name, 200);
    let sampler = Sampler::start(node.api(SETTLE)?, node.pid);
    let out = rt.block_on(member::attack(&to, m, &msg, &probe));
    let (p, _) = sampler.finish();
    let out = out.map_err(|e| format!("blobs: {e}"))?;
    println!(
        "blobs: {} B in {} frames, refused: {:?} ({:.2}s)",
        out.bytes, out.frames, out.reason, out.secs
    );
    let Some(reason) = out.reason else {
        return Err("blobs: cut without a refusal".into());
    };
    after_s = after(&mut node, &api, "blobs")?;
    rows.push(Row {
        phase: format!(
            "blobs ({}× {} KiB, {} B in {} frames): peak",
            o.blobs, o.blob_kib, out.bytes, out.frames
        ),
        s: p.max(out.during),
        note: format!("refused: {reason}"),
    });
    rows.push(Row {
        phase: "blobs: after".into(),
        s: after_s,
        note: String::new(),
    });
    mailbox(o, &mut node, &api, &rt, &mut rows)?;
    Ok(rows)
}

/// Bytes of every file under `dir` (the node's store on disk).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The mailbox at its quota (issue 25): large envelopes past the byte
/// bound, then small ones past the count bound. In full size the node must
/// end each phase at its bound, having dropped or refused the rest.
fn mailbox(
    o: &Opts,
    node: &mut Node,
    api: &huddle::api::client::ApiClient,
    rt: &tokio::runtime::Runtime,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let to: Multiaddr = node.addr.parse().map_err(|e| format!("{e}"))?;
    let team_name = node.status.team_name.clone().unwrap_or_default();
    let probe = node::Probe::new(node.api(SETTLE)?, node.pid);
    let disk_before = dir_bytes(&node.dir);
    let phases = [
        (
            "large",
            300,
            mail::Fill {
                members: o.mail_large,
                per_member: 128,
                body_len: 64 << 10,
            },
        ),
        (
            "small",
            400,
            mail::Fill {
                members: o.mail_small,
                per_member: 4096,
                body_len: 16,
            },
        ),
    ];
    let mut already = node::sample(api, node.pid).map(|s| mail::accounted(&s))?;
    for (name, seed, fill) in phases {
        let authority = &node.authority;
        let admit = |seed| member::Member::admit(authority, &team_name, seed);
        let sampler = Sampler::start(node.api(SETTLE)?, node.pid);
        let out = rt.block_on(mail::fill(&to, admit, seed, &fill, &probe, already));
        let (p, _) = sampler.finish();
        let out = out.map_err(|e| format!("mailbox, {name} envelopes: {e}"))?;
        already += out.offered;
        let r = &out.at.r;
        let disk = dir_bytes(&node.dir);
        println!(
            "mailbox, {name} envelopes: {} offered ({} B) by {} devices in {:.1}s; held {} ({} B), dropped routine {}, not taken {}; store on disk {} B (was {disk_before} B)",
            out.offered, out.offered_bytes, fill.members, out.secs,
            r.mailbox_envelopes, r.mailbox_bytes, r.mailbox_dropped[0], r.mailbox_dropped[3], disk
        );
        if r.mailbox_envelopes > 8192 || r.mailbox_bytes > 32 << 20 {
            return Err(format!(
                "mailbox, {name} envelopes: past its bounds ({} envelopes, {} B)",
                r.mailbox_envelopes, r.mailbox_bytes
            ));
        }
        if !o.tiny && r.mailbox_dropped.iter().sum::<u64>() == 0 {
            return Err(format!(
                "mailbox, {name} envelopes: more than the quota offered, nothing dropped"
            ));
        }
        let after_s = after(node, api, &format!("mailbox, {name} envelopes"))?;
        rows.push(Row {
            phase: format!(
                "mailbox, {} × {} envelopes of {} B: at the end",
                fill.members,
                fill.per_member,
                out.offered_bytes / out.offered.max(1)
            ),
            s: p.max(out.at),
            note: format!(
                "held {} ({:.1} MiB), store {:.1} MiB on disk",
                r.mailbox_envelopes,
                r.mailbox_bytes as f64 / (1 << 20) as f64,
                disk as f64 / (1 << 20) as f64
            ),
        });
        rows.push(Row {
            phase: format!("mailbox, {name}: after"),
            s: after_s,
            note: String::new(),
        });
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = Opts::parse();
    println!(
        "huddle attack bench ({}; machine: {} cores)",
        if o.tiny { "tiny" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let t = std::time::Instant::now();
    // The node is stopped inside `run`, before the exit code is returned.
    match run(&o) {
        Ok(rows) => {
            print_table(&rows);
            println!("attack bench passed in {:.1}s", t.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("attack bench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
