//! revocations.json vectors.

use super::*;

pub(crate) fn revocations(c: &Cast) -> Vec<(&'static str, Revocation)> {
    vec![
        (
            "device ben-tablet",
            Revocation::sign(
                &c.authority,
                RevocationTarget::Device(c.dev("ben-tablet")),
                T0 + DAY,
            ),
        ),
        (
            "member chidi",
            Revocation::sign(
                &c.authority,
                RevocationTarget::Member(member("chidi")),
                T0 + 2 * DAY,
            ),
        ),
    ]
}

pub(crate) fn gen_revocations(c: &Cast) -> Value {
    let valid: Vec<Value> = revocations(c)
        .iter()
        .map(|(name, r)| {
            let b = r.encode();
            json!({
                "name": name,
                "fields": revocation_json(r),
                "signed_message": hex(&[domain::REVOCATION, &[0], &b[..b.len() - 64]].concat()),
                "hex": hex(&b),
                "key": hex(&r.key()),
                "team_document_key": hex(&r.key()),
                "store_key": hex(&keys::revocation(&r.key())),
            })
        })
        .collect();
    let r = revocations(c)[0].1.encode();
    let bad =
        |b: Vec<u8>, why: &str, error: &str| json!({ "hex": hex(&b), "why": why, "error": error });
    let invalid = vec![
        bad(vec![], "empty", "Truncated"),
        bad(r[..r.len() - 1].to_vec(), "last byte missing", "Truncated"),
        bad(
            [r.as_slice(), &[0]].concat(),
            "one trailing byte",
            "Trailing",
        ),
        bad(splice(&r, 0, 1, &[2]), "version 2", "Unknown"),
        bad(splice(&r, 33, 1, &[0]), "target type 0", "Unknown"),
        bad(splice(&r, 33, 1, &[3]), "target type 3", "Unknown"),
        bad(
            splice(&r, 33, 1, &[2]),
            "target type 2 (member) followed by a device's 32 bytes: 16 trailing bytes",
            "Trailing",
        ),
    ];
    let sig_invalid = vec![
        json!({
            "hex": hex(&splice(&r, r.len() - 64 - 8, 8, &(T0 + 2 * DAY).to_be_bytes())),
            "why": "issued time changed after signing",
        }),
        json!({
            "hex": hex(&with_signature(&r, &malleate(&last_sig(&r)))),
            "why": "signature S replaced by S + l (non-canonical)",
        }),
        json!({
            "hex": hex(&Revocation::sign(&c.other_authority, RevocationTarget::Device(c.dev("ben-tablet")), T0 + DAY).encode()),
            "why": "signed by another team's authority (valid for that team only)",
        }),
    ];
    json!({
        "description": "Authority-signed revocations of a device or of a member (protocol/wire.md#revocation). 'key' is the first 16 bytes of SHA-256 of the encoding; the team document stores the revocation under its lowercase hex, the store under rev/<key>.",
        "keys": keys_json(c),
        "valid": valid,
        "invalid": invalid,
        "signature_invalid": sig_invalid,
    })
}

#[test]
fn revocations_vectors() {
    let v = load("revocations.json");
    let (team, _, _) = keys_from_json(get(&v, "keys"));
    for x in list(&v, "valid") {
        let fields = revocation_from_json(get(x, "fields"));
        let (r, b) = check_round_trip(x, fields, Revocation::encode, Revocation::decode);
        assert!(r.verify(&team));
        assert!(!r.verify(&TeamId([7; 32])));
        check_signed(x, domain::REVOCATION, &[], &b, &team.0);
        let key = &crypto::sha256(&[&b])[..16];
        assert_eq!(hex(key), st(x, "key"));
        assert_eq!(hex(&r.key()), st(x, "key"));
        assert_eq!(st(x, "team_document_key"), st(x, "key"));
        assert_eq!(bytes(x, "store_key"), [b"rev/".as_slice(), key].concat());
        assert_eq!(keys::revocation(&r.key()), bytes(x, "store_key"));
    }
    for x in list(&v, "invalid") {
        expect_decode_error(x, Revocation::decode(&bytes(x, "hex")));
    }
    for x in list(&v, "signature_invalid") {
        let r = Revocation::decode(&bytes(x, "hex")).expect("decodes");
        assert!(!r.verify(&team), "{x}");
    }
}
