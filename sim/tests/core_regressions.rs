//! Minimal scenarios for core bugs the simulator found. Each is a few
//! devices and no faults at all; each must pass.
//!
//! - `late-group`: a group created while its members are connected never
//!   reached them (the header went out only in catalogs, at connection
//!   time). Fixed in fb35eec.
//! - `relay-empty-group`: on a chain A - B - C, a group A creates reaches B
//!   but never C while nobody writes in it: B adopts the header without
//!   passing it on, and nothing else changes to make it push.

use huddle_sim::{replay_command, run, Options, Scenario};

fn passes(text: &str, path: &str) {
    let sc = Scenario::parse(text).expect("scenario parses");
    for seed in 1..=3 {
        let out = run(&sc, seed, Options::default());
        assert!(
            out.passed(),
            "{}",
            out.failure_report(&replay_command(path, seed))
        );
    }
}

#[test]
fn a_group_created_while_connected_reaches_its_members() {
    passes(
        include_str!("scenarios/late-group.toml"),
        "sim/tests/scenarios/late-group.toml",
    );
}

#[test]
fn an_empty_group_is_relayed_past_the_first_hop() {
    passes(
        include_str!("scenarios/relay-empty-group.toml"),
        "sim/tests/scenarios/relay-empty-group.toml",
    );
}
