//! session.json vectors: the membership gate and a whole session, node against node.

use super::*;

pub(crate) fn node_of(c: &Cast, device: &str, stored: &Stored, with_cert: bool, seed: u64) -> Node {
    let cert = with_cert.then(|| cert(c, device));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = Node::new(
        c.key(device).clone(),
        cert,
        stored.clone(),
        NodeConfig::default(),
        &mut rng,
    )
    .expect("node");
    n.handle(T0, Input::Start);
    n
}

pub(crate) fn sends(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { frame, .. } => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

/// Ana's node: `peer` connects at `now` and sends `frames`; returns every
/// frame Ana's node sends, and whether it disconnected the peer. With
/// `hello_timer`, the hello timer fires after the frames.
pub(crate) fn gate_run(
    c: &Cast,
    stored: &Stored,
    now: u64,
    peer: DeviceId,
    frames: &[Vec<u8>],
    hello_timer: bool,
) -> (Vec<Vec<u8>>, bool) {
    gate_run_as(c, "ana-phone", true, stored, now, peer, frames, hello_timer)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gate_run_as(
    c: &Cast,
    device: &str,
    with_cert: bool,
    stored: &Stored,
    now: u64,
    peer: DeviceId,
    frames: &[Vec<u8>],
    hello_timer: bool,
) -> (Vec<Vec<u8>>, bool) {
    let mut node = node_of(c, device, stored, with_cert, 1);
    let mut out = node.handle(now, Input::PeerConnected { peer });
    for f in frames {
        out.extend(node.handle(
            now,
            Input::Frame {
                peer,
                bytes: f.clone(),
            },
        ));
    }
    if hello_timer {
        out.extend(node.handle(now + 10_000, Input::Timer(Timer::Hello(peer))));
    }
    let disconnected = out
        .iter()
        .any(|o| matches!(o, Output::Disconnect { peer: p, .. } if *p == peer));
    (sends(&out), disconnected)
}

pub(crate) fn hello(cert: &Certificate, version: u8) -> Vec<u8> {
    hello_with(&cert.pass(), version)
}

pub(crate) fn hello_with(pass: &Pass, version: u8) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(1).u8(version).raw(&pass.encode());
    w.finish()
}

pub(crate) fn identify(secret: Secret) -> Vec<u8> {
    Frame::Identify { secret }.encode()
}

pub(crate) struct Gate {
    pub(crate) name: &'static str,
    pub(crate) node_has_certificate: bool,
    pub(crate) revocations: Vec<Revocation>,
    pub(crate) now: u64,
    pub(crate) peer: &'static str,
    pub(crate) frames: Vec<Vec<u8>>,
    pub(crate) hello_timer: bool,
}

pub(crate) fn gates(c: &Cast) -> Vec<Gate> {
    let ben = cert(c, "ben-tablet");
    let chidi = cert(c, "chidi-laptop");
    let mut tampered = ben.pass();
    tampered.expires += 1;
    let mut renamed = ben.secret();
    renamed.roles.push("charge-nurse".into());
    let catalog = Frame::Catalog {
        entries: vec![],
        last: true,
    }
    .encode();
    let v = PROTOCOL_VERSION;
    let g = |name, frames: Vec<Vec<u8>>| Gate {
        name,
        node_has_certificate: true,
        revocations: vec![],
        now: T0,
        peer: "ben-tablet",
        frames,
        hello_timer: false,
    };
    vec![
        g(
            "valid hello and identify: the node answers the hello with its identify, the identify with its catalog",
            vec![hello(&ben, v), identify(ben.secret())],
        ),
        g(
            "valid hello alone: the node sends its identify and waits",
            vec![hello(&ben, v)],
        ),
        g("catalog before hello", vec![catalog.clone()]),
        g("identify before hello", vec![identify(ben.secret())]),
        g(
            "catalog after hello, before identify",
            vec![hello(&ben, v), catalog.clone()],
        ),
        g(
            "identify twice",
            vec![
                hello(&ben, v),
                identify(ben.secret()),
                identify(ben.secret()),
            ],
        ),
        g("hello twice", vec![hello(&ben, v), hello(&ben, v)]),
        g("hello version 1 (before pages)", vec![hello(&ben, 1)]),
        g(
            "hello version 2 (before derived conversation ids)",
            vec![hello(&ben, 2)],
        ),
        g(
            "hello version 3 (a whole certificate in the hello)",
            vec![hello(&ben, 3)],
        ),
        g(
            "hello with another device's pass",
            vec![hello(&cert(c, "ana-phone"), v)],
        ),
        g(
            "hello with another team's pass",
            vec![hello(&cert(c, "ben-tablet@riverside"), v)],
        ),
        g(
            "hello with a pass altered after signing",
            vec![hello_with(&tampered, v)],
        ),
        g(
            "identify with a secret part altered after signing",
            vec![hello(&ben, v), identify(renamed)],
        ),
        g(
            "identify with another certificate's secret part",
            vec![hello(&ben, v), identify(cert(c, "ana-phone").secret())],
        ),
        Gate {
            now: ben.expires,
            ..g(
                "hello with an expired certificate",
                vec![hello(&ben, v)],
            )
        },
        Gate {
            now: ben.issued - huddle::membership::ISSUE_SKEW_MS - 1,
            ..g(
                "hello with a certificate not valid yet",
                vec![hello(&ben, v)],
            )
        },
        Gate {
            revocations: vec![revocations(c)[0].1.clone()],
            ..g("hello from a revoked device", vec![hello(&ben, v)])
        },
        Gate {
            revocations: vec![revocations(c)[1].1.clone()],
            peer: "chidi-laptop",
            ..g(
                "hello from a revoked member's device (found by its member tag)",
                vec![hello(&chidi, v)],
            )
        },
        Gate {
            hello_timer: true,
            ..g("no hello before the hello timeout", vec![])
        },
        Gate {
            hello_timer: true,
            ..g(
                "a hello but no identify before the hello timeout",
                vec![hello(&ben, v)],
            )
        },
        g(
            "a refusal before hello: the node just disconnects",
            vec![Frame::Refuse {
                reason: Reason::Expired,
            }
            .encode()],
        ),
        Gate {
            node_has_certificate: false,
            ..g("the node has no certificate itself", vec![])
        },
    ]
}

pub(crate) fn gen_session(c: &Cast) -> Value {
    let gate: Vec<Value> = gates(c)
        .iter()
        .map(|g| {
            let stored = Stored {
                revocations: g.revocations.iter().map(Revocation::encode).collect(),
                ..Stored::default()
            };
            let (sent, disconnected) = gate_run_as(
                c,
                "ana-phone",
                g.node_has_certificate,
                &stored,
                g.now,
                c.dev(g.peer),
                &g.frames,
                g.hello_timer,
            );
            json!({
                "name": g.name,
                "node": "ana-phone",
                "node_has_certificate": g.node_has_certificate,
                "stored_revocations": g.revocations.iter().map(|r| hex(&r.encode())).collect::<Vec<_>>(),
                "now": g.now,
                "peer": g.peer,
                "received": g.frames.iter().map(|f| hex(f)).collect::<Vec<_>>(),
                "hello_timer_fires": g.hello_timer,
                "sent": sent.iter().map(|f| json!({ "hex": hex(f), "frame": frame_json(&Frame::decode(f).expect("decodes")) })).collect::<Vec<_>>(),
                "disconnected": disconnected,
            })
        })
        .collect();
    let (transcript, conv) = run_session(c);
    json!({
        "description": "The session protocol (protocol/sync.md). 'gate': what Ana's node sends to a peer that connects and sends 'received' (sync.md §2: a hello carries a pass, the identify that follows an accepted one the secret part) (Ana's node was seeded with ChaCha8 seed 1 and has published its certificate in its team document, so its catalog digests are informative), and whether it disconnects. 'transcript' (informative): every frame of a session between Ana's and Ben's nodes (seeds 1 and 2), Ana having created the group conversation and sent an urgent message before they met; after the catalog exchange, Ben learns the header, syncs, writes a delivered receipt when its receipts timer fires, and acknowledges.",
        "keys": keys_json(c),
        "certificates": {
            "ana-phone": hex(&cert(c, "ana-phone").encode()),
            "ben-tablet": hex(&cert(c, "ben-tablet").encode()),
        },
        "gate": gate,
        "transcript": {
            "conversation": conv.to_hex(),
            "frames": transcript,
        },
    })
}

/// Ana and Ben meet; returns every frame in delivery order.
pub(crate) fn run_session(c: &Cast) -> (Vec<Value>, ConversationId) {
    let names = ["ana-phone", "ben-tablet"];
    let ids = [c.dev(names[0]), c.dev(names[1])];
    let mut nodes = [
        node_of(c, names[0], &Stored::default(), true, 1),
        node_of(c, names[1], &Stored::default(), true, 2),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut now = T0 + 1_000;
    let (reply, _) = nodes[0].command(
        now,
        &mut rng,
        Command::CreateConversation {
            kind: ConversationKind::Group {
                title: "Ward 7 handover".into(),
                members: [member("ana"), member("ben")].into_iter().collect(),
            },
        },
    );
    let Ok(Reply::Conversation(conv)) = reply else {
        panic!("{reply:?}")
    };
    let (reply, _) = nodes[0].command(
        now,
        &mut rng,
        Command::Send {
            conversation: conv,
            body: "Bed 4 BP 80/40, please review".into(),
            priority: Priority::Urgent,
            reply_to: None,
            fields: Default::default(),
        },
    );
    let Ok(Reply::Message(msg)) = reply else {
        panic!("{reply:?}")
    };
    now += 1_000;

    let mut queue: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
    let mut timers: BTreeSet<(u64, usize)> = BTreeSet::new();
    let mut log = Vec::new();
    let enqueue = |from: usize,
                   out: Vec<Output>,
                   queue: &mut VecDeque<(usize, Vec<u8>)>,
                   timers: &mut BTreeSet<(u64, usize)>| {
        for o in out {
            match o {
                Output::Send { frame, .. } => queue.push_back((from, frame)),
                Output::SetTimer {
                    timer: Timer::Receipts,
                    at,
                } => {
                    timers.insert((at, from));
                }
                Output::Disconnect { peer, reason } => {
                    panic!("{} disconnected {peer:?}: {reason}", names[from])
                }
                _ => {}
            }
        }
    };
    for i in 0..2 {
        let out = nodes[i].handle(now, Input::PeerConnected { peer: ids[1 - i] });
        enqueue(i, out, &mut queue, &mut timers);
    }
    let mut acked = false;
    loop {
        while let Some((from, bytes)) = queue.pop_front() {
            let to = 1 - from;
            log.push(json!({
                "from": names[from],
                "to": names[to],
                "hex": hex(&bytes),
                "frame": frame_json(&Frame::decode(&bytes).expect("decodes")),
            }));
            let out = nodes[to].handle(
                now,
                Input::Frame {
                    peer: ids[from],
                    bytes,
                },
            );
            enqueue(to, out, &mut queue, &mut timers);
        }
        if let Some((at, who)) = timers.pop_first() {
            now = now.max(at);
            let out = nodes[who].handle(now, Input::Timer(Timer::Receipts));
            enqueue(who, out, &mut queue, &mut timers);
        } else if !acked {
            acked = true;
            now += 5_000;
            let (reply, out) = nodes[1].command(
                now,
                &mut rng,
                Command::Ack {
                    conversation: conv,
                    message: msg,
                },
            );
            reply.expect("ack");
            enqueue(1, out, &mut queue, &mut timers);
        } else {
            break;
        }
    }
    let digest = |n: &Node| {
        n.conversation(&conv)
            .expect("conversation")
            .replica()
            .heads_digest()
    };
    assert_eq!(digest(&nodes[0]), digest(&nodes[1]), "converged");
    assert_eq!(nodes[0].team_heads(), nodes[1].team_heads(), "converged");
    (log, conv)
}

#[test]
fn session_vectors() {
    let v = load("session.json");
    let (_, _, devices) = keys_from_json(get(&v, "keys"));
    let c = Cast::new();
    for (name, cert_hex) in get(&v, "certificates").as_object().expect("certificates") {
        let cert = Certificate::decode(&unhex(cert_hex.as_str().expect("hex"))).expect("decodes");
        assert_eq!(cert.device, devices[name].device_id());
    }
    for g in list(&v, "gate") {
        let stored = Stored {
            revocations: list(g, "stored_revocations")
                .iter()
                .map(|r| unhex(r.as_str().expect("hex")))
                .collect(),
            ..Stored::default()
        };
        let received: Vec<Vec<u8>> = list(g, "received")
            .iter()
            .map(|f| unhex(f.as_str().expect("hex")))
            .collect();
        let (sent, disconnected) = gate_run_as(
            &c,
            st(g, "node"),
            flag(g, "node_has_certificate"),
            &stored,
            num(g, "now"),
            devices[st(g, "peer")].device_id(),
            &received,
            flag(g, "hello_timer_fires"),
        );
        let expected: Vec<&Value> = list(g, "sent").iter().collect();
        assert_eq!(sent.len(), expected.len(), "{}", st(g, "name"));
        for (s, e) in sent.iter().zip(expected) {
            let frame = Frame::decode(&bytes(e, "hex")).expect("decodes");
            assert_eq!(frame_json(&frame), *get(e, "frame"));
            // The catalog's digests depend on the node's random actor; the
            // other frames must match byte for byte.
            if st(get(e, "frame"), "type") != "catalog" {
                assert_eq!(hex(s), st(e, "hex"), "{}", st(g, "name"));
            } else {
                let Ok(Frame::Catalog { entries, last }) = Frame::decode(s) else {
                    panic!("a catalog")
                };
                assert!(last);
                assert_eq!(entries.len(), list(get(e, "frame"), "entries").len());
            }
        }
        assert_eq!(disconnected, flag(g, "disconnected"), "{}", st(g, "name"));
    }
    for f in list(get(&v, "transcript"), "frames") {
        let b = bytes(f, "hex");
        let frame = Frame::decode(&b).expect("decodes");
        assert_eq!(frame_json(&frame), *get(f, "frame"));
        assert_eq!(frame.encode(), b);
    }
}
