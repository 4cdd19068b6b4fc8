//! `huddle peers` with nobody connected says how the node looks for
//! peers (issue 20, item 7): with mDNS off it does not blame multicast, and
//! it names the addresses it keeps trying.
#![cfg(feature = "cli")]

mod cli_support;

use cli_support::{init, ok, Running};

#[test]
fn peers_with_mdns_off_points_at_the_addresses_tried_not_multicast() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ana = init(tmp.path(), "ana", "Ana Silva", &[])?;
    ok(&ana.dir, &["team", "create", "Ward 7"])?;

    let node = Running::start(&ana, &[])?;
    let out = ok(&ana.dir, &["peers"])?;
    assert!(out.contains("mDNS is off"), "{out}");
    assert!(!out.contains("multicast"), "{out}");
    assert!(out.contains("no address to try"), "{out}");
    assert!(out.contains("--peer <address>"), "{out}");
    drop(node);

    // Port 9 (discard) on loopback: nothing listens, so it stays "trying".
    let dead = "/ip4/127.0.0.1/tcp/9";
    let _node = Running::start(&ana, &[dead.to_owned()])?;
    let out = ok(&ana.dir, &["peers"])?;
    assert!(out.contains("trying 1 address:"), "{out}");
    assert!(out.contains(dead), "{out}");
    // The local API's status says the same, for a screen to show.
    let info = huddle::datadir::DataDir::new(ana.dir.clone())
        .api_info()?
        .expect("the node's api.json");
    let status = serde_json::to_value(huddle::api::client::ApiClient::new(info).status()?)?;
    assert_eq!(status["mdns"], false, "{status}");
    assert_eq!(status["dialling"][0], dead, "{status}");
    Ok(())
}
