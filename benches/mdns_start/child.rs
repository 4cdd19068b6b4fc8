//! The child: one `huddle` node inside a network namespace, reporting the
//! moment it starts and the moment it discovers the other.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    A,
    B,
}

/// One node inside a namespace. Protocol on stdout, one line each:
/// `T <what> <µs since the epoch>`, `CONN <found_by> <since_ms> <addr>`,
/// `READY` (A), `DONE` (B). Stops when stdin closes.
pub(crate) fn child(role: Role) {
    let t_main = now_us();
    if let Ok(filter) = std::env::var(LOG_ENV) {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("seed from the parent");
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("data dir from the parent"));
    let (ana, ben) = identities(seed);
    let (me, members) = match role {
        Role::A => (&ana, [ana.member, ben.member]),
        Role::B => (&ben, [ana.member, ben.member]),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // The parent closes our stdin to stop us.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = stop_tx.send(());
        });
        let t_start = now_us();
        let store = SledStore::open(&dir).expect("open store");
        let config = ShellConfig {
            key: me.key.clone(),
            certificate: Some(me.cert.clone()),
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().expect("multiaddr")],
            peers: vec![],
            mdns: true,
            node: NodeConfig::default(),
        };
        let (handle, mut task) = huddle::net::start(config, store).await.expect("start node");
        let t_started = now_us();
        // The loop has not run yet (current-thread runtime): nothing missed.
        let mut events = handle.subscribe();
        println!("T main {t_main}");
        println!("T start {t_start}");
        println!("T started {t_started}");
        if role == Role::A {
            let Reply::Conversation(conversation) = handle
                .command(Command::CreateConversation {
                    kind: ConversationKind::Direct { members },
                })
                .await
                .expect("create conversation")
            else {
                panic!("no conversation id")
            };
            handle
                .command(Command::Send {
                    conversation,
                    body: "bed 12 obs stable, please review at 9".into(),
                    priority: Priority::Routine,
                    reply_to: None,
                    fields: Default::default(),
                })
                .await
                .expect("send");
            println!("READY {}", now_us());
        }
        let h = handle.clone();
        let watcher = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let (mut joined, mut message) = (false, role == Role::A);
            loop {
                match events.recv().await {
                    Ok(Event::PeerJoined { .. }) if !joined => {
                        let t = now_us();
                        joined = true;
                        println!("T joined {t}");
                        for c in h.connections().await.unwrap_or_default() {
                            println!("CONN {:?} {} {}", c.found_by, c.since_ms, c.addr);
                        }
                    }
                    Ok(Event::MessageAdded { local: false, .. }) if !message => {
                        let t = now_us();
                        message = true;
                        println!("T message {t}");
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => println!("WARN lagged {n}"),
                    Err(RecvError::Closed) => return,
                }
                if joined && message {
                    println!("DONE");
                    return;
                }
            }
        });
        tokio::select! {
            _ = stop_rx => {}
            r = &mut task => {
                eprintln!("the node stopped by itself: {r:?}");
                std::process::exit(1);
            }
        }
        watcher.abort();
        let _ = tokio::time::timeout(CHILD_SHUTDOWN, handle.shutdown()).await;
        let _ = tokio::time::timeout(CHILD_SHUTDOWN, task).await;
    });
}
