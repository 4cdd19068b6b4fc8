//! Urgent messages that cannot be missed, with real `huddle run` processes
//! on loopback (no mDNS) and the policy shortened to seconds: a STAT nobody
//! acknowledges alerts Ben's devices at each interval and escalates once
//! into #charge-nurse; an acknowledgement from Ben's second device stops
//! the alerts on both (protocol/sync.md §7.6).
#![cfg(feature = "cli")]

mod cli_support;

use cli_support::{admit, eventually, init, json, ok, Device, Running};
use serde_json::{json, Value};

/// The events `huddle --json run` printed so far.
fn events(dev: &Device) -> Vec<Value> {
    std::fs::read_to_string(dev.dir.with_extension("stdout"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"].is_string())
        .collect()
}

/// The alert events for `message`, as (n, waiting_ms).
fn alerts(dev: &Device, message: &str) -> Vec<(u64, u64)> {
    events(dev)
        .iter()
        .filter(|e| e["type"] == "alert" && e["message"] == message)
        .map(|e| {
            (
                e["n"].as_u64().unwrap_or(0),
                e["waiting_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn a_stat_nobody_acknowledges_alerts_and_escalates_and_a_second_device_stops_it(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse", "charge-nurse"])?;
    ok(&ana.dir, &["team", "create", "St Mary Ward 7"])?;
    let ben = init(tmp.path(), "ben", "Ben Okafor", &["physician"])?;
    admit(&ana, &ben, "Ben Okafor", &["physician"])?;
    // Ben's tablet: a second device of the same member.
    let tablet = init(tmp.path(), "ben-tablet", "Ben Okafor", &["physician"])?;
    let token = ok(
        &ana.dir,
        &[
            "team",
            "admit",
            &tablet.device,
            "--name",
            "Ben Okafor",
            "--role",
            "physician",
            "--member",
            &ben.member,
        ],
    )?;
    ok(&tablet.dir, &["team", "join", &token])?;

    // STAT shortened to seconds: any recipient, every 2 s, 10 times; the
    // charge nurse after 5 s.
    let mut policy = json(&ana.dir, &["team", "policy"])?;
    policy["stat"] = json!({
        "ack_by": {"who": "any"},
        "every_ms": 2000,
        "times": 10,
        "ladder": [{"after_ms": 5000, "role": "charge-nurse"}],
    });
    let file = tmp.path().join("policy.json");
    std::fs::write(&file, policy.to_string())?;
    ok(
        &ana.dir,
        &["team", "policy", "--set", file.to_str().expect("utf-8")],
    )?;

    let a = Running::start(&ana, &[])?;
    let _b = Running::start(&ben, &a.listen)?;
    let _t = Running::start(&tablet, &a.listen)?;
    for d in [&ben, &tablet] {
        eventually("the policy to reach Ben's devices", || {
            let p = json(&d.dir, &["team", "policy"])?;
            Ok((p["stat"]["every_ms"] == 2000).then_some(()))
        })?;
        eventually("the directory to know both members", || {
            let show = json(&d.dir, &["team", "show"])?;
            Ok((show["members"].as_array().map_or(0, Vec::len) == 2).then_some(()))
        })?;
    }
    let group = json(
        &ana.dir,
        &["chat", "new", "--group", "Bed 12", "--with", "Ben Okafor"],
    )?["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    for d in [&ben, &tablet] {
        eventually("the group to reach Ben's devices", || {
            Ok(json(&d.dir, &["history", &group]).ok())
        })?;
    }
    let stat = json(
        &ana.dir,
        &[
            "send",
            &group,
            "Bed 12 SpO2 84%, need a physician now",
            "--stat",
        ],
    )?["id"]
        .as_str()
        .expect("an id")
        .to_owned();

    // Re-notified on both of Ben's devices, an interval apart.
    for d in [&ben, &tablet] {
        let seen = eventually("two alerts on each of Ben's devices", || {
            let a = alerts(d, &stat);
            Ok((a.len() >= 2).then_some(a))
        })?;
        for (n, waiting) in &seen[..2] {
            let due = n * 2000;
            assert!(
                waiting.abs_diff(due) < 1500,
                "alert {n} after {waiting} ms, due after {due} ms: {seen:?}"
            );
        }
        assert!(alerts(&ana, &stat).is_empty(), "the author owes nothing");
    }
    // Escalated once into #charge-nurse by Ana's device (the only one that
    // holds the conversation and the role), without the message's text.
    let escalated = eventually("the escalation of level 1", || {
        Ok(events(&ana)
            .into_iter()
            .find(|e| e["type"] == "escalated" && e["message"] == stat))
    })?;
    assert_eq!(escalated["level"], 1);
    let channel = json(&ana.dir, &["history", "#charge-nurse"])?;
    let entries: Vec<&Value> = channel
        .as_array()
        .expect("a list")
        .iter()
        .filter(|m| m["escalation"]["message"] == stat)
        .collect();
    assert_eq!(entries.len(), 1, "{channel}");
    assert!(!entries[0]["body"].as_str().unwrap_or("").contains("SpO2"));

    // Ben acknowledges on his tablet; his phone learns it and stops too.
    ok(&tablet.dir, &["ack", &stat])?;
    eventually("the acknowledgement to reach Ben's phone", || {
        let waiting = json(&ben.dir, &["alerts"])?;
        Ok(waiting
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["message"] != stat))
            .then_some(()))
    })?;
    // A second STAT marks the time: once its second alert is out (4 s on,
    // two of the first STAT's intervals), the event stream holds everything
    // raised before it.
    let marker = json(&ana.dir, &["send", &group, "Bed 14 too", "--stat"])?["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let before: Vec<usize> = [&ben, &tablet]
        .iter()
        .map(|d| {
            eventually("the marker's first alert", || {
                Ok((!alerts(d, &marker).is_empty()).then(|| alerts(d, &stat).len()))
            })
        })
        .collect::<anyhow::Result<_>>()?;
    for (d, before) in [&ben, &tablet].iter().zip(before) {
        eventually("the marker's second alert", || {
            Ok((alerts(d, &marker).len() >= 2).then_some(()))
        })?;
        assert_eq!(
            alerts(d, &stat).len(),
            before,
            "no alert for an acknowledged message: {:?}",
            alerts(d, &stat)
        );
    }
    Ok(())
}
