//! A small sweep of every built-in scenario passes. The sweep runs each
//! scenario as written (topology, faults, script) with its message rate
//! cut to a fifth, so that `cargo test` stays affordable in debug builds;
//! the full scenarios run in release: see sim/README.md for the CI sweep.

use huddle_sim::scenario::BUILTIN;
use huddle_sim::{replay_command, replay_command_scaled, run, Options, Scenario};

const SCALE: f64 = 0.2;

fn builtin(name: &str) -> Scenario {
    let text = BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .expect("built in");
    Scenario::parse(text).expect("built-in scenario parses")
}

fn small(name: &str) -> Scenario {
    let mut sc = builtin(name);
    sc.traffic.rate_per_min *= SCALE;
    sc
}

fn sweep(name: &str, seeds: std::ops::RangeInclusive<u64>) {
    let sc = small(name);
    for seed in seeds {
        let out = run(&sc, seed, Options::default());
        assert!(
            out.passed(),
            "{}",
            out.failure_report(&replay_command_scaled(name, seed, SCALE))
        );
    }
}

#[test]
fn ward_outage() {
    sweep("ward-outage", 1..=2);
}

#[test]
fn remote_clinic() {
    sweep("remote-clinic", 1..=1);
}

#[test]
fn field_team() {
    sweep("field-team", 1..=2);
}

/// Sealed relaying (issue 25): conversations whose member devices meet
/// only through devices that are members of none of them. On a core
/// without it these fail (convergence), which is what they are for.
#[test]
fn hospital_sites() {
    sweep("hospital-sites", 1..=1);
}

/// The same, carried by a moving device that is a member of nothing; on a
/// core without sealed relaying its `check-carried` fails (carried).
#[test]
fn field_carrier() {
    sweep("field-carrier", 1..=2);
}

#[test]
fn churn_200() {
    sweep("churn-200", 1..=1);
}

/// At full rate: it is small, and its checkers need the urgent traffic.
#[test]
fn urgent_ward() {
    let sc = builtin("urgent-ward");
    for seed in 1..=3 {
        let out = run(&sc, seed, Options::default());
        assert!(
            out.passed(),
            "{}",
            out.failure_report(&replay_command("urgent-ward", seed))
        );
        let (alerts, _, reminders) = out.metrics.clinical;
        assert!(
            alerts > 0 && reminders > 0,
            "seed {seed} checked nothing: {:?}",
            out.metrics.clinical
        );
    }
}

/// Priority on a thin link (issue 25, part 3): a STAT message written
/// while the catch-up of a 30-minute outage queues for a 256 kbit/s uplink
/// reaches the clinic within 20 s (its `check-carried`), where in turn it
/// would take ~35 s. At full rate: the backlog is what it is about. With
/// the send queue made a FIFO this fails (carried).
#[test]
fn thin_link() {
    let sc = builtin("thin-link");
    let out = run(&sc, 1, Options::default());
    assert!(
        out.passed(),
        "{}",
        out.failure_report(&replay_command("thin-link", 1))
    );
    let (stat, slowest) = out.metrics.pressing;
    assert!(stat == 1 && slowest < 20.0, "{:?}", out.metrics.pressing);
}

/// The small fault storms, at full strength.
#[test]
fn mini_sweeps() {
    for (text, path) in [
        (
            include_str!("scenarios/mini.toml"),
            "sim/tests/scenarios/mini.toml",
        ),
        (
            include_str!("scenarios/mini-sites.toml"),
            "sim/tests/scenarios/mini-sites.toml",
        ),
    ] {
        let sc = Scenario::parse(text).expect("parses");
        for seed in 1..=10 {
            let out = run(&sc, seed, Options::default());
            assert!(
                out.passed(),
                "{}",
                out.failure_report(&replay_command(path, seed))
            );
        }
    }
}
