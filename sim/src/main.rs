//! The simulator's command line: one run in detail, or a sweep of seeds
//! that ends with a Markdown metrics table. Exit status 1 on any failure.

mod args;

use std::process::ExitCode;

use huddle_sim::scenario::BUILTIN;
use huddle_sim::sweep::{sweep, SweepConfig};
use huddle_sim::{metrics, replay_command_scaled, run};

fn main() -> ExitCode {
    let cfg = match args::parse(std::env::args().skip(1)) {
        Ok(args::Parsed::Run(c)) => c,
        Ok(args::Parsed::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(args::Parsed::List) => {
            for (name, text) in BUILTIN {
                let desc = huddle_sim::Scenario::parse(text)
                    .map(|s| s.description)
                    .unwrap_or_else(|e| format!("(does not parse: {e})"));
                println!("{name:<14} {desc}");
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("huddle-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.single {
        let (name, sc) = &cfg.scenarios[0];
        let seed = cfg.seeds[0];
        let t = std::time::Instant::now();
        let out = run(sc, seed, cfg.options());
        let wall = t.elapsed();
        if out.passed() {
            println!(
                "ok: scenario {name} seed {seed} ({:.2} s wall)",
                wall.as_secs_f64()
            );
            println!("{}", out.metrics.describe());
            if cfg.digest {
                println!("  trace digest                {}", out.digest_hex());
            }
            return ExitCode::SUCCESS;
        }
        eprint!(
            "{}",
            out.failure_report(&replay_command_scaled(name, seed, cfg.traffic_scale))
        );
        return ExitCode::FAILURE;
    }
    let scfg = SweepConfig {
        options: cfg.options(),
        seeds: cfg.seeds.clone(),
        budget: cfg.budget,
        keep_going: cfg.keep_going,
    };
    let mut done = 0usize;
    let result = sweep(&cfg.scenarios, &scfg, |name, out, wall| {
        done += 1;
        if cfg.digest {
            println!("{name} seed {} digest {}", out.seed, out.digest_hex());
        }
        if !out.passed() {
            eprint!(
                "{}",
                out.failure_report(&replay_command_scaled(name, out.seed, cfg.traffic_scale))
            );
        } else if done.is_multiple_of(25) {
            eprintln!(
                "  ... {done} runs, last: {name} seed {} ({:.2} s)",
                out.seed,
                wall.as_secs_f64()
            );
        }
    });
    let passed: usize = result.runs.iter().map(|(_, r)| r.len()).sum();
    println!("{}", metrics::table(&result.runs));
    println!(
        "{passed} runs passed, {} failed, {} skipped (budget) in {:.1} s wall",
        result.failures.len(),
        result.skipped,
        result.elapsed.as_secs_f64()
    );
    if result.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for (name, out) in &result.failures {
            eprintln!(
                "failed: {}",
                replay_command_scaled(name, out.seed, cfg.traffic_scale)
            );
        }
        ExitCode::FAILURE
    }
}
