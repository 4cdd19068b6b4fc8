//! The acceptance scenario: three devices set up from scratch with the CLI
//! only, three `huddle run` processes on loopback (no mDNS), 1:1, group and
//! role-channel messages, an urgent message acknowledged, and every node's
//! `history --json` identical.
#![cfg(feature = "cli")]

mod cli_support;

use cli_support::{admit, eventually, fails, init, json, ok, Device, Running};
use serde_json::Value;

/// `history --json <id>` on each device, once they are all equal.
fn converged(
    devices: &[&Device],
    conversation: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    eventually(&format!("conversation {conversation} to converge"), || {
        let mut histories = Vec::new();
        for d in devices {
            match json(&d.dir, &["history", conversation]) {
                Ok(h) => histories.push(h),
                // Not arrived yet on that device.
                Err(_) => return Ok(None),
            }
        }
        let first = &histories[0];
        Ok((histories.iter().all(|h| h == first) && check(first)).then(|| first.clone()))
    })
}

#[test]
fn a_ward_of_three_talks_and_converges() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse", "charge-nurse"])?;
    ok(&ana.dir, &["team", "create", "St Mary Ward 7"])?;
    let ben = init(tmp.path(), "ben", "Ben Okafor", &["physician"])?;
    let chloe = init(tmp.path(), "chloe", "Chloe Martin", &["nurse"])?;
    admit(&ana, &ben, "Ben Okafor", &["physician"])?;
    admit(&ana, &chloe, "Chloe Martin", &["nurse"])?;

    let a = Running::start(&ana, &[])?;
    let _b = Running::start(&ben, &a.listen)?;
    let _c = Running::start(&chloe, &a.listen)?;
    let all = [&ana, &ben, &chloe];

    // Everyone learns everyone through the team document.
    for d in all {
        eventually("the directory to list three members", || {
            let show = json(&d.dir, &["team", "show"])?;
            Ok((show["members"].as_array().map_or(0, Vec::len) == 3).then_some(()))
        })?;
    }
    let peers = json(&ana.dir, &["peers"])?;
    assert_eq!(peers.as_array().map_or(0, Vec::len), 2, "{peers}");

    // 1:1: Ana and Ben.
    let direct = json(&ana.dir, &["chat", "new", "--with", "Ben Okafor"])?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = json(
        &ana.dir,
        &["send", &direct, "Can you review bed 4 before rounds?"],
    )?;
    assert_eq!(out["offline"], false);
    // Ben names the conversation by Ana's name.
    eventually("the direct message to reach Ben", || {
        Ok(json(&ben.dir, &["history", "Ana Silva"])
            .ok()
            .filter(|h| h[0]["body"].is_string()))
    })?;
    ok(&ben.dir, &["send", "Ana Silva", "On my way"])?;
    converged(&[&ana, &ben], &direct, |h| {
        h.as_array().map_or(0, Vec::len) == 2
    })?;

    // Group: all three; Ben's urgent message is acknowledged by Chloe and Ana.
    let group = json(
        &ana.dir,
        &[
            "chat",
            "new",
            "--group",
            "Sepsis review",
            "--with",
            "Ben",
            "--with",
            "chloe martin",
        ],
    )?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the group to reach Ben", || {
        Ok(json(&ben.dir, &["chats"])?
            .as_array()
            .and_then(|a| a.iter().find(|c| c["title"] == "Sepsis review").cloned()))
    })?;
    let urgent = json(
        &ben.dir,
        &[
            "send",
            "Sepsis review",
            "Bed 12 lactate 4.1, start the sepsis bundle",
            "--urgent",
        ],
    )?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for d in [&chloe, &ana] {
        eventually("the urgent message to arrive", || {
            Ok(json(&d.dir, &["history", "Sepsis review"])
                .ok()
                .filter(|h| h.as_array().is_some_and(|a| !a.is_empty()))
                .map(drop))
        })?;
        ok(&d.dir, &["ack", &urgent[..10]])?;
    }
    ok(&chloe.dir, &["read", "Sepsis review"])?;
    let history = converged(&all, &group, |h| {
        h[0]["acked_by"].as_array().map_or(0, Vec::len) == 2
            && h[0]["read_by"].as_array().is_some_and(|r| !r.is_empty())
    })?;
    assert_eq!(history[0]["priority"], "urgent");
    assert_eq!(history[0]["author_name"], "Ben Okafor");
    assert_eq!(history[0]["author_verified"], true);
    // Ana's ack read the message for her, though she never opened the
    // chat; its author cannot acknowledge it (through the API).
    assert!(history[0]["read_by"]
        .as_array()
        .is_some_and(|r| r.iter().any(|m| m == ana.member.as_str())));
    let ana_chats = json(&ana.dir, &["chats"])?;
    let sepsis = ana_chats
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == group.as_str()))
        .expect("Ana lists the group");
    assert_eq!(sepsis["unread"], 0, "{sepsis}");
    let err = fails(&ben.dir, &["ack", &urgent[..10]])?;
    assert!(err.contains("you wrote this message"), "{err}");

    // Role channel: nurses only.
    let role = json(&chloe.dir, &["chat", "new", "--role", "nurse"])?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&chloe.dir, &["send", "nurse", "Handover moved to 07:15"])?;
    ok(&ana.dir, &["chats"])?;
    converged(&[&ana, &chloe], &role, |h| {
        h.as_array().map_or(0, Vec::len) == 1
    })?;

    // No leak: Ben does not hold the nurses' channel, nor Chloe the 1:1.
    let ben_chats = json(&ben.dir, &["chats"])?;
    assert!(!ben_chats.to_string().contains(&role), "{ben_chats}");
    let chloe_chats = json(&chloe.dir, &["chats"])?;
    assert!(!chloe_chats.to_string().contains(&direct), "{chloe_chats}");

    // Unread counts: Ana has not read Ben's reply nor the group.
    let chats = json(&ana.dir, &["chats"])?;
    let unread = |id: &str| {
        chats
            .as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id))
            .map(|c| c["unread"].clone())
    };
    assert_eq!(unread(&direct), Some(Value::from(1)), "{chats}");

    // Revocation through the running node: Chloe is cut off everywhere.
    let out = json(&ana.dir, &["team", "revoke", "Chloe Martin"])?;
    assert_eq!(out["offline"], false, "{out}");
    for d in [&ana, &ben] {
        eventually(
            "the revocation to spread and Chloe to be disconnected",
            || {
                let members = json(&d.dir, &["team", "show"])?["members"].clone();
                let revoked = members
                    .as_array()
                    .and_then(|a| a.iter().find(|m| m["name"] == "Chloe Martin"))
                    .is_some_and(|m| m["revoked"] == true);
                let peers = json(&d.dir, &["peers"])?;
                let connected = peers.to_string().contains(&chloe.device);
                Ok((revoked && !connected).then_some(()))
            },
        )?;
    }
    Ok(())
}
