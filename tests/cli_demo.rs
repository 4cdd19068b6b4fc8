//! `huddle demo --exit` tells its whole story (a ward on 127.0.0.1, no mDNS)
//! and proves identical histories on every device.
#![cfg(feature = "cli")]

mod cli_support;

use std::time::Duration;

#[test]
fn the_demo_story_ends_with_identical_histories() -> anyhow::Result<()> {
    let out = assert_cmd::Command::cargo_bin("huddle")?
        .args(["--json", "demo", "--exit", "--nodes", "3"])
        .env_remove("RUST_LOG")
        .timeout(Duration::from_secs(120))
        .output()?;
    let story = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{story}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(summary["identical"], true, "{summary}");
    assert_eq!(summary["nodes"], 3);
    for c in summary["conversations"].as_array().expect("conversations") {
        let devices = c["devices"].as_array().expect("devices");
        assert!(devices.len() >= 2, "{c}");
        assert!(
            devices.iter().all(|d| d["digest"] == devices[0]["digest"]),
            "{c}"
        );
    }
    assert!(story.contains("merged in"), "{story}");
    Ok(())
}
