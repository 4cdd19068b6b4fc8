//! clinical.json vectors: the team's clinical policy and on-call
//! assignments (protocol/sync.md §7.6), as the team document carries them.

use super::*;
use huddle::clinical::{Assignment, AssignmentDraft, ClinicalPolicy, SignedPolicy, Signer};

fn shortened() -> ClinicalPolicy {
    let mut p = ClinicalPolicy::default();
    p.stat.every_ms = 2_000;
    p.stat.times = 5;
    p.stat.ack_by = AckBy::All;
    p.stat.ladder.truncate(1);
    p.stat.ladder[0].after_ms = 6_000;
    p
}

pub(crate) fn policies(c: &Cast) -> Vec<(&'static str, SignedPolicy)> {
    vec![
        (
            "the default policy",
            SignedPolicy::sign(&c.authority, ClinicalPolicy::default(), T0).expect("valid"),
        ),
        (
            "STAT shortened to seconds, acknowledged by all",
            SignedPolicy::sign(&c.authority, shortened(), T0 + DAY).expect("valid"),
        ),
        (
            "version 2: attachments up to 10 MiB, fetched at once up to 1 MiB",
            SignedPolicy::sign(
                &c.authority,
                ClinicalPolicy {
                    attachments: huddle::clinical::AttachmentRule {
                        limit: 10 << 20,
                        auto_fetch: 1 << 20,
                    },
                    ..ClinicalPolicy::default()
                },
                T0 + 2 * DAY,
            )
            .expect("valid"),
        ),
    ]
}

pub(crate) fn assignments(c: &Cast) -> Vec<(&'static str, Assignment)> {
    let night = AssignmentDraft {
        role: "charge-nurse".into(),
        holders: vec![member("ana")],
        from_ms: T0 + 19 * 3_600_000,
        to_ms: T0 + 31 * 3_600_000,
        issued: Hlc::new(T0, 0).0,
        replaces: vec![],
    };
    let by_ana = Assignment::sign_by_device(
        c.key("ana-phone"),
        c.authority.team_id(),
        member("ana"),
        night.clone(),
    )
    .expect("valid");
    let by_admin = Assignment::sign_by_authority(
        &c.authority,
        AssignmentDraft {
            holders: vec![member("ben"), member("chidi")],
            issued: Hlc::new(T0 + 60_000, 0).0,
            replaces: vec![by_ana.id()],
            ..night
        },
    )
    .expect("valid");
    vec![
        ("Ana puts herself on call (signed by her phone)", by_ana),
        ("an administrator replaces it with Ben and Chidi", by_admin),
    ]
}

fn assignment_json(a: &Assignment) -> Value {
    json!({
        "team": hex(&a.team.0),
        "role": a.role,
        "holders": a.holders.iter().map(|m| m.to_hex()).collect::<Vec<_>>(),
        "from_ms": a.from_ms,
        "to_ms": a.to_ms,
        "issued": a.issued,
        "replaces": a.replaces.iter().map(|r| hex(r)).collect::<Vec<_>>(),
        "signer": match a.signer {
            Signer::Device { device, member } => json!({ "device": hex(&device.0), "member": member.to_hex() }),
            Signer::Authority => json!("authority"),
        },
        "signature": hex(&a.signature),
    })
}

fn assignment_from_json(v: &Value) -> Assignment {
    Assignment {
        team: TeamId(fixed(v, "team")),
        role: st(v, "role").to_owned(),
        holders: list(v, "holders")
            .iter()
            .map(|m| m.as_str().expect("member").parse().expect("member id"))
            .collect(),
        from_ms: get(v, "from_ms").as_u64().expect("ms"),
        to_ms: get(v, "to_ms").as_u64().expect("ms"),
        issued: get(v, "issued").as_u64().expect("hlc"),
        replaces: list(v, "replaces")
            .iter()
            .map(|r| {
                unhex(r.as_str().expect("hex"))
                    .try_into()
                    .expect("16 bytes")
            })
            .collect(),
        signer: match get(v, "signer") {
            Value::String(s) if s == "authority" => Signer::Authority,
            s => Signer::Device {
                device: DeviceId(fixed(s, "device")),
                member: MemberId(fixed(s, "member")),
            },
        },
        signature: fixed(v, "signature"),
    }
}

pub(crate) fn gen_clinical(c: &Cast) -> Value {
    let pols: Vec<Value> = policies(c)
        .iter()
        .map(|(name, p)| {
            let b = p.encode();
            json!({
                "name": name,
                "fields": { "team": hex(&p.team.0), "issued": p.issued, "policy": serde_json::to_value(&p.policy).expect("json"), "signature": hex(&p.signature) },
                "signed_message": hex(&[domain::POLICY, &[0], &b[..b.len() - 64]].concat()),
                "hex": hex(&b),
                "team_document_key": "clinical",
            })
        })
        .collect();
    let ones: Vec<Value> = assignments(c)
        .iter()
        .map(|(name, a)| {
            let b = a.encode();
            json!({
                "name": name,
                "fields": assignment_json(a),
                "signed_message": hex(&[domain::ONCALL, &[0], &b[..b.len() - 64]].concat()),
                "hex": hex(&b),
                "id": hex(&a.id()),
                "team_document_key": a.doc_key(),
            })
        })
        .collect();
    let p = policies(c)[1].1.encode();
    let a = assignments(c)[0].1.encode();
    let bad =
        |b: Vec<u8>, why: &str, error: &str| json!({ "hex": hex(&b), "why": why, "error": error });
    // The STAT rule starts after version, team, issued and the urgent rule
    // (ack-by 1, every 8, times 2, one step: count 1, after 8, role).
    let urgent_len = 1 + 8 + 2 + 1 + 8 + 1 + "charge-nurse".len();
    let stat_at = 1 + 32 + 8 + urgent_len;
    let v2 = policies(c)[2].1.encode();
    let limit_at = v2.len() - 64 - 16;
    let policy_invalid = vec![
        bad(vec![], "empty", "Truncated"),
        bad(splice(&p, 0, 1, &[3]), "version 3", "Unknown"),
        bad(
            splice(
                &v2,
                limit_at,
                16,
                &[(25u64 << 20).to_be_bytes(), (2u64 << 20).to_be_bytes()].concat(),
            ),
            "version 2 with the default attachment limits (written as version 1)",
            "Invalid",
        ),
        bad(
            splice(&v2, limit_at, 8, &(257u64 << 20).to_be_bytes()),
            "an attachment limit of 257 MiB (at most 256)",
            "Invalid",
        ),
        bad(
            splice(&v2, limit_at + 8, 8, &(11u64 << 20).to_be_bytes()),
            "automatic fetches up to 11 MiB under a 10 MiB limit",
            "Invalid",
        ),
        bad(
            splice(&p, stat_at + 1, 8, &999u64.to_be_bytes()),
            "a re-notification every 999 ms (under a second)",
            "Invalid",
        ),
        bad(
            [p.as_slice(), &[0]].concat(),
            "one trailing byte",
            "Trailing",
        ),
    ];
    let oncall_invalid = vec![
        bad(vec![], "empty", "Truncated"),
        bad(splice(&a, 0, 1, &[2]), "version 2", "Unknown"),
        bad(
            [a.as_slice(), &[0]].concat(),
            "one trailing byte",
            "Trailing",
        ),
    ];
    json!({
        "description": "The team's clinical policy (signed by the team authority; the team document's `policy` map, key `clinical`) and on-call assignments (signed by a device holding the role, or by the authority; the `oncall` map, under the lowercase hex of the id, the first 16 bytes of SHA-256 of the signature). protocol/sync.md §7.6.",
        "keys": keys_json(c),
        "policies": pols,
        "policies_invalid": policy_invalid,
        "assignments": ones,
        "assignments_invalid": oncall_invalid,
    })
}

#[test]
fn clinical_vectors() {
    let v = load("clinical.json");
    let (team, _, _) = keys_from_json(get(&v, "keys"));
    for x in list(&v, "policies") {
        let f = get(x, "fields");
        let fields = SignedPolicy {
            team: TeamId(fixed(f, "team")),
            issued: get(f, "issued").as_u64().expect("issued"),
            policy: serde_json::from_value(get(f, "policy").clone()).expect("a policy"),
            signature: fixed(f, "signature"),
        };
        let (p, b) = check_round_trip(x, fields, SignedPolicy::encode, SignedPolicy::decode);
        assert!(p.verify(&team));
        assert!(!p.verify(&TeamId([7; 32])));
        check_signed(x, domain::POLICY, &[], &b, &team.0);
    }
    for x in list(&v, "policies_invalid") {
        expect_decode_error(x, SignedPolicy::decode(&bytes(x, "hex")));
    }
    for x in list(&v, "assignments") {
        let fields = assignment_from_json(get(x, "fields"));
        let (a, b) = check_round_trip(x, fields, Assignment::encode, Assignment::decode);
        assert!(a.verify(&team));
        let signer = match a.signer {
            Signer::Device { device, .. } => device.0,
            Signer::Authority => team.0,
        };
        check_signed(x, domain::ONCALL, &[], &b, &signer);
        assert_eq!(hex(&a.id()), st(x, "id"));
        assert_eq!(a.doc_key(), st(x, "team_document_key"));
    }
    for x in list(&v, "assignments_invalid") {
        expect_decode_error(x, Assignment::decode(&bytes(x, "hex")));
    }
}
