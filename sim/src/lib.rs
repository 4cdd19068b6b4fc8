//! huddle-sim: a deterministic discrete-event simulator that drives many
//! huddle cores (the very `Node` the shell runs) over a seeded network that
//! delays, loses, duplicates, partitions and crashes, and checks the
//! invariants of DESIGN.md after every scenario. See sim/README.md.
//!
//! Crate map:
//! - [`scenario`]: the TOML scenario schema and the built-in scenarios;
//!   [`dur`]: durations as they are written there.
//! - [`world`]: the event loop; [`carry`]: carrying out node outputs;
//!   [`queue`] the event queue; [`device`] one device (store + node).
//! - [`net`]: connections with session ids, latency, bandwidth, loss;
//!   [`topo`]: discovery, dialing, partitions, links, the final heal.
//! - [`actions`]: workload, scripted events, random faults;
//!   [`forger`]: the malicious member.
//! - [`check`]: the invariants; [`leak`]: message bodies searched for in
//!   frames and stores; [`watch`]: time to converge;
//!   [`acct`]: bytes and changes on the wire; [`metrics`]: per-run figures
//!   and the sweep table; [`trace`]: digest and recent events.
//! - [`sweep`]: many seeds under a wall-clock budget.
//!
//! Architecture invariant: nothing in a run reads a clock, spawns a thread
//! or touches the OS's randomness; the same scenario and seed give the same
//! run, byte for byte (the trace digest proves it).

pub mod acct;
pub mod actions;
pub mod carry;
pub mod check;
pub mod clinical;
pub mod clinical_work;
pub mod device;
pub mod dur;
pub mod forger;
pub mod leak;
pub mod metrics;
pub mod net;
pub mod queue;
pub mod scenario;
pub mod sweep;
pub mod topo;
pub mod trace;
pub mod watch;
pub mod world;

use std::fmt::Write as _;

pub use check::{Invariant, Violation};
pub use metrics::Metrics;
pub use scenario::Scenario;
pub use world::{Options, Tamper};

/// What one run produced.
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub violation: Option<Violation>,
    pub metrics: Metrics,
    /// SHA-256 over every traced event and every delivered frame.
    pub digest: [u8; 32],
    /// Recent events involving the devices a violation names.
    pub trace_tail: String,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }

    pub fn digest_hex(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The failure report: seed, invariant, trace, and how to replay.
    pub fn failure_report(&self, replay: &str) -> String {
        let Some(v) = &self.violation else {
            return String::new();
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "FAILED: scenario {} seed {}: invariant `{}` violated at {}",
            self.scenario,
            self.seed,
            v.invariant,
            trace::fmt_time(v.at)
        );
        let _ = writeln!(s, "  {}", v.detail);
        let devs: Vec<String> = v.devices.iter().map(|d| format!("d{d}")).collect();
        let _ = writeln!(
            s,
            "last events{}:",
            if devs.is_empty() {
                String::new()
            } else {
                format!(" involving {}", devs.join(", "))
            }
        );
        s.push_str(&self.trace_tail);
        let _ = writeln!(s, "replay: {replay}");
        s
    }
}

/// The command that replays one run.
pub fn replay_command(scenario: &str, seed: u64) -> String {
    replay_command_scaled(scenario, seed, 1.0)
}

/// The command that replays one run of a scenario whose message rate was
/// multiplied by `traffic_scale`.
pub fn replay_command_scaled(scenario: &str, seed: u64, traffic_scale: f64) -> String {
    let scale = if traffic_scale == 1.0 {
        String::new()
    } else {
        format!(" --traffic-scale {traffic_scale}")
    };
    format!("cargo run -p huddle-sim --release -- --scenario {scenario} --seed {seed}{scale}")
}

/// Runs one scenario with one seed.
pub fn run(sc: &Scenario, seed: u64, opts: Options) -> Outcome {
    // Every simulated device checks the same signatures; the verdicts are
    // pure, so they are computed once per thread (crypto.rs).
    huddle::crypto::memoize_verdicts_on_this_thread();
    let mut w = world::World::new(sc, seed, opts);
    w.run();
    let heal = w.counters.heal_at.unwrap_or(0);
    let (change_bytes, heal_change_bytes) = w.acct.change_bytes();
    let (heal_frames, heal_bytes) = w.acct.since_heal();
    let mut rtts = w.acct.round_trips.clone();
    rtts.sort_unstable();
    let metrics = Metrics {
        converge_ms: w
            .watch
            .done_at
            .map(|t| t.saturating_sub(w.watch.since) as f64 / 1000.0),
        quiet_ms: w
            .counters
            .quiet_at
            .map(|_| w.counters.last_delivery.saturating_sub(heal) as f64 / 1000.0),
        messages: w.ledger.confirmed.len() as u64,
        deliveries: w.acct.deliveries.len() as u64,
        frames: w.acct.frames,
        bytes: w.acct.bytes,
        sync_bytes: w.acct.sync_bytes,
        change_bytes,
        heal_frames,
        heal_bytes,
        heal_breakdown: w.acct.heal_breakdown(),
        heal_bytes_by_kind: w.acct.heal_bytes_by_kind(),
        mail: (
            w.acct.mail_frames,
            w.acct.mail_bytes,
            w.acct.heal_mail_bytes(),
        ),
        heal_change_bytes,
        rtt_median: rtts.get(rtts.len() / 2).map_or(0.0, |v| f64::from(*v)),
        rtt_max: rtts.last().copied().unwrap_or(0),
        syncs: rtts.len(),
        peak_queue: w.counters.peak_queue,
        peak_events: w.q.peak,
        peak_reassembly: w.acct.peak_reassembly,
        sessions: w.counters.sessions,
        breaks: w.counters.breaks,
        crashes: w.counters.crashes,
        stale_blocked: w.counters.stale_blocked,
        rejected: w.counters.rejected,
        events: w.trace.events,
        pressing: (w.counters.pressing.0, w.counters.pressing.1 as f64 / 1e6),
        latency: latency(w.counters.latencies.iter().map(|l| l.0).collect()),
        latency_across: latency(
            w.counters
                .latencies
                .iter()
                .filter(|l| l.1)
                .map(|l| l.0)
                .collect(),
        ),
        clinical: (
            w.clin.alerts_checked,
            w.clin.escalations,
            w.clin.reminders_checked,
        ),
        by_kind: [
            w.acct.by_tag[1],
            w.acct.by_tag[2],
            w.acct.by_tag[3],
            w.acct.by_tag[4],
            w.acct.by_tag[5],
            w.acct.by_tag[6],
        ],
        sync_empty: w.acct.sync_empty,
        sync_with_changes: w.acct.sync_with_changes,
        redundant_change_bytes: w.acct.redundant_change_bytes,
        team_sync_bytes: w.acct.team_sync_bytes,
        whole_docs: w.acct.whole_docs,
        whole_doc_bytes: w.acct.whole_doc_bytes,
        link_bytes: w.counters.link_bytes,
    };
    let trace_tail = match &w.violation {
        Some(v) => {
            let devices = w.opts.trace_devices.clone().unwrap_or(v.devices.clone());
            w.trace
                .tail(&devices, w.opts.trace_lines, w.opts.trace_sync)
        }
        None => String::new(),
    };
    Outcome {
        scenario: sc.name.clone(),
        seed,
        violation: w.violation.take(),
        metrics,
        digest: w.trace.digest(),
        trace_tail,
    }
}

/// Median, 95th percentile and largest of `v` (µs), in seconds.
fn latency(mut v: Vec<u64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1e6;
    Some((at(0.5), at(0.95), at(1.0)))
}
