//! A stock libp2p peer — ping and identify only, no huddle protocol — can
//! connect to a huddle node, ping it and read its identify record. The node
//! does not cut such a peer for declining `/huddle/sync/2`; the hello
//! timeout decides, as protocol/transport.md says. (A js-libp2p version of
//! this check lives in tests/interop/.)
#![cfg(feature = "net")]

#[path = "net_common.rs"]
mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, ping, Swarm};

#[derive(NetworkBehaviour)]
struct Stock {
    ping: ping::Behaviour,
    identify: identify::Behaviour,
}

fn stock_swarm() -> Swarm<Stock> {
    client_swarm(None, |k| Stock {
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200))),
        identify: identify::Behaviour::new(identify::Config::new(
            "/ipfs/id/1.0.0".into(),
            k.public(),
        )),
    })
}

#[tokio::test]
async fn a_stock_libp2p_peer_can_ping_and_identify_a_node() {
    let team = Team::new(41);
    let ana = team.member(42, "Ana", &["nurse"]);
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&ana, dir.path(), vec![]).await;

    let mut swarm = stock_swarm();
    swarm.dial(node.addr.clone()).expect("dial");
    let (mut pings, mut record) = (0, None);
    let outcome = tokio::time::timeout(Duration::from_secs(8), async {
        while pings < 3 || record.is_none() {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(StockEvent::Ping(ping::Event { result: Ok(_), .. })) => {
                    pings += 1
                }
                SwarmEvent::Behaviour(StockEvent::Identify(identify::Event::Received {
                    info,
                    ..
                })) => record = Some(info),
                SwarmEvent::ConnectionClosed { cause, .. } => {
                    panic!("the node closed the connection after {pings} pings: {cause:?}")
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "no 3 pings and an identify record within 8 s ({pings} pings)"
    );
    let info = record.unwrap();
    assert!(
        info.agent_version.starts_with("huddle/"),
        "{}",
        info.agent_version
    );
    let protocols: Vec<String> = info.protocols.iter().map(|p| p.to_string()).collect();
    assert!(
        protocols.contains(&huddle::wire::PROTOCOL_ID.to_string()),
        "{protocols:?}"
    );
    assert!(
        protocols.iter().any(|p| p.starts_with("/ipfs/ping/")),
        "{protocols:?}"
    );
    // It never proved membership, so it holds nothing of ours.
    assert_eq!(node.verified_peers().await, 0);
    node.stop().await;
}
