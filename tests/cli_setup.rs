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

    // Ack by prefix finds the message, which its author cannot acknowledge
    // (sync.md §7.2): an error, not "Acknowledged".
    let out = cli_support::huddle(&ana.dir)
        .args(["ack", &id[..6]])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("you wrote this message"), "{err}");
    assert!(!String::from_utf8(out.stdout)?.contains("Acknowledged"));
    let history = json(&ana.dir, &["history", "nurse"])?;
    assert_eq!(history[0]["acked_by"], serde_json::json!([]));
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
        use huddle::store::{keys, Store, StoreOp};
        let id: huddle::ConversationId = nurses.parse()?;
        let mut store = cli_support::open_store(&ana.dir)?;
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

/// Every file and directory under `dir` (links excepted), with its mode.
#[cfg(unix)]
fn modes_under(dir: &std::path::Path) -> anyhow::Result<Vec<(std::path::PathBuf, u32)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = vec![(
        dir.to_owned(),
        std::fs::metadata(dir)?.permissions().mode() & 0o7777,
    )];
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.is_dir() {
                pending.push(entry.path());
            }
            found.push((entry.path(), meta.permissions().mode() & 0o7777));
        }
    }
    Ok(found)
}

/// Asserts the data directory holds what the store made, all owner-only.
#[cfg(unix)]
fn assert_private(dir: &std::path::Path, when: &str) -> anyhow::Result<()> {
    let modes = modes_under(dir)?;
    for must in ["sealed/db", "sealed/conf", "huddle.lock", "device.key"] {
        assert!(
            modes.iter().any(|(p, _)| p == &dir.join(must)),
            "{when}: {must} is missing from {modes:?}"
        );
    }
    for (path, mode) in &modes {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            *mode,
            want,
            "{when}: {} is {mode:04o}, not {want:04o}",
            path.display()
        );
    }
    Ok(())
}

/// huddle issue 18, hole 8: with `--data-dir` at an existing 0755
/// directory, the store was 0644 and any local user could read a patient's
/// name out of `db/db`.
#[cfg(unix)]
#[test]
fn an_existing_readable_data_dir_is_made_owner_only() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("ana");
    std::fs::create_dir(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;

    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "St Mary Ward 7"])?;
    json(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    ok(&ana.dir, &["send", "nurse", "Bed 4: Mrs Jones, obs stable"])?;
    assert_private(&ana.dir, "after init and offline writes")?;

    // A store left readable (by an earlier huddle, a copy, a restore) is
    // tightened by the next command, whatever it is.
    for (path, _) in modes_under(&ana.dir)? {
        let loose = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose))?;
    }
    json(&ana.dir, &["whoami"])?;
    assert_private(&ana.dir, "after whoami on a readable store")?;

    // And `huddle run`: its store, lock and api.json while it runs.
    std::fs::set_permissions(
        ana.dir.join("sealed/db"),
        std::fs::Permissions::from_mode(0o644),
    )?;
    let node = Running::start(&ana, &[])?;
    assert_private(&ana.dir, "while huddle run runs")?;
    // What sled creates later (snapshots) is owner-only too: the process
    // runs with umask 077, which Linux shows in /proc.
    let info = huddle::datadir::DataDir::new(&ana.dir)
        .api_info()?
        .expect("the node wrote api.json");
    let status = std::fs::read_to_string(format!("/proc/{}/status", info.pid))?;
    assert!(
        status.lines().any(|l| l == "Umask:\t0077"),
        "huddle run must create files owner-only: {status}"
    );
    drop(node);
    assert_private(&ana.dir, "after huddle run")?;
    Ok(())
}

/// A data directory someone else owns or can write is refused with one
/// sentence saying what to run, and nothing is written into it.
#[cfg(unix)]
#[test]
fn a_data_dir_others_own_or_can_write_is_refused() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;

    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared)?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775))?;
    let err = fails(&shared, &["init", "--name", "Ana Silva"])?;
    assert!(
        err.contains("can be written by other users")
            && err.contains(&format!("chmod 700 {}", shared.display())),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_dir(&shared)?.count(), 0, "nothing written");

    // An initialised directory opened up later is refused by every
    // command, `huddle run` included.
    let ana = init(tmp.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "St Mary Ward 7"])?;
    std::fs::set_permissions(&ana.dir, std::fs::Permissions::from_mode(0o757))?;
    for args in [
        &["whoami"][..],
        &["chats"],
        &[
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--api",
            "127.0.0.1:0",
        ],
    ] {
        let err = fails(&ana.dir, args)?;
        assert!(
            err.contains(&format!("chmod 700 {}", ana.dir.display())),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::metadata(&ana.dir)?.permissions().mode() & 0o7777,
        0o757,
        "a refused directory is left for its owner to inspect"
    );

    // Owned by someone else (uid 65534, `nobody`): refused even though its
    // mode is private. The tests run as root, which may chown.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs)?;
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(&theirs, Some(65534), None)?;
    let err = fails(&theirs, &["init", "--name", "Ana Silva"])?;
    assert!(
        err.contains("belongs to another user (uid 65534")
            && err.contains(&format!("chown -R 0 {}", theirs.display())),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_dir(&theirs)?.count(), 0, "nothing written");
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
    // Read as the CLI reads it (the file is sealed); the old token is
    // written back plain, as that huddle left it.
    let c = huddle::datadir::DataDir::with_passphrase(
        dir,
        huddle::datadir::Passphrase::File(cli_support::passphrase_file(dir)),
    )
    .certificate()?
    .ok_or_else(|| anyhow::anyhow!("no certificate"))?;
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
