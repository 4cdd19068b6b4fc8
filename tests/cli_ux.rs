//! Acceptance tests for what a new user tripped over (issue 20, items 5, 6,
//! 8 and 11): conversations named as they are shown, counts and limits that
//! read right, revocation shown where the user acts, and a member's second
//! device being the same person.
#![cfg(feature = "cli")]

mod cli_support;

use cli_support::{admit, eventually, fails, init, json, ok, Running};

#[test]
fn a_role_channel_is_named_as_it_is_shown() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["charge-nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    let chat = json(&ana.dir, &["chat", "new", "--role", "charge-nurse"])?;
    assert_eq!(chat["title"], "#charge-nurse");
    let shown = ok(&ana.dir, &["chats"])?;
    assert!(shown.contains("#charge-nurse"), "{shown}");
    ok(&ana.dir, &["send", "#charge", "Bed 4 needs a review"])?;
    for name in ["#charge-nurse", "#charge", "charge", "charge-nurse"] {
        let h = json(&ana.dir, &["history", name])?;
        assert_eq!(h[0]["body"], "Bed 4 needs a review", "{name}");
    }
    ok(&ana.dir, &["read", "#charge-nurse"])?;
    Ok(())
}

/// Ana, administrator of "Ward 7", with a nurse channel.
fn ward() -> anyhow::Result<(tempfile::TempDir, cli_support::Device)> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7", "--expires", "2y"])?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    Ok((tmp, ana))
}

#[test]
fn a_membership_has_a_maximum_named_in_one_sentence() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    let err = fails(
        &ana.dir,
        &["team", "create", "Ward 7", "--expires", "1000y"],
    )?;
    assert!(err.contains("at most 730 days"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    ok(&ana.dir, &["team", "create", "Ward 7", "--expires", "2y"])?;
    let ben = init(tmp.path(), "ben", "Ben Okafor", &[])?;
    let err = fails(
        &ana.dir,
        &[
            "team",
            "admit",
            &ben.device,
            "--name",
            "Ben Okafor",
            "--expires",
            "1000y",
        ],
    )?;
    assert!(err.contains("at most 730 days"), "{err}");
    Ok(())
}

#[test]
fn the_text_names_the_team_as_the_json_does() -> anyhow::Result<()> {
    let (_tmp, ana) = ward()?;
    let show = json(&ana.dir, &["team", "show"])?;
    let fingerprint = show["fingerprint"].as_str().unwrap_or_default().to_owned();
    let text = ok(&ana.dir, &["team", "show"])?;
    assert!(
        text.contains(&format!("fingerprint {fingerprint}")),
        "{text}"
    );
    assert!(!text.contains("team id"), "{text}");
    assert_eq!(
        json(&ana.dir, &["whoami"])?["fingerprint"],
        fingerprint.as_str()
    );
    let text = ok(&ana.dir, &["whoami"])?;
    assert!(
        text.contains(&format!("fingerprint {fingerprint}")),
        "{text}"
    );
    Ok(())
}

#[test]
fn history_counts_and_limits_read_right() -> anyhow::Result<()> {
    let (_tmp, ana) = ward()?;
    ok(&ana.dir, &["send", "nurse", "first"])?;
    let h = ok(&ana.dir, &["history", "nurse"])?;
    assert!(h.contains("(1 message)"), "{h}");
    ok(&ana.dir, &["send", "nurse", "second"])?;
    ok(&ana.dir, &["send", "nurse", "third"])?;
    // A limit says what it hides; 0 is refused rather than shown as empty.
    let h = ok(&ana.dir, &["history", "nurse", "--limit", "1"])?;
    assert!(h.contains("(newest 1 of 3 messages)"), "{h}");
    let err = fails(&ana.dir, &["history", "nurse", "--limit", "0"])?;
    assert!(err.contains("--limit 0"), "{err}");
    Ok(())
}

#[test]
fn send_reads_the_body_from_stdin_with_a_dash() -> anyhow::Result<()> {
    let (_tmp, ana) = ward()?;
    let out = cli_support::huddle(&ana.dir)
        .args(["send", "nurse", "-"])
        .write_stdin("Bed 4 handover:\nobs stable\n")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = json(&ana.dir, &["history", "nurse"])?;
    assert_eq!(h[0]["body"], "Bed 4 handover:\nobs stable");
    // A longer piped body is refused, naming the limit.
    let out = cli_support::huddle(&ana.dir)
        .args(["send", "nurse", "-"])
        .write_stdin(vec![b'x'; 64 * 1024])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("16 KiB"), "{err}");
    Ok(())
}

#[test]
fn the_message_limit_is_stated() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let help = ok(tmp.path(), &["send", "--help"])?;
    assert!(help.contains("16 KiB"), "{help}");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    assert!(
        readme.contains("16 KiB"),
        "the README states the message limit"
    );
    Ok(())
}

/// Runs `huddle <args>` expecting success; returns (stdout, stderr).
fn both(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<(String, String)> {
    let out = cli_support::huddle(dir).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "huddle {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

#[test]
fn revocation_is_shown_where_the_user_acts() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    let ben = init(tmp.path(), "ben", "Ben Okafor", &["physician"])?;
    admit(&ana, &ben, "Ben Okafor", &["physician"])?;
    let a = Running::start(&ana, &[])?;
    let _b = Running::start(&ben, &a.listen)?;
    for d in [&ana, &ben] {
        eventually("both to know both", || {
            let show = json(&d.dir, &["team", "show"])?;
            Ok((show["members"].as_array().map_or(0, Vec::len) == 2).then_some(()))
        })?;
    }
    ok(&ana.dir, &["chat", "new", "--with", "Ben Okafor"])?;
    let (_, note) = both(&ana.dir, &["send", "Ben Okafor", "before"])?;
    assert!(!note.contains("revoked"), "{note}");
    ok(&ana.dir, &["team", "revoke", "Ben Okafor"])?;

    // The sender is told the message will never reach Ben, and that it is
    // still stored.
    let (_, note) = both(&ana.dir, &["send", "Ben Okafor", "after"])?;
    assert!(note.contains("Ben Okafor was revoked"), "{note}");
    assert!(note.contains("never reach them"), "{note}");
    assert!(note.contains("stored"), "{note}");
    let sent = json(&ana.dir, &["send", "Ben Okafor", "again"])?;
    assert_eq!(sent["revoked_members"][0], ben.member.as_str());

    // Ben's device, refused when it dials again, is shown the signed
    // revocation first: its own `team show` and `send` say so.
    eventually("ben's device to learn it was revoked", || {
        let show = json(&ben.dir, &["team", "show"])?;
        Ok((show["revoked"] == true).then_some(()))
    })?;
    let shown = ok(&ben.dir, &["team", "show"])?;
    assert!(shown.contains("REVOKED"), "{shown}");
    let (_, note) = both(&ben.dir, &["send", "Ana Silva", "still here?"])?;
    assert!(
        note.contains("This device's membership was revoked"),
        "{note}"
    );
    Ok(())
}

#[test]
fn a_second_device_admitted_with_member_is_the_same_person() -> anyhow::Result<()> {
    // The README and `--help` show `--member` on every `team admit` line.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let admits: Vec<&str> = readme
        .lines()
        .filter(|l| l.trim_start().starts_with("huddle team admit"))
        .collect();
    assert!(
        admits.len() >= 2,
        "the README admits a first and a second device"
    );
    for l in &admits {
        assert!(l.contains("--member"), "{l}");
    }
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    let help = ok(&ana.dir, &["team", "admit", "--help"])?;
    assert!(help.contains("second device"), "{help}");

    // Ben's laptop, then his ward PC, admitted with the member id he has.
    let laptop = init(tmp.path(), "ben-laptop", "Ben Okafor", &["physician"])?;
    let pc = init(tmp.path(), "ben-pc", "Ben Okafor", &["physician"])?;
    admit(&ana, &laptop, "Ben Okafor", &["physician"])?;
    let token = ok(
        &ana.dir,
        &[
            "team",
            "admit",
            &pc.device,
            "--name",
            "Ben Okafor",
            "--role",
            "physician",
            "--member",
            &laptop.member,
        ],
    )?;
    ok(&pc.dir, &["team", "join", &token])?;
    assert_eq!(
        json(&pc.dir, &["whoami"])?["member"],
        laptop.member.as_str()
    );

    let a = Running::start(&ana, &[])?;
    let _l = Running::start(&laptop, &a.listen)?;
    let _p = Running::start(&pc, &a.listen)?;
    let members = eventually("Ana to know both of Ben's devices", || {
        let show = json(&ana.dir, &["team", "show"])?;
        let members = show["members"].as_array().cloned().unwrap_or_default();
        let devices: usize = members
            .iter()
            .map(|m| m["devices"].as_array().map_or(0, Vec::len))
            .sum();
        Ok((devices == 3).then_some(members))
    })?;
    assert_eq!(members.len(), 2, "one Ben, with two devices: {members:?}");
    let chat = json(&ana.dir, &["chat", "new", "--with", "Ben Okafor"])?;
    assert_eq!(chat["title"], "Ben Okafor");
    Ok(())
}
