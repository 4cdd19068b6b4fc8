//! Sweeps: many seeds of one or more scenarios under an optional wall-clock
//! budget shared fairly between the scenarios, stopping at the first
//! failure unless asked to keep going.
//!
//! Invariant: the wall clock only decides when to stop; it never reaches a
//! simulation, so every run in a sweep replays alone with the same result.

use std::time::{Duration, Instant};

use crate::metrics::RunRecord;
use crate::{run, Options, Outcome, Scenario};

pub struct SweepConfig {
    /// Options for every run (a sweep has no tamper).
    pub options: Options,
    pub seeds: Vec<u64>,
    pub budget: Option<Duration>,
    pub keep_going: bool,
}

pub struct SweepResult {
    /// Per scenario (by the name it was given), the runs that passed.
    pub runs: Vec<(String, Vec<RunRecord>)>,
    /// Failed runs, with the name the scenario was given.
    pub failures: Vec<(String, Outcome)>,
    /// Seeds left unrun because the budget ran out.
    pub skipped: usize,
    pub elapsed: Duration,
}

/// Runs the sweep; `progress` hears about each run. With a budget, each
/// scenario gets an equal share of what is left when its turn comes (and
/// always at least one seed), so one slow scenario cannot starve the rest.
pub fn sweep(
    scenarios: &[(String, Scenario)],
    cfg: &SweepConfig,
    mut progress: impl FnMut(&str, &Outcome, Duration),
) -> SweepResult {
    let start = Instant::now();
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    let mut skipped = 0;
    for (i, (name, sc)) in scenarios.iter().enumerate() {
        let share = cfg.budget.map(|b| {
            let left = b.saturating_sub(start.elapsed());
            left / (scenarios.len() - i) as u32
        });
        let t0 = Instant::now();
        let mut records = Vec::new();
        for (k, &seed) in cfg.seeds.iter().enumerate() {
            if k > 0 && share.is_some_and(|s| t0.elapsed() >= s) {
                skipped += cfg.seeds.len() - k;
                break;
            }
            let t = Instant::now();
            let opts = Options {
                tamper: None,
                trace_devices: cfg.options.trace_devices.clone(),
                ..cfg.options
            };
            let out = run(sc, seed, opts);
            let wall = t.elapsed();
            progress(name, &out, wall);
            if out.passed() {
                records.push(RunRecord {
                    seed,
                    metrics: out.metrics.clone(),
                    wall_ms: wall.as_secs_f64() * 1000.0,
                });
            } else {
                failures.push((name.clone(), out));
                if !cfg.keep_going {
                    break;
                }
            }
        }
        runs.push((name.clone(), records));
        if !failures.is_empty() && !cfg.keep_going {
            break;
        }
    }
    SweepResult {
        runs,
        failures,
        skipped,
        elapsed: start.elapsed(),
    }
}
