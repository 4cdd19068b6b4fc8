//! Field codecs between huddle's types and the JSON of the vectors.

use super::*;

pub(crate) fn cert_json(c: &Certificate) -> Value {
    json!({
        "team": hex(&c.team.0),
        "team_name": c.team_name,
        "member": c.member.to_hex(),
        "display_name": c.display_name,
        "roles": c.roles,
        "device": hex(&c.device.0),
        "device_peer_id": c.device.to_string(),
        "issued": c.issued,
        "expires": c.expires,
        "salt": hex(&c.salt),
        "signature": hex(&c.signature),
    })
}

pub(crate) fn pass_json(p: &Pass) -> Value {
    json!({
        "device": hex(&p.device.0),
        "issued": p.issued,
        "expires": p.expires,
        "member_tag": hex(&p.member_tag),
        "secret_digest": hex(&p.secret_digest),
        "signature": hex(&p.signature),
    })
}

pub(crate) fn pass_from_json(v: &Value) -> Pass {
    Pass {
        device: DeviceId(fixed(v, "device")),
        issued: num(v, "issued"),
        expires: num(v, "expires"),
        member_tag: fixed(v, "member_tag"),
        secret_digest: fixed(v, "secret_digest"),
        signature: fixed(v, "signature"),
    }
}

pub(crate) fn secret_json(s: &Secret) -> Value {
    json!({
        "salt": hex(&s.salt),
        "team_name": s.team_name,
        "member": s.member.to_hex(),
        "display_name": s.display_name,
        "roles": s.roles,
    })
}

pub(crate) fn secret_from_json(v: &Value) -> Secret {
    Secret {
        salt: fixed(v, "salt"),
        team_name: st(v, "team_name").to_owned(),
        member: MemberId(fixed(v, "member")),
        display_name: st(v, "display_name").to_owned(),
        roles: list(v, "roles")
            .iter()
            .map(|r| r.as_str().expect("role").to_owned())
            .collect(),
    }
}

pub(crate) fn cert_from_json(v: &Value) -> Certificate {
    let c = Certificate {
        team: TeamId(fixed(v, "team")),
        team_name: st(v, "team_name").to_owned(),
        member: MemberId(fixed(v, "member")),
        display_name: st(v, "display_name").to_owned(),
        roles: list(v, "roles")
            .iter()
            .map(|r| r.as_str().expect("role").to_owned())
            .collect(),
        device: DeviceId(fixed(v, "device")),
        issued: num(v, "issued"),
        expires: num(v, "expires"),
        salt: fixed(v, "salt"),
        signature: fixed(v, "signature"),
    };
    assert_eq!(
        st(v, "device_peer_id")
            .parse::<DeviceId>()
            .expect("peer id"),
        c.device
    );
    c
}

pub(crate) fn hlc_json(h: Hlc) -> Value {
    json!({ "millis": h.millis(), "counter": h.counter() })
}

pub(crate) fn hlc_from_json(v: &Value) -> Hlc {
    let counter = u16::try_from(num(v, "counter")).expect("16-bit counter");
    let millis = num(v, "millis");
    assert!(millis < 1 << 48, "48-bit milliseconds");
    Hlc::new(millis, counter)
}

pub(crate) fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Routine => "routine",
        Priority::Urgent => "urgent",
        Priority::Stat => "stat",
    }
}

pub(crate) fn priority_from(s: &str) -> Priority {
    match s {
        "routine" => Priority::Routine,
        "urgent" => Priority::Urgent,
        "stat" => Priority::Stat,
        p => panic!("unknown priority {p}"),
    }
}

pub(crate) fn message_json(m: &Message) -> Value {
    json!({
        "author_member": m.author_member.to_hex(),
        "author_device": hex(&m.author_device.0),
        "hlc": hlc_json(m.hlc),
        "priority": priority_name(m.priority),
        "reply_to": m.reply_to.map(|r| r.to_hex()),
        "body": m.body,
        "tagged_fields": tagged_fields_json(&m.fields),
        "signature": hex(&m.signature),
    })
}

fn members_json(ms: &[MemberId]) -> Value {
    ms.iter().map(|m| m.to_hex()).collect::<Vec<_>>().into()
}

fn member_list(v: &Value, key: &str) -> Vec<MemberId> {
    list(v, key)
        .iter()
        .map(|m| m.as_str().expect("member").parse().expect("member id"))
        .collect()
}

pub(crate) fn ack_by_json(a: &AckBy) -> Value {
    match a {
        AckBy::Any => json!({ "who": "any" }),
        AckBy::All => json!({ "who": "all" }),
        AckBy::Member(m) => json!({ "who": "member", "member": m.to_hex() }),
    }
}

pub(crate) fn ack_by_from_json(v: &Value) -> AckBy {
    match st(v, "who") {
        "any" => AckBy::Any,
        "all" => AckBy::All,
        "member" => AckBy::Member(MemberId(fixed(v, "member"))),
        w => panic!("unknown ack-by {w}"),
    }
}

/// A message's tagged fields (sync.md §7.6); absent ones are null.
pub(crate) fn tagged_fields_json(f: &Fields) -> Value {
    json!({
        "ack_by": f.ack_by.as_ref().map(ack_by_json),
        "escalation": f.escalation.as_ref().map(|e| json!({
            "conversation": e.conversation.to_hex(),
            "message": e.message.to_hex(),
            "level": e.level,
            "priority": priority_name(e.priority),
            "author": e.author.to_hex(),
            "waiting": members_json(&e.waiting),
            "unacked_ms": e.unacked_ms,
        })),
        "reminder": f.reminder.as_ref().map(|r| json!({
            "due_ms": r.due_ms,
            "targets": members_json(&r.targets),
            "every_ms": r.every_ms,
            "times": r.times,
        })),
        "attachments": f.attachments.iter().map(attachment_json).collect::<Vec<_>>(),
    })
}

pub(crate) fn attachment_json(a: &Attachment) -> Value {
    json!({
        "hash": a.hash.to_hex(),
        "size": a.size,
        "media_type": a.media_type,
        "name": a.name,
        "thumbnail": hex(&a.thumbnail),
    })
}

pub(crate) fn attachment_from_json(v: &Value) -> Attachment {
    Attachment {
        hash: BlobHash(fixed(v, "hash")),
        size: num(v, "size"),
        media_type: st(v, "media_type").to_owned(),
        name: st(v, "name").to_owned(),
        thumbnail: unhex(st(v, "thumbnail")),
    }
}

pub(crate) fn tagged_fields_from_json(v: &Value) -> Fields {
    Fields {
        ack_by: match get(v, "ack_by") {
            Value::Null => None,
            a => Some(ack_by_from_json(a)),
        },
        escalation: match get(v, "escalation") {
            Value::Null => None,
            e => Some(Escalation {
                conversation: ConversationId(fixed(e, "conversation")),
                message: MessageId(fixed(e, "message")),
                level: get(e, "level").as_u64().expect("level") as u8,
                priority: priority_from(st(e, "priority")),
                author: MemberId(fixed(e, "author")),
                waiting: member_list(e, "waiting"),
                unacked_ms: get(e, "unacked_ms").as_u64().expect("ms"),
            }),
        },
        reminder: match get(v, "reminder") {
            Value::Null => None,
            r => Some(Reminder {
                due_ms: get(r, "due_ms").as_u64().expect("ms"),
                targets: member_list(r, "targets"),
                every_ms: get(r, "every_ms").as_u64().expect("ms"),
                times: get(r, "times").as_u64().expect("times") as u16,
            }),
        },
        attachments: list(v, "attachments")
            .iter()
            .map(attachment_from_json)
            .collect(),
    }
}

pub(crate) fn message_from_json(v: &Value) -> Message {
    Message {
        author_member: MemberId(fixed(v, "author_member")),
        author_device: DeviceId(fixed(v, "author_device")),
        hlc: hlc_from_json(get(v, "hlc")),
        priority: priority_from(st(v, "priority")),
        reply_to: match get(v, "reply_to") {
            Value::Null => None,
            _ => Some(MessageId(fixed(v, "reply_to"))),
        },
        body: st(v, "body").to_owned(),
        fields: tagged_fields_from_json(get(v, "tagged_fields")),
        signature: fixed(v, "signature"),
    }
}

pub(crate) fn kind_name(k: ReceiptKind) -> &'static str {
    match k {
        ReceiptKind::Delivered => "delivered",
        ReceiptKind::Read => "read",
        ReceiptKind::Ack => "ack",
        ReceiptKind::Done { .. } => "done",
        ReceiptKind::Snooze { .. } => "snooze",
    }
}

pub(crate) fn receipt_json(r: &Receipt) -> Value {
    let (occurrence, until) = match r.kind {
        ReceiptKind::Done { occurrence } => (Some(occurrence), None),
        ReceiptKind::Snooze { occurrence, until } => (Some(occurrence), Some(until)),
        _ => (None, None),
    };
    json!({
        "kind": kind_name(r.kind),
        "occurrence": occurrence,
        "until": until,
        "member": r.member.to_hex(),
        "device": hex(&r.device.0),
        "upto": { "hlc": hlc_json(r.upto.0), "message": r.upto.1.to_hex() },
        "at": hlc_json(r.at),
        "signature": hex(&r.signature),
    })
}

pub(crate) fn receipt_from_json(v: &Value) -> Receipt {
    let upto = get(v, "upto");
    Receipt {
        kind: match st(v, "kind") {
            "delivered" => ReceiptKind::Delivered,
            "read" => ReceiptKind::Read,
            "ack" => ReceiptKind::Ack,
            "done" => ReceiptKind::Done {
                occurrence: get(v, "occurrence").as_u64().expect("occurrence") as u16,
            },
            "snooze" => ReceiptKind::Snooze {
                occurrence: get(v, "occurrence").as_u64().expect("occurrence") as u16,
                until: get(v, "until").as_u64().expect("until"),
            },
            k => panic!("unknown receipt kind {k}"),
        },
        member: MemberId(fixed(v, "member")),
        device: DeviceId(fixed(v, "device")),
        upto: (
            hlc_from_json(get(upto, "hlc")),
            MessageId(fixed(upto, "message")),
        ),
        at: hlc_from_json(get(v, "at")),
        signature: fixed(v, "signature"),
    }
}

pub(crate) fn header_json(h: &ConversationHeader) -> Value {
    let kind = match &h.kind {
        ConversationKind::Direct { members } => json!({
            "type": "direct",
            "members": [members[0].to_hex(), members[1].to_hex()],
        }),
        ConversationKind::Group { title, members } => json!({
            "type": "group",
            "title": title,
            "members": members.iter().map(|m| m.to_hex()).collect::<Vec<_>>(),
        }),
        ConversationKind::Role { role } => json!({ "type": "role", "role": role }),
    };
    json!({
        "id": h.id.to_hex(),
        "kind": kind,
        "creator": hex(&h.creator.0),
        "created": h.created,
        "signature": hex(&h.signature),
    })
}

pub(crate) fn members_from_json(v: &Value) -> Vec<MemberId> {
    list(v, "members")
        .iter()
        .map(|m| m.as_str().expect("member").parse().expect("member id"))
        .collect()
}

pub(crate) fn header_from_json(v: &Value) -> ConversationHeader {
    let k = get(v, "kind");
    let kind = match st(k, "type") {
        "direct" => {
            let m = members_from_json(k);
            ConversationKind::Direct {
                members: [m[0], m[1]],
            }
        }
        "group" => ConversationKind::Group {
            title: st(k, "title").to_owned(),
            members: members_from_json(k).into_iter().collect(),
        },
        "role" => ConversationKind::Role {
            role: st(k, "role").to_owned(),
        },
        t => panic!("unknown conversation kind {t}"),
    };
    ConversationHeader {
        id: ConversationId(fixed(v, "id")),
        kind,
        creator: DeviceId(fixed(v, "creator")),
        created: num(v, "created"),
        signature: fixed(v, "signature"),
    }
}

pub(crate) fn revocation_json(r: &Revocation) -> Value {
    let target = match r.target {
        RevocationTarget::Device(d) => json!({ "type": "device", "device": hex(&d.0) }),
        RevocationTarget::Member(m) => json!({ "type": "member", "member": m.to_hex() }),
    };
    json!({
        "team": hex(&r.team.0),
        "target": target,
        "issued": r.issued,
        "signature": hex(&r.signature),
    })
}

pub(crate) fn revocation_from_json(v: &Value) -> Revocation {
    let t = get(v, "target");
    Revocation {
        team: TeamId(fixed(v, "team")),
        target: match st(t, "type") {
            "device" => RevocationTarget::Device(DeviceId(fixed(t, "device"))),
            "member" => RevocationTarget::Member(MemberId(fixed(t, "member"))),
            x => panic!("unknown revocation target {x}"),
        },
        issued: num(v, "issued"),
        signature: fixed(v, "signature"),
    }
}

pub(crate) fn frame_json(f: &Frame) -> Value {
    match f {
        Frame::Hello { version, pass } => json!({
            "type": "hello",
            "version": version,
            "pass": pass_json(pass),
        }),
        Frame::Identify { secret } => json!({
            "type": "identify",
            "secret": secret_json(secret),
        }),
        Frame::Refuse { reason } => json!({ "type": "refuse", "reason": reason.code() }),
        Frame::Revoked { revocation } => {
            json!({ "type": "revoked", "revocation": hex(&revocation.encode()) })
        }
        Frame::Catalog { entries, last } => json!({
            "type": "catalog",
            "last": last,
            "entries": entries
                .iter()
                .map(|e| json!({ "doc": hex(&e.doc), "heads": hex(&e.heads) }))
                .collect::<Vec<_>>(),
        }),
        Frame::Header { header } => json!({ "type": "header", "header": hex(&header.encode()) }),
        Frame::Sync { doc, more, data } => json!({
            "type": "sync",
            "doc": hex(doc),
            "more": more,
            "data": hex(data),
        }),
        Frame::Heads { entries } => json!({
            "type": "heads",
            "entries": entries
                .iter()
                .map(|e| json!({
                    "doc": hex(&e.doc),
                    "heads": e.heads.iter().map(|h| hex(h)).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>(),
        }),
        Frame::TrailAsk { proof, have } => json!({
            "type": "trail_ask",
            "proof": hex(proof),
            "have": have
                .iter()
                .map(|h| json!({ "device": hex(&h.device), "len": h.len, "head": hex(&h.head) }))
                .collect::<Vec<_>>(),
        }),
        Frame::Trail {
            len,
            head,
            answer,
            more,
            entries,
        } => json!({
            "type": "trail",
            "len": len,
            "head": hex(head),
            "answer": answer,
            "more": more,
            "entries": entries.iter().map(|e| hex(e)).collect::<Vec<_>>(),
        }),
        Frame::Sealed { envelopes } => json!({
            "type": "sealed",
            "envelopes": envelopes.iter().map(|e| hex(e)).collect::<Vec<_>>(),
        }),
        Frame::MailIds { ids } => json!({
            "type": "mail_ids",
            "ids": ids.iter().map(|i| hex(i)).collect::<Vec<_>>(),
        }),
        Frame::MailWant { ids } => json!({
            "type": "mail_want",
            "ids": ids.iter().map(|i| hex(i)).collect::<Vec<_>>(),
        }),
        Frame::MailDone { done } => json!({
            "type": "mail_done",
            "done": done
                .iter()
                .map(|d| json!({ "id": hex(&d.id), "slot": d.slot, "secret": hex(&d.secret) }))
                .collect::<Vec<_>>(),
        }),
    }
}

pub(crate) fn frame_from_json(v: &Value) -> Frame {
    match st(v, "type") {
        "hello" => Frame::Hello {
            version: u8::try_from(num(v, "version")).expect("u8"),
            pass: pass_from_json(get(v, "pass")),
        },
        "identify" => Frame::Identify {
            secret: secret_from_json(get(v, "secret")),
        },
        "refuse" => Frame::Refuse {
            reason: Reason::from_code(u8::try_from(num(v, "reason")).expect("u8")),
        },
        "revoked" => Frame::Revoked {
            revocation: Revocation::decode(&bytes(v, "revocation")).expect("a revocation"),
        },
        "catalog" => Frame::Catalog {
            last: flag(v, "last"),
            entries: list(v, "entries")
                .iter()
                .map(|e| CatalogEntry {
                    doc: fixed(e, "doc"),
                    heads: fixed(e, "heads"),
                })
                .collect(),
        },
        "header" => Frame::Header {
            header: ConversationHeader::decode(&bytes(v, "header")).expect("header"),
        },
        "sync" => Frame::Sync {
            doc: fixed(v, "doc"),
            more: flag(v, "more"),
            data: bytes(v, "data"),
        },
        "heads" => Frame::Heads {
            entries: list(v, "entries")
                .iter()
                .map(|e| HeadsEntry {
                    doc: fixed(e, "doc"),
                    heads: hashes32(e, "heads"),
                })
                .collect(),
        },
        "trail_ask" => Frame::TrailAsk {
            proof: fixed(v, "proof"),
            have: list(v, "have")
                .iter()
                .map(|h| TrailHave {
                    device: fixed(h, "device"),
                    len: num(h, "len"),
                    head: fixed(h, "head"),
                })
                .collect(),
        },
        "trail" => Frame::Trail {
            len: num(v, "len"),
            head: fixed(v, "head"),
            answer: flag(v, "answer"),
            more: flag(v, "more"),
            entries: list(v, "entries")
                .iter()
                .map(|e| {
                    let s = e.as_str().expect("an entry in hex");
                    data_encoding::HEXLOWER.decode(s.as_bytes()).expect("hex")
                })
                .collect(),
        },
        "sealed" => Frame::Sealed {
            envelopes: list(v, "envelopes")
                .iter()
                .map(|e| unhex(e.as_str().expect("an envelope in hex")))
                .collect(),
        },
        "mail_ids" => Frame::MailIds {
            ids: hashes32(v, "ids"),
        },
        "mail_want" => Frame::MailWant {
            ids: hashes32(v, "ids"),
        },
        "mail_done" => Frame::MailDone {
            done: list(v, "done")
                .iter()
                .map(|d| huddle::wire::MailDoneEntry {
                    id: fixed(d, "id"),
                    slot: u16::try_from(num(d, "slot")).expect("u16"),
                    secret: fixed(d, "secret"),
                })
                .collect(),
        },
        t => panic!("unknown frame type {t}"),
    }
}

/// Checks a must-accept vector of any signed object: the fields re-encode to
/// the bytes, the bytes decode to the fields, and the signature verifies.
pub(crate) fn check_round_trip<T: PartialEq + std::fmt::Debug>(
    v: &Value,
    from_fields: T,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> (T, Vec<u8>) {
    let b = bytes(v, "hex");
    assert_eq!(
        hex(&encode(&from_fields)),
        hex(&b),
        "fields re-encode byte for byte"
    );
    let decoded = decode(&b).unwrap_or_else(|e| panic!("{} must decode: {e}", v["name"]));
    assert_eq!(decoded, from_fields, "decoded fields");
    (decoded, b)
}
