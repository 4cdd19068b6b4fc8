//! Per-run metrics and the sweep summary table (median and worst seed per
//! scenario), printed as Markdown for BENCHMARKS.md.
//!
//! Invariant: every metric is derived from simulated quantities only, so it
//! is the same on every machine; wall time is reported apart.

use std::fmt::Write as _;

/// Raw counts gathered during a run.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub crashes: u64,
    pub breaks: u64,
    pub sessions: u64,
    /// Late duplicates of frames from dead connections, kept out of new ones.
    pub stale_blocked: u64,
    pub dup_suppressed: u64,
    /// Entries the nodes rejected (forged or malformed).
    pub rejected: u64,
    pub unknown_peer: u64,
    pub peak_queue: usize,
    /// Bytes sent over inter-site links.
    pub link_bytes: u64,
    pub quiet_at: Option<u64>,
    /// The last time a frame was delivered.
    pub last_delivery: u64,
    /// Urgent and STAT messages shown on another device, and the longest
    /// any took from being written (µs).
    pub pressing: (u64, u64),
    /// How long each delivery (another device shows a message) took from
    /// the message being written (µs), and whether the device was then on
    /// another site than the author.
    pub latencies: Vec<(u64, bool)>,
    pub heal_at: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Simulated ms from the last heal until every member device was level.
    pub converge_ms: Option<f64>,
    /// Simulated ms from the last heal until the last frame was delivered.
    pub quiet_ms: Option<f64>,
    pub messages: u64,
    pub deliveries: u64,
    pub frames: u64,
    pub bytes: u64,
    pub sync_bytes: u64,
    /// Bytes of changes that had to move (each change × each new holder).
    pub change_bytes: u64,
    pub heal_frames: u64,
    pub heal_bytes: u64,
    /// After the last heal: redundant change bytes, whole-document bytes,
    /// Heads frames.
    pub heal_breakdown: (u64, u64, u64),
    /// After the last heal: bytes sent per frame kind (Hello, Refuse,
    /// Catalog, Header, Sync, Heads), and the change chunks inside the sync
    /// messages delivered.
    pub heal_bytes_by_kind: ([u64; 6], u64),
    /// Sealed relaying (Sealed, MailIds, MailDone, MailWant): frames,
    /// bytes, bytes after the last heal.
    pub mail: ([u64; 4], [u64; 4], [u64; 4]),
    pub heal_change_bytes: u64,
    pub rtt_median: f64,
    pub rtt_max: u32,
    pub syncs: usize,
    pub peak_queue: usize,
    pub peak_events: usize,
    pub peak_reassembly: usize,
    pub sessions: u64,
    pub breaks: u64,
    pub crashes: u64,
    pub stale_blocked: u64,
    pub rejected: u64,
    pub events: u64,
    /// Frames sent by kind: Hello, Refuse, Catalog, Header, Sync, Heads.
    pub by_kind: [u64; 6],
    pub sync_empty: u64,
    pub sync_with_changes: u64,
    pub redundant_change_bytes: u64,
    pub team_sync_bytes: u64,
    pub whole_docs: u64,
    pub whole_doc_bytes: u64,
    /// Bytes sent over inter-site links (uplinks, backbones).
    pub link_bytes: u64,
    /// Clinical checks (`clinical.rs`): alerts raised, escalation entries
    /// written, reminder occurrences checked on time.
    pub clinical: (u64, u64, u64),
    /// Urgent and STAT deliveries, and the slowest of them (s).
    pub pressing: (u64, f64),
    /// Every delivery's time from being written: median, 95th percentile
    /// and slowest (s); and the same of those to another site.
    pub latency: Option<(f64, f64, f64)>,
    pub latency_across: Option<(f64, f64, f64)>,
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl Metrics {
    pub fn frames_per_delivery(&self) -> Option<f64> {
        ratio(self.frames, self.deliveries)
    }
    pub fn bytes_per_delivery(&self) -> Option<f64> {
        ratio(self.bytes, self.deliveries)
    }
    /// Bytes sent ÷ bytes of changes that had to move, whole run.
    pub fn overhead(&self) -> Option<f64> {
        ratio(self.bytes, self.change_bytes)
    }
    /// The same, counting only what happened after the last heal.
    pub fn heal_overhead(&self) -> Option<f64> {
        ratio(self.heal_bytes, self.heal_change_bytes)
    }

    /// One run, for a human.
    pub fn describe(&self) -> String {
        let f = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.2}{unit}"));
        let secs = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2} s", v / 1000.0));
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  converged after last heal   {}",
            secs(self.converge_ms)
        );
        let _ = writeln!(s, "  quiet after last heal       {}", secs(self.quiet_ms));
        let _ = writeln!(
            s,
            "  messages confirmed          {}   delivered (device × message) {}",
            self.messages, self.deliveries
        );
        let _ = writeln!(
            s,
            "  frames / bytes sent         {} / {} (sync {}, of which team document {}; over links {})",
            self.frames, self.bytes, self.sync_bytes, self.team_sync_bytes, self.link_bytes
        );
        let _ = writeln!(
            s,
            "  per delivered message       {} frames, {} bytes",
            f(self.frames_per_delivery(), ""),
            f(self.bytes_per_delivery(), "")
        );
        let _ = writeln!(
            s,
            "  bytes sent / change bytes   {} whole run, {} after last heal ({} of {} B)",
            f(self.overhead(), "x"),
            f(self.heal_overhead(), "x"),
            self.heal_bytes,
            self.heal_change_bytes
        );
        let _ = writeln!(
            s,
            "  after last heal             {} B of changes arrived where they already were, {} B of whole documents, {} Heads frames",
            self.heal_breakdown.0, self.heal_breakdown.1, self.heal_breakdown.2
        );
        let (b, chunks) = self.heal_bytes_by_kind;
        let _ = writeln!(
            s,
            "  after last heal, bytes      {} Hello, {} Refuse, {} Catalog, {} Header, {} Sync ({} of it change chunks), {} Heads",
            b[0], b[1], b[2], b[3], b[4], chunks, b[5]
        );
        let (f, b, h) = self.mail;
        let _ = writeln!(
            s,
            "  sealed relaying             {} Sealed ({} B), {} MailIds ({} B), {} MailDone ({} B), {} MailWant ({} B); after last heal {} B",
            f[0], b[0], f[1], b[1], f[2], b[2], f[3], b[3], h.iter().sum::<u64>()
        );
        let _ = writeln!(
            s,
            "  frames by kind              {} Hello, {} Refuse, {} Catalog, {} Header, {} Sync, {} Heads",
            self.by_kind[0],
            self.by_kind[1],
            self.by_kind[2],
            self.by_kind[3],
            self.by_kind[4],
            self.by_kind[5]
        );
        let _ = writeln!(
            s,
            "  sync messages               {} carried changes ({} a whole document, {} B), {} carried none; {} B of changes arrived where they already were",
            self.sync_with_changes,
            self.whole_docs,
            self.whole_doc_bytes,
            self.sync_empty,
            self.redundant_change_bytes
        );
        let _ = writeln!(
            s,
            "  round trips per sync        median {:.1}, max {} ({} pairwise syncs)",
            self.rtt_median, self.rtt_max, self.syncs
        );
        let _ = writeln!(
            s,
            "  peaks                       {} frames queued on a connection, {} events, {} B reassembly",
            self.peak_queue, self.peak_events, self.peak_reassembly
        );
        let _ = writeln!(
            s,
            "  faults                      {} connections, {} broken, {} crashes, {} ghosts blocked, {} entries rejected",
            self.sessions, self.breaks, self.crashes, self.stale_blocked, self.rejected
        );
        let (alerts, escalations, reminders) = self.clinical;
        if alerts + escalations + reminders > 0 {
            let _ = writeln!(
                s,
                "  clinical                    {alerts} alerts, {escalations} escalation entries, {reminders} reminder occurrences on time"
            );
        }
        for (what, l) in [("", self.latency), (", across sites", self.latency_across)] {
            if let Some((median, p95, max)) = l {
                let _ = writeln!(
                    s,
                    "  delivered after written{what:<15} median {median:.2} s, 95% within {p95:.2} s, the slowest {max:.2} s"
                );
            }
        }
        let (n, worst) = self.pressing;
        if n > 0 {
            let _ = writeln!(
                s,
                "  urgent and STAT             {n} deliveries, the slowest {worst:.2} s after it was written"
            );
        }
        let _ = write!(s, "  simulated events            {}", self.events);
        s
    }
}

/// One successful run in a sweep.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub seed: u64,
    pub metrics: Metrics,
    pub wall_ms: f64,
}

type Getter = fn(&RunRecord) -> Option<f64>;

const ROWS: &[(&str, Getter)] = &[
    ("converge after last heal (s)", |r| {
        r.metrics.converge_ms.map(|v| v / 1000.0)
    }),
    ("quiet after last heal (s)", |r| {
        r.metrics.quiet_ms.map(|v| v / 1000.0)
    }),
    ("bytes sent / change bytes, after heal", |r| {
        r.metrics.heal_overhead()
    }),
    ("bytes sent / change bytes, whole run", |r| {
        r.metrics.overhead()
    }),
    ("delivery after written, median (s)", |r| {
        r.metrics.latency.map(|l| l.0)
    }),
    ("delivery after written, 95th percentile (s)", |r| {
        r.metrics.latency.map(|l| l.1)
    }),
    ("frames per delivered message", |r| {
        r.metrics.frames_per_delivery()
    }),
    ("bytes per delivered message", |r| {
        r.metrics.bytes_per_delivery()
    }),
    ("round trips per pairwise sync (median)", |r| {
        Some(r.metrics.rtt_median)
    }),
    ("round trips per pairwise sync (max)", |r| {
        Some(f64::from(r.metrics.rtt_max))
    }),
    ("peak frames queued on one connection", |r| {
        Some(r.metrics.peak_queue as f64)
    }),
    ("peak reassembly buffer (bytes)", |r| {
        Some(r.metrics.peak_reassembly as f64)
    }),
    ("bytes over inter-site links", |r| {
        Some(r.metrics.link_bytes as f64).filter(|b| *b > 0.0)
    }),
    ("messages confirmed", |r| Some(r.metrics.messages as f64)),
    ("wall time per run (ms, not simulated)", |r| Some(r.wall_ms)),
];

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The Markdown table: per scenario and metric, the median over seeds and
/// the worst (largest) value with its seed.
pub fn table(results: &[(String, Vec<RunRecord>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| scenario | seeds | metric | median | worst | worst seed |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|");
    for (name, runs) in results {
        if runs.is_empty() {
            continue;
        }
        for (label, get) in ROWS {
            let mut vals: Vec<(f64, u64)> = runs
                .iter()
                .filter_map(|r| get(r).map(|v| (v, r.seed)))
                .collect();
            if vals.is_empty() {
                continue;
            }
            vals.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let median = vals[vals.len() / 2].0;
            let (worst, seed) = vals[vals.len() - 1];
            let _ = writeln!(
                s,
                "| {name} | {} | {label} | {} | {} | {seed} |",
                runs.len(),
                fmt_num(median),
                fmt_num(worst)
            );
        }
    }
    s
}
