//! Command-line flags, parsed and validated into a [`Config`] before
//! anything runs (ripgrep's rule: the binary does nothing clever).

use std::time::Duration;

use huddle_sim::scenario::{Scenario, BUILTIN};

pub const USAGE: &str = "\
huddle-sim: run huddle cores under a seeded, faulty network and check the invariants

USAGE:
    huddle-sim (--scenario NAME|PATH)... | --all   [--seed N | --seeds A..B]
               [--budget-secs N] [--keep-going] [--digest]

OPTIONS:
    --scenario NAME|PATH  a built-in scenario or a TOML file (repeatable)
    --all                 every built-in scenario
    --seed N              one seed (default 1): prints the run's metrics
    --seeds A..B          seeds A to B-1 (A..=B includes B): prints a metrics table
    --budget-secs N       stop a sweep after N seconds of wall time
    --keep-going          do not stop a sweep at the first failure
    --traffic-scale F     multiply every scenario's message rate by F (the
                          tests run the built-in scenarios at 0.2)
    --digest              print each run's event-trace digest
    --trace-lines N       events shown with a failure (default 30)
    --trace-no-sync       leave sync frames out of them
    --trace-devices 0,4   show these devices' events instead
    --list                list the built-in scenarios
";

impl Config {
    pub fn options(&self) -> huddle_sim::Options {
        huddle_sim::Options {
            trace_lines: self.trace_lines,
            trace_sync: self.trace_sync,
            trace_devices: self.trace_devices.clone(),
            ..huddle_sim::Options::default()
        }
    }
}

pub struct Config {
    /// (the name the user gave, the scenario)
    pub scenarios: Vec<(String, Scenario)>,
    pub seeds: Vec<u64>,
    /// One seed given with --seed: report in detail.
    pub single: bool,
    pub budget: Option<Duration>,
    pub keep_going: bool,
    pub digest: bool,
    pub traffic_scale: f64,
    pub trace_lines: usize,
    pub trace_sync: bool,
    pub trace_devices: Option<Vec<usize>>,
}

pub enum Parsed {
    Run(Config),
    Help,
    List,
}

fn parse_seeds(s: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--seeds takes a range like 1..1000 or 1..=1000, not \"{s}\"");
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let end = if inclusive { b.saturating_add(1) } else { b };
    if end <= a {
        return Err(format!("the seed range {s} is empty"));
    }
    Ok((a..end).collect())
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut names: Vec<String> = Vec::new();
    let mut seeds = None;
    let mut single = false;
    let mut budget = None;
    let mut keep_going = false;
    let mut digest = false;
    let mut traffic_scale = 1.0;
    let mut trace_lines = 30;
    let mut trace_sync = true;
    let mut trace_devices = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--list" => return Ok(Parsed::List),
            "--scenario" => names.push(value("--scenario")?),
            "--all" => names.extend(BUILTIN.iter().map(|(n, _)| n.to_string())),
            "--seed" => {
                let v = value("--seed")?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--seed takes a number, not \"{v}\""))?;
                seeds = Some(vec![n]);
                single = true;
            }
            "--seeds" => {
                seeds = Some(parse_seeds(&value("--seeds")?)?);
                single = false;
            }
            "--budget-secs" => {
                let v = value("--budget-secs")?;
                let n: f64 = v
                    .parse()
                    .map_err(|_| format!("--budget-secs takes a number, not \"{v}\""))?;
                budget = Some(Duration::from_secs_f64(n.max(0.0)));
            }
            "--keep-going" => keep_going = true,
            "--traffic-scale" => {
                let v = value("--traffic-scale")?;
                traffic_scale = v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| *f > 0.0 && f.is_finite())
                    .ok_or_else(|| {
                        format!("--traffic-scale takes a positive number, not \"{v}\"")
                    })?;
            }
            "--digest" => digest = true,
            "--trace-no-sync" => trace_sync = false,
            "--trace-devices" => {
                let v = value("--trace-devices")?;
                let list: Result<Vec<usize>, _> = v.split(',').map(|d| d.trim().parse()).collect();
                trace_devices = Some(list.map_err(|_| {
                    format!("--trace-devices takes device numbers like 0,4, not \"{v}\"")
                })?);
            }
            "--trace-lines" => {
                let v = value("--trace-lines")?;
                trace_lines = v
                    .parse()
                    .map_err(|_| format!("--trace-lines takes a number, not \"{v}\""))?;
            }
            other => return Err(format!("unknown argument \"{other}\" (try --help)")),
        }
    }
    if names.is_empty() {
        return Err("name a scenario with --scenario NAME, or use --all (try --list)".into());
    }
    let mut scenarios = Vec::new();
    for n in names {
        let mut sc = Scenario::load(&n)?;
        sc.traffic.rate_per_min *= traffic_scale;
        scenarios.push((n, sc));
    }
    let single = single && scenarios.len() == 1;
    Ok(Parsed::Run(Config {
        scenarios,
        seeds: seeds.unwrap_or_else(|| vec![1]),
        single,
        budget,
        keep_going,
        digest,
        traffic_scale,
        trace_lines,
        trace_sync,
        trace_devices,
    }))
}
