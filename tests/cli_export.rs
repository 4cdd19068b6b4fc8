//! `huddle export` on the real binary (issue 24): the FHIR and plain forms
//! of a conversation, from the store when no node runs and through the
//! running node's API when one does (the same export either way), `--since`,
//! and `--out` that never writes over a file. The FHIR mapping itself is
//! validated against the official R4 schema in `tests/fhir_export.rs`.
#![cfg(feature = "cli")]

mod cli_support;

use anyhow::Context;
use cli_support::{init, json, ok, Running};
use serde_json::Value;

#[test]
fn a_conversation_exports_as_fhir_and_as_huddle_json() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ana = init(root.path(), "ana", "Ana Silva", &["nurse"])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;
    ok(&ana.dir, &["chat", "new", "--role", "nurse"])?;
    ok(&ana.dir, &["send", "nurse", "Bed 4 obs stable"])?;
    ok(&ana.dir, &["send", "nurse", "Bed 12 lactate 4.1", "--stat"])?;

    // No node: from the store.
    let offline: Value = serde_json::from_str(&ok(&ana.dir, &["export", "nurse", "--fhir"])?)?;
    assert_eq!(offline["resourceType"], "Bundle");
    assert_eq!(offline["type"], "collection");
    let entries = offline["entry"].as_array().context("entries")?;
    let comms: Vec<&Value> = entries
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Communication")
        .collect();
    assert_eq!(comms.len(), 2);
    assert!(comms.iter().any(|c| c["priority"] == "stat"));
    assert!(comms.iter().any(|c| c["priority"] == "routine"));
    let provenances = entries
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Provenance")
        .count();
    assert_eq!(provenances, 2, "a Provenance per message");

    // huddle's own form, and --since in the future keeps nothing.
    let plain = json(&ana.dir, &["export", "nurse"])?;
    assert_eq!(plain["format"], "huddle-export/1");
    assert_eq!(plain["messages"].as_array().context("messages")?.len(), 2);
    let none = json(&ana.dir, &["export", "nurse", "--since", "2999-01-01"])?;
    assert_eq!(none["messages"].as_array().context("messages")?.len(), 0);
    let bad = cli_support::fails(&ana.dir, &["export", "nurse", "--since", "yesterday"])?;
    assert!(bad.contains("is not a duration"), "{bad}");

    // Through the running node: the same resources (the bundle's own id
    // and time stamp are the export's).
    let _node = Running::start(&ana, &[])?;
    let out = root.path().join("ward7.fhir.json");
    let out_s = out.to_str().context("UTF-8")?;
    ok(&ana.dir, &["export", "nurse", "--fhir", "--out", out_s])?;
    let online: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    assert_eq!(online["entry"], offline["entry"]);
    // --out keeps an existing file.
    std::fs::write(&out, "kept")?;
    let refused = cli_support::fails(&ana.dir, &["export", "nurse", "--fhir", "--out", out_s])?;
    assert!(refused.contains("exists already"), "{refused}");
    assert_eq!(std::fs::read_to_string(&out)?, "kept");
    Ok(())
}
