//! Acceptance tests of the `huddle` binary without a network: identity and
//! team setup, offline writes, and the one-sentence errors for bad input.
#![cfg(feature = "cli")]

mod cli_support;

use cli_support::{admit, fails, init, json, ok, Running};

#[test]
fn setup_from_scratch_and_offline_writes() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse", "Charge Nurse"])?;
    assert!(ana.device.starts_with("12D3KooW"), "{}", ana.device);

    // Identity files are owner-only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ana.dir), 0o700);
        assert_eq!(mode(&ana.dir.join("device.key")), 0o600);
    }

    // A second init never overwrites the identity.
    let err = fails(&ana.dir, &["init", "--name", "Someone Else"])?;
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(json(&ana.dir, &["whoami"])?["device"], ana.device.as_str());

    let team = json(&ana.dir, &["team", "create", "St Mary Ward 7"])?;
    assert_eq!(team["team_name"], "St Mary Ward 7");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(ana.dir.join("team.key"))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, 0o600);
    }
    let me = json(&ana.dir, &["whoami"])?;
    assert_eq!(me["roles"], serde_json::json!(["nurse", "charge-nurse"]));
    assert_eq!(me["administrator"], true);

    let ben = init(tmp.path(), "ben", "Ben Okafor", &["physician"])?;
    admit(&ana, &ben, "Ben Okafor", &["physician"])?;
    let show = json(&ben.dir, &["team", "show"])?;
    assert_eq!(show["team_name"], "St Mary Ward 7");
    assert_eq!(show["member"], ben.member.as_str());

    // Offline: a role channel and a message, stored for the next run.
    let chat = json(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    assert_eq!(chat["offline"], true);
    let out = cli_support::huddle(&ana.dir)
        .args(["send", "nurse", "Bed 4 obs are stable", "--urgent"])
        .output()?;
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout)?.trim().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    let note = String::from_utf8(out.stderr)?;
    assert!(note.contains("stored locally"), "{note}");

    let history = json(&ana.dir, &["history", "#nurse"])?;
    assert_eq!(history[0]["id"], id.as_str());
    assert_eq!(history[0]["priority"], "urgent");
    assert_eq!(history[0]["author_name"], "Ana Silva");

    // Ack by prefix finds the conversation holding the message.
    ok(&ana.dir, &["ack", &id[..6]])?;
    let history = json(&ana.dir, &["history", "nurse"])?;
    assert_eq!(history[0]["acked_by"][0], ana.member.as_str());
    let chats = json(&ana.dir, &["chats"])?;
    assert_eq!(chats[0]["messages"], 1);
    Ok(())
}

#[test]
fn bad_input_gets_one_sentence_and_a_failure() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;

    // Missing identity.
    let nobody = tmp.path().join("nobody");
    let err = fails(&nobody, &["chats"])?;
    assert!(
        err.contains("no identity in") && err.contains("huddle init"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    let ben = init(tmp.path(), "ben", "Ben Okafor", &["physician"])?;

    // Malformed tokens.
    let err = fails(&ben.dir, &["team", "join", "not-a-token"])?;
    assert!(err.contains("not a huddle membership token"), "{err}");
    let token = ok(
        &ana.dir,
        &["team", "admit", &ben.device, "--name", "Ben Okafor"],
    )?;
    let mut damaged: Vec<char> = token.chars().collect();
    let i = damaged.len() / 2;
    damaged[i] = if damaged[i] == 'A' { 'B' } else { 'A' };
    let damaged: String = damaged.into_iter().collect();
    let err = fails(&ben.dir, &["team", "join", &damaged])?;
    assert!(err.contains("damaged"), "{err}");
    // A token for another device.
    let err = fails(&ana.dir, &["team", "join", &token])?;
    assert!(err.contains("this token is for device"), "{err}");
    // Not an administrator.
    let err = fails(&ben.dir, &["team", "admit", &ana.device, "--name", "X"])?;
    assert!(err.contains("does not hold a team key"), "{err}");

    // Unknown conversation.
    let err = fails(&ana.dir, &["send", "Nowhere", "hello"])?;
    assert!(err.contains("no conversation \"Nowhere\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Not a member of a team yet.
    let err = fails(&ben.dir, &["chat", "new", "--role", "physician"])?;
    assert!(err.contains("huddle team join"), "{err}");

    // A second `run` on a data directory that a node holds.
    let _node = Running::start(&ana, &[])?;
    let err = fails(
        &ana.dir,
        &[
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--api",
            "127.0.0.1:0",
        ],
    )?;
    assert!(err.contains("locked by another huddle process"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    Ok(())
}

/// A conversation whose stored header is damaged is set aside, loudly: the
/// other conversations work offline and in `huddle run`, which names it.
#[test]
fn a_damaged_conversation_is_set_aside_not_fatal() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse", "Charge Nurse"])?;
    ok(&ana.dir, &["team", "create", "St Mary Ward 7"])?;
    let nurses = json(&ana.dir, &["chat", "new", "--role", "nurse"])?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    json(&ana.dir, &["chat", "new", "--role", "charge-nurse"])?;
    ok(&ana.dir, &["send", "charge-nurse", "Bed 4 needs review"])?;

    // Flip one bit of the nurse channel's header on disk.
    {
        use huddle::store::{keys, SledStore, Store, StoreOp};
        let id: huddle::ConversationId = nurses.parse()?;
        let mut store = SledStore::open(&ana.dir)?;
        let key = keys::header(&id.0);
        let mut value = store.get(&key)?.expect("a stored header");
        let mid = value.len() / 2;
        value[mid] ^= 0x40;
        store.apply(&[StoreOp::Put { key, value }])?;
        store.flush()?;
    }

    let out = cli_support::huddle(&ana.dir).args(["chats"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    assert!(stdout.contains("charge-nurse"), "{stdout}");
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("set aside") && stderr.contains(&nurses[..8]),
        "{stderr}"
    );
    let history = json(&ana.dir, &["history", "charge-nurse"])?;
    assert_eq!(history[0]["body"], "Bed 4 needs review");

    let node = Running::start(&ana, &[])?;
    let damaged = &node.started["damaged"];
    assert_eq!(damaged[0]["conversation"], nurses.as_str(), "{damaged}");
    assert!(damaged[0]["why"].as_str().is_some_and(|w| !w.is_empty()));
    // And the local API says so, for a user interface to show.
    let info = huddle::datadir::DataDir::new(&ana.dir)
        .api_info()?
        .expect("the node wrote api.json");
    let (_, status) = huddle::api::client::ApiClient::probe(info).expect("the API answers");
    assert_eq!(status.damaged.len(), 1);
    assert_eq!(status.damaged[0].conversation.to_string(), nurses);
    Ok(())
}

/// A certificate stored by an older huddle (version 1, before passes) is
/// explained in one sentence that says what to do, and the new token the
/// admin issues replaces it.
#[test]
fn a_certificate_from_an_older_huddle_asks_for_a_new_token() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "St Mary Ward 7"])?;
    let ben = init(tmp.path(), "ben", "Ben Okafor", &["physician"])?;
    admit(&ana, &ben, "Ben Okafor", &["physician"])?;

    std::fs::write(ben.dir.join("certificate"), outdated(&ben.dir)?)?;
    let err = fails(&ben.dir, &["team", "show"])?;
    assert!(
        err.contains("older huddle") && err.contains("new token") && !err.contains("damaged"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");

    admit(&ana, &ben, "Ben Okafor", &["physician"])?;
    let show = json(&ben.dir, &["team", "show"])?;
    assert_eq!(show["team_name"], "St Mary Ward 7");

    // The admin has no one to ask: its own device renews its certificate.
    std::fs::write(ana.dir.join("certificate"), outdated(&ana.dir)?)?;
    let show = json(&ana.dir, &["team", "show"])?;
    assert_eq!(show["team_name"], "St Mary Ward 7");
    assert_eq!(show["member"], ana.member.as_str());
    admit(&ana, &ben, "Ben Okafor", &["physician"])?;
    Ok(())
}

/// The certificate installed in `dir` as a version-3 huddle stored it: the
/// same token layout, with the version-1 field order and version byte.
fn outdated(dir: &std::path::Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(dir.join("certificate"))?;
    let c = huddle::membership::Certificate::from_token(&token)?;
    let mut w = huddle::codec::Writer::new();
    w.u8(1)
        .raw(&c.team.0)
        .str(&c.team_name)
        .raw(&c.member.0)
        .str(&c.display_name)
        .varint(c.roles.len() as u64);
    for r in &c.roles {
        w.str(r);
    }
    w.raw(&c.device.0)
        .u64_be(c.issued)
        .u64_be(c.expires)
        .raw(&c.signature);
    let mut b = w.finish();
    let sum = huddle::crypto::sha256(&[&b]);
    b.extend_from_slice(&sum[..4]);
    Ok(format!(
        "HUDDLE1:{}\n",
        data_encoding::BASE32_NOPAD.encode(&b)
    ))
}
