//! `huddle audit` on the real binary (issue 24, part 3): a member's actions
//! (unlocking, sending, reading, exporting) reach the administrator's
//! device, `audit verify` passes on the honest trails and names the entry
//! that was altered, removed or reordered in a member's store, and a tail
//! cut from a member's trail is named from the administrator's copy.
#![cfg(feature = "cli")]

mod cli_support;

use std::path::{Path, PathBuf};

use anyhow::Context;
use cli_support::{admit, eventually, fails, init, json, ok, open_store, Device, Running};
use huddle::store::{keys, Store, StoreOp};
use huddle::trail::Entry;
use huddle::DeviceId;
use serde_json::Value;

/// The entries of `device`'s trail as `dir`'s `huddle audit show` lists them.
fn trail_of(dir: &Path, device: &str) -> anyhow::Result<Vec<Value>> {
    let trails = json(dir, &["audit", "show"])?;
    Ok(trails
        .as_array()
        .context("trails")?
        .iter()
        .find(|t| t["device"] == device)
        .map(|t| t["entries"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default())
}

/// A copy of a stopped device's data directory (and its passphrase file).
fn copy_of(dev: &Device, name: &str) -> anyhow::Result<PathBuf> {
    let to = dev.dir.with_file_name(name);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&dev.dir)
        .arg(&to)
        .status()?;
    anyhow::ensure!(status.success(), "cp -a failed");
    Ok(to)
}

/// Changes `dir`'s store with `f`, as someone holding the device and its
/// passphrase could.
fn tamper(
    dir: &Path,
    f: impl FnOnce(&mut huddle::store::SledStore) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut store = open_store(dir)?;
    f(&mut store)?;
    store.flush()?;
    Ok(())
}

fn entry_bytes(
    store: &huddle::store::SledStore,
    d: &DeviceId,
    seq: u64,
) -> anyhow::Result<Vec<u8>> {
    store
        .get(&keys::trail(d, seq))?
        .with_context(|| format!("entry {seq}"))
}

#[test]
fn a_members_trail_reaches_the_administrator_and_tampering_is_named() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ana = init(root.path(), "ana", "Ana Silva", &["charge-nurse", "nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    let ben = init(root.path(), "ben", "Ben Okafor", &["nurse"])?;
    admit(&ana, &ben, "Ben Okafor", &["nurse"])?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    // A wrong passphrase cannot be written down at once (nothing opens
    // without the key): the next unlock records it.
    let wrong = root.path().join("wrong.passphrase");
    std::fs::write(&wrong, "not Ben's passphrase\n")?;
    let refused = cli_support::huddle(&ben.dir)
        .env("HUDDLE_PASSPHRASE_FILE", &wrong)
        .arg("chats")
        .output()?;
    assert!(!refused.status.success());

    let a = Running::start(&ana, &[])?;
    let b = Running::start(&ben, &a.listen)?;
    eventually("Ben to hold the nurses' channel", || {
        Ok(ok(&ben.dir, &["chats"])?.contains("nurse").then_some(()))
    })?;
    ok(&ben.dir, &["send", "nurse", "Bed 12 lactate 4.1", "--stat"])?;
    ok(&ben.dir, &["history", "nurse"])?;
    ok(&ben.dir, &["export", "nurse", "--fhir"])?;

    // Ben's own trail, through his node: his unlock, send, read and export.
    let own = trail_of(&ben.dir, &ben.device)?;
    let kinds: Vec<&str> = own.iter().filter_map(|e| e["action"].as_str()).collect();
    for kind in ["unlock_failed", "unlocked", "sent", "opened", "exported"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let opened = own
        .iter()
        .find(|e| e["action"] == "opened")
        .context("opened")?;
    assert!(
        opened["description"]
            .as_str()
            .unwrap_or("")
            .contains("the CLI"),
        "{opened}"
    );
    // ...held by the administrator's device, entry for entry.
    eventually("Ana's device to hold Ben's trail", || {
        let copy = trail_of(&ana.dir, &ben.device)?;
        Ok((copy.len() >= own.len()).then_some(()))
    })?;
    let copy = trail_of(&ana.dir, &ben.device)?;
    for (mine, held) in own.iter().zip(&copy) {
        assert_eq!(mine["bytes"], held["bytes"]);
    }
    // Ben's device holds nobody's trail but his own.
    assert!(trail_of(&ben.dir, &ana.device)?.is_empty());
    let verified = ok(&ana.dir, &["audit", "verify"])?;
    assert!(
        verified.contains("Ben Okafor") && verified.contains("ok"),
        "{verified}"
    );
    ok(&ben.dir, &["audit", "verify"])?;
    drop(b);

    // Someone with Ben's laptop and passphrase edits his store.
    let ben_id: DeviceId = ben.device.parse().context("device id")?;
    let altered = copy_of(&ben, "ben-altered")?;
    tamper(&altered, |s| {
        let mut bytes = entry_bytes(s, &ben_id, 2)?;
        let at = bytes.len() - 70;
        bytes[at] ^= 1;
        s.apply(&[StoreOp::Put {
            key: keys::trail(&ben_id, 2),
            value: bytes,
        }])?;
        Ok(())
    })?;
    let said = fails(&altered, &["audit", "verify"])?;
    assert!(said.contains("entry 2 was altered"), "{said}");

    let removed = copy_of(&ben, "ben-removed")?;
    tamper(&removed, |s| {
        s.apply(&[StoreOp::Delete {
            key: keys::trail(&ben_id, 1),
        }])?;
        Ok(())
    })?;
    let said = fails(&removed, &["audit", "verify"])?;
    assert!(said.contains("entry 1 was removed"), "{said}");

    let reordered = copy_of(&ben, "ben-reordered")?;
    tamper(&reordered, |s| {
        let (one, two) = (entry_bytes(s, &ben_id, 1)?, entry_bytes(s, &ben_id, 2)?);
        s.apply(&[
            StoreOp::Put {
                key: keys::trail(&ben_id, 1),
                value: two,
            },
            StoreOp::Put {
                key: keys::trail(&ben_id, 2),
                value: one,
            },
        ])?;
        Ok(())
    })?;
    let said = fails(&reordered, &["audit", "verify"])?;
    assert!(said.contains("entry 1 is out of place"), "{said}");

    // His own trail loses its last two entries: it still chains, but the
    // administrator's copy is longer.
    tamper(&ben.dir, |s| {
        let len = s
            .get(&keys::trail_head(&ben_id))?
            .context("head")
            .map(|v| u64::from_be_bytes(v[..8].try_into().expect("8 bytes")))?;
        let last = Entry::decode(&entry_bytes(s, &ben_id, len - 3)?)?;
        s.apply(&[
            StoreOp::Delete {
                key: keys::trail(&ben_id, len - 1),
            },
            StoreOp::Delete {
                key: keys::trail(&ben_id, len - 2),
            },
            StoreOp::Put {
                key: keys::trail_head(&ben_id),
                value: [(len - 2).to_be_bytes().as_slice(), &last.hash()].concat(),
            },
        ])?;
        Ok(())
    })?;
    let _b = Running::start(&ben, &a.listen)?;
    let said = eventually("Ana's device to find Ben's trail cut", || {
        let out = huddle_verify(&ana)?;
        Ok(out
            .contains("shorter than what an administrator holds")
            .then_some(out))
    })?;
    assert!(said.contains("Ben Okafor"), "{said}");
    Ok(())
}

/// `huddle audit verify`'s output and error, whether it passed or not.
fn huddle_verify(dev: &Device) -> anyhow::Result<String> {
    let out = cli_support::huddle(&dev.dir)
        .args(["audit", "verify"])
        .output()?;
    Ok(String::from_utf8(out.stdout)? + &String::from_utf8(out.stderr)?)
}
