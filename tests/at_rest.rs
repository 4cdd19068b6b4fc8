//! Encryption at rest (issue 24; protocol/storage.md §8), shown on the real
//! binary: after two nodes have synced a conversation and stopped, no file
//! anywhere in either data directory holds a message body, a member's
//! name, a role, a group title or an attachment's bytes. The same run with `init --unencrypted`
//! finds every one of them: the positive control that shows the scan can
//! see them (Automerge compresses some columns and could hide a marker on
//! its own).
#![cfg(feature = "cli")]

mod cli_support;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use cli_support::{admit, eventually, init_with, json, ok, Device, Running};

const BODY: &str = "Qvbodymarker Bed 4 lactate 4.1";
const NAME: &str = "Qvnamemarker Okafor";
const ROLE: &str = "qvrolemarker";
const TITLE: &str = "Qvtitlemarker sepsis review";
const FILE: &str = "Qvblobmarker handover: bed 4 lactate trend\n";
/// The parts of each marker that must not be found (the name and title
/// are checked by their unusual first word, which survives any encoding
/// of the whole).
const MARKERS: [&str; 5] = [
    "Qvbodymarker",
    "Qvnamemarker",
    "qvrolemarker",
    "Qvtitlemarker",
    "Qvblobmarker",
];

/// Two devices sync a group conversation, then both stop; returns the data
/// directories.
fn ward(root: &Path, extra: &[&str]) -> anyhow::Result<Vec<Device>> {
    let ana = init_with(root, "ana", "Ana Silva", &["nurse"], extra)?;
    let ben = init_with(root, "ben", NAME, &[ROLE], extra)?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    admit(&ana, &ben, NAME, &[ROLE])?;
    let mut a = Running::start(&ana, &[])?;
    let mut b = Running::start(&ben, &a.listen)?;
    // Ana's node learns Ben's member when his device connects.
    let chat = eventually("Ana's node to know Ben", || {
        match json(&ana.dir, &["chat", "new", "--group", TITLE, "--with", NAME]) {
            Ok(chat) => Ok(Some(chat)),
            Err(e) if e.to_string().contains("no member") => Ok(None),
            Err(e) => Err(e),
        }
    })?;
    let id = chat["id"].as_str().context("a conversation id")?.to_owned();
    let file = root.join("handover.txt");
    std::fs::write(&file, FILE)?;
    let file = file.to_str().context("a UTF-8 path")?;
    ok(&ana.dir, &["send", &id, BODY, "--attach", file])?;
    // The attachment is small: Ben's node fetches it with the message.
    eventually("Ben to hold Ana's message and its attachment", || {
        let history = json(&ben.dir, &["history", &id])?;
        let held = history
            .as_array()
            .and_then(|h| h.iter().find(|m| m["body"] == BODY));
        Ok(held
            .filter(|m| m["attachments"][0]["held"] == true)
            .map(|_| ()))
    })?;
    for node in [&mut a, &mut b] {
        stop(node)?;
    }
    Ok(vec![ana, ben])
}

/// Stops a node as Ctrl-C does and waits for it to exit.
fn stop(node: &mut Running) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-INT", &node.pid().to_string()])
        .status()?;
    ensure!(status.success(), "kill -INT failed");
    let exit = eventually("the node to stop", || node.exited())?;
    ensure!(
        exit.success(),
        "the node exited with {exit}: {}",
        node.stderr()
    );
    Ok(())
}

/// Every regular file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Each marker, with the files (in any of `devices`) whose bytes hold it.
fn find_markers(devices: &[Device]) -> anyhow::Result<Vec<(&'static str, Vec<PathBuf>)>> {
    let mut all = Vec::new();
    for d in devices {
        files(&d.dir, &mut all)?;
    }
    ensure!(all.len() > 5, "the data directories hold files: {all:?}");
    let mut found: Vec<(&str, Vec<PathBuf>)> = MARKERS.iter().map(|m| (*m, Vec::new())).collect();
    for path in &all {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        for (marker, hits) in &mut found {
            if bytes.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                hits.push(path.clone());
            }
        }
    }
    Ok(found)
}

#[test]
fn no_file_of_an_encrypted_data_directory_holds_patient_details() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let devices = ward(root.path(), &[])?;
    for (marker, hits) in find_markers(&devices)? {
        assert!(hits.is_empty(), "{marker} is readable in {hits:?}");
    }
    Ok(())
}

#[test]
fn the_positive_control_finds_every_marker_in_an_unencrypted_one() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let devices = ward(root.path(), &["--unencrypted"])?;
    for (marker, hits) in find_markers(&devices)? {
        assert!(
            !hits.is_empty(),
            "{marker} is in no file of an unencrypted data directory"
        );
    }
    Ok(())
}

/// A data directory from before encryption at rest (or made with
/// `--unencrypted`) is encrypted by `huddle passphrase set`: its store is
/// rewritten into a new encrypted database and the plain one removed,
/// nothing is lost, and no marker is left in any file. Then `passphrase
/// change` wraps the same data key under a new passphrase.
#[test]
fn passphrase_set_upgrades_a_plain_directory_and_change_rewraps_it() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let devices = ward(root.path(), &["--unencrypted"])?;
    let ben = &devices[1];
    let before = json(&ben.dir, &["history", TITLE])?;
    ok(&ben.dir, &["passphrase", "set"])?;
    assert!(ben.dir.join("key.wrap").exists() && !ben.dir.join("db").exists());
    let mut all = Vec::new();
    files(&ben.dir, &mut all)?;
    for path in &all {
        let bytes = std::fs::read(path)?;
        for marker in MARKERS {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{marker} is readable in {} after the upgrade",
                path.display()
            );
        }
    }
    assert_eq!(json(&ben.dir, &["history", TITLE])?, before, "nothing lost");
    // The attachment's bytes come back whole.
    let msg = before[0]["id"].as_str().context("a message id")?;
    let out = root.path().join("fetched");
    std::fs::create_dir(&out)?;
    ok(
        &ben.dir,
        &["fetch", msg, "--out", out.to_str().context("UTF-8")?],
    )?;
    assert_eq!(std::fs::read_to_string(out.join("handover.txt"))?, FILE);

    // A new passphrase: the old one no longer opens it, the new one does.
    let new = root.path().join("new.passphrase");
    std::fs::write(&new, "another long passphrase\n")?;
    ok(
        &ben.dir,
        &[
            "passphrase",
            "change",
            "--new-file",
            new.to_str().context("UTF-8")?,
        ],
    )?;
    let refused = cli_support::huddle(&ben.dir).args(["chats"]).output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("wrong passphrase"));
    let with_new = cli_support::huddle(&ben.dir)
        .env("HUDDLE_PASSPHRASE_FILE", &new)
        .args(["--json", "history", TITLE])
        .output()?;
    assert!(
        with_new.status.success(),
        "{}",
        String::from_utf8_lossy(&with_new.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&with_new.stdout)?,
        before
    );
    Ok(())
}

/// A command carried out by the running node needs no passphrase (the node
/// holds the data key); without a node, the same command says what to give.
#[test]
fn a_running_node_serves_commands_without_the_passphrase() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ana = cli_support::init(root.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    let bare = |args: &[&str]| {
        cli_support::huddle(&ana.dir)
            .env_remove("HUDDLE_PASSPHRASE_FILE")
            .args(args)
            .output()
    };
    let mut node = Running::start(&ana, &[])?;
    for args in [
        &["send", "nurse", "Bed 4 obs stable"][..],
        &["chats"],
        &["history", "nurse"],
        &["team", "show"],
        &["whoami"],
        &["oncall", "set", "nurse", "Ana Silva", "--for", "12h"],
    ] {
        let out = bare(args)?;
        assert!(
            out.status.success(),
            "{args:?} without a passphrase: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop(&mut node)?;
    let out = bare(&["chats"])?;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("is encrypted") && said.contains("--passphrase-file"),
        "{said}"
    );
    Ok(())
}
