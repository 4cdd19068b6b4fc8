//! certificates.json vectors: certificates, the passes and secret parts a
//! hello and an identify carry (wire.md §4.2), member tags, and their checks.

use super::*;

/// The bytes the authority signs for `cert`, computed from its fields as
/// wire.md §4.1 states them (not with huddle's own signing code).
fn independent_signed_message(cert: &Certificate) -> (Vec<u8>, [u8; 16], [u8; 32]) {
    let tag: [u8; 16] = crypto::sha256(&[b"huddle/member-tag/v1", &cert.member.0, &cert.device.0])
        [..16]
        .try_into()
        .expect("16 bytes");
    let mut w = Writer::new();
    w.raw(&cert.salt)
        .str(&cert.team_name)
        .raw(&cert.member.0)
        .str(&cert.display_name)
        .varint(cert.roles.len() as u64);
    for r in &cert.roles {
        w.str(r);
    }
    let digest = crypto::sha256(&[b"huddle/certificate-secret/v1", w.as_slice()]);
    let mut m = Writer::new();
    m.raw(domain::CERTIFICATE)
        .u8(0)
        .u8(2)
        .raw(&cert.team.0)
        .raw(&cert.device.0)
        .u64_be(cert.issued)
        .u64_be(cert.expires)
        .raw(&tag)
        .raw(&digest);
    (m.finish(), tag, digest)
}

pub(crate) fn gen_certificates(c: &Cast) -> Value {
    let certs = certificates(c);
    let valid: Vec<Value> = certs
        .iter()
        .map(|(name, cert)| {
            let (signed, tag, digest) = independent_signed_message(cert);
            json!({
                "name": name,
                "fields": cert_json(cert),
                "member_tag": hex(&tag),
                "secret_digest": hex(&digest),
                "signed_message": hex(&signed),
                "hex": hex(&cert.encode()),
                "token": cert.to_token(),
                "pass": { "fields": pass_json(&cert.pass()), "hex": hex(&cert.pass().encode()) },
                "secret": { "fields": secret_json(&cert.secret()), "hex": hex(&cert.secret().encode()) },
            })
        })
        .collect();

    let ana = cert(c, "ana-phone");
    let a = ana.encode();
    let team_name_at = 1 + 32 + 32 + 8 + 8 + 16;
    let name_at = team_name_at + 1 + ana.team_name.len() + 16 + 1;
    let bad =
        |b: Vec<u8>, why: &str, error: &str| json!({ "hex": hex(&b), "why": why, "error": error });
    let over = |f: &dyn Fn(&mut Certificate)| {
        let mut x = ana.clone();
        f(&mut x);
        x.encode()
    };
    let invalid = vec![
        bad(vec![], "empty", "Truncated"),
        bad(a[..a.len() - 1].to_vec(), "last byte missing", "Truncated"),
        bad(
            [a.as_slice(), &[0]].concat(),
            "one trailing byte",
            "Trailing",
        ),
        bad(splice(&a, 0, 1, &[0]), "version 0", "Unknown"),
        bad(
            splice(&a, 0, 1, &[1]),
            "version 1 (before passes: a token of an older huddle)",
            "Unknown",
        ),
        bad(splice(&a, 0, 1, &[3]), "version 3", "Unknown"),
        bad(
            nonminimal_varint(&a, team_name_at),
            "team name length as a non-minimal varint",
            "Varint",
        ),
        bad(
            over(&|x| x.team_name = "W".repeat(101)),
            "team name of 101 bytes",
            "TooLong",
        ),
        bad(
            over(&|x| x.display_name = "N".repeat(101)),
            "display name of 101 bytes",
            "TooLong",
        ),
        bad(
            over(&|x| x.roles = (0..17).map(|i| format!("r{i}")).collect()),
            "17 roles",
            "TooLong",
        ),
        bad(
            over(&|x| x.roles = vec!["r".repeat(65)]),
            "a role of 65 bytes",
            "TooLong",
        ),
        bad(
            splice(&a, name_at, 1, &[0xff]),
            "display name is not UTF-8",
            "Utf8",
        ),
    ];

    let tampered = over(&|x| x.display_name = "Ana Silva (admin)".into());
    let foreign = {
        // Signed by another authority but claiming this team.
        let mut x = cert(c, "ben-tablet@riverside");
        x.team = c.authority.team_id();
        x.team_name = "St Mary Ward 7".into();
        x.encode()
    };
    let malleated = with_signature(&a, &malleate(&last_sig(&a)));
    let salted = over(&|x| x.salt[0] ^= 1);
    let sig_invalid = vec![
        json!({ "hex": hex(&tampered), "why": "display name changed after signing" }),
        json!({ "hex": hex(&salted), "why": "salt changed after signing" }),
        json!({ "hex": hex(&foreign), "why": "signed by another team's authority" }),
        json!({ "hex": hex(&malleated), "why": "signature S replaced by S + l (non-canonical)" }),
    ];

    let team = c.authority.team_id();
    let skew = huddle::membership::ISSUE_SKEW_MS;
    let check = |name: &str, now: u64, rd: &[&str], rm: &[&str], team: TeamId, result: &str| {
        json!({
            "certificate": name,
            "team": hex(&team.0),
            "now": now,
            "revoked_devices": rd.iter().map(|d| hex(&c.dev(d).0)).collect::<Vec<_>>(),
            "revoked_members": rm.iter().map(|m| member(m).to_hex()).collect::<Vec<_>>(),
            "result": result,
        })
    };
    let other = c.other_authority.team_id();
    let checks = vec![
        check("ana-phone", T0, &[], &[], team, "ok"),
        check("ana-phone", T0 - DAY - skew, &[], &[], team, "ok"),
        check(
            "ana-phone",
            T0 - DAY - skew - 1,
            &[],
            &[],
            team,
            "NotYetValid",
        ),
        check("ana-phone", ana.expires - 1, &[], &[], team, "ok"),
        check("ana-phone", ana.expires, &[], &[], team, "Expired"),
        check("ana-phone", T0, &[], &[], other, "WrongTeam"),
        check("ben-tablet@riverside", T0, &[], &[], team, "WrongTeam"),
        check("ana-phone", T0, &["ana-phone"], &[], team, "RevokedDevice"),
        check("ana-phone", T0, &[], &["ana"], team, "RevokedMember"),
        check(
            "ana-phone",
            ana.expires,
            &["ana-phone"],
            &[],
            team,
            "Expired",
        ),
        check("chidi-laptop", T0, &["ana-phone"], &["ben"], team, "ok"),
        check("max-size", T0, &[], &[], team, "ok"),
    ];

    let pass_check =
        |name: &str, now: u64, rd: &[&str], rm: &[&str], team: TeamId, result: &str| {
            let mut x = check(name, now, rd, rm, team, result);
            x["pass"] = x["certificate"].take();
            x.as_object_mut().expect("object").remove("certificate");
            x
        };
    let pass_checks = vec![
        pass_check("ana-phone", T0, &[], &[], team, "ok"),
        pass_check(
            "ana-phone",
            T0 - DAY - skew - 1,
            &[],
            &[],
            team,
            "NotYetValid",
        ),
        pass_check("ana-phone", ana.expires, &[], &[], team, "Expired"),
        pass_check("ana-phone", T0, &[], &[], other, "WrongTeam"),
        pass_check("ben-tablet@riverside", T0, &[], &[], team, "WrongTeam"),
        pass_check("ana-phone", T0, &["ana-phone"], &[], team, "RevokedDevice"),
        pass_check("ana-phone", T0, &[], &["ben", "ana"], team, "RevokedMember"),
        pass_check("chidi-laptop", T0, &["ana-phone"], &["ben"], team, "ok"),
        pass_check("max-size", T0, &[], &["ana", "chidi"], team, "ok"),
    ];
    let ben = cert(c, "ben-tablet");
    let join = |secret: Secret, why: &str, result: &str| {
        json!({
            "pass": "ana-phone",
            "team": hex(&team.0),
            "secret_hex": hex(&secret.encode()),
            "why": why,
            "result": result,
        })
    };
    let mut renamed = ana.secret();
    renamed.display_name = "Ana Silva (admin)".into();
    let mut resalted = ana.secret();
    resalted.salt[15] ^= 1;
    let mut other_member = ana.secret();
    other_member.member = ben.member;
    let joins = vec![
        join(ana.secret(), "its own secret part", "ok"),
        join(
            ben.secret(),
            "another certificate's secret part",
            "BadSignature",
        ),
        join(renamed, "display name changed", "BadSignature"),
        join(resalted, "salt changed", "BadSignature"),
        join(other_member, "member id changed", "BadSignature"),
    ];
    let ap = ana.pass().encode();
    let passes_invalid = vec![
        bad(ap[..ap.len() - 1].to_vec(), "pass cut short", "Truncated"),
        bad(
            [ap.as_slice(), &[0]].concat(),
            "pass with a trailing byte",
            "Trailing",
        ),
    ];
    let asec = ana.secret().encode();
    let secrets_invalid = vec![
        bad(
            asec[..asec.len() - 1].to_vec(),
            "secret part cut short",
            "Truncated",
        ),
        bad(
            [asec.as_slice(), &[0]].concat(),
            "secret part with a trailing byte",
            "Trailing",
        ),
        bad(
            {
                let mut s = ana.secret();
                s.display_name = "N".repeat(101);
                s.encode()
            },
            "display name of 101 bytes",
            "TooLong",
        ),
        bad(
            {
                let mut s = ana.secret();
                s.roles = (0..17).map(|i| format!("r{i}")).collect();
                s.encode()
            },
            "17 roles",
            "TooLong",
        ),
    ];
    let member_tags: Vec<Value> = [
        ("ana", "ana-phone"),
        ("ana", "chidi-laptop"),
        ("ben", "ben-tablet"),
    ]
    .iter()
    .map(|(m, d)| {
        json!({
            "member": member(m).to_hex(),
            "device": hex(&c.dev(d).0),
            "tag": hex(&member_tag(&member(m), &c.dev(d))),
        })
    })
    .collect();

    let token = ana.to_token();
    let body = token.strip_prefix("HUDDLE1:").expect("prefix");
    let spaced: String = body
        .as_bytes()
        .chunks(40)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect::<Vec<_>>()
        .join("\n  ");
    let mut flipped: Vec<char> = body.chars().collect();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == 'A' { 'B' } else { 'A' };
    let flipped: String = flipped.into_iter().collect();
    let garbage = {
        let mut b = b"not a certificate".to_vec();
        let sum = crypto::sha256(&[&b]);
        b.extend_from_slice(&sum[..4]);
        data_encoding::BASE32_NOPAD.encode(&b)
    };
    let outdated = {
        // A version-1 certificate's bytes start with 0x01 (wire.md §4.1).
        let mut b = splice(&ana.encode(), 0, 1, &[1]);
        let sum = crypto::sha256(&[&b]);
        b.extend_from_slice(&sum[..4]);
        data_encoding::BASE32_NOPAD.encode(&b)
    };
    let tokens = vec![
        json!({ "token": format!("huddle1:{}", body.to_ascii_lowercase()), "certificate": "ana-phone", "why": "all lowercase" }),
        json!({ "token": format!("  HUDDLE1:\n  {spaced}\n"), "certificate": "ana-phone", "why": "white space anywhere is ignored" }),
    ];
    let tokens_invalid = vec![
        json!({ "token": format!("HUDDLE2:{body}"), "error": "Prefix", "why": "another prefix" }),
        json!({ "token": format!("Huddle1:{body}"), "error": "Prefix", "why": "mixed-case prefix" }),
        json!({ "token": body, "error": "Prefix", "why": "no prefix" }),
        json!({ "token": format!("HUDDLE1:{body}="), "error": "Encoding", "why": "base32 padding" }),
        json!({ "token": format!("HUDDLE1:{}", &body[..body.len() - 1]), "error": "Encoding", "why": "a character missing (impossible base32 length or non-zero trailing bits)" }),
        json!({ "token": "HUDDLE1:AEBA", "error": "Encoding", "why": "shorter than the checksum" }),
        json!({ "token": format!("HUDDLE1:{flipped}"), "error": "Checksum", "why": "one character changed" }),
        json!({ "token": format!("HUDDLE1:{garbage}"), "error": "Decode", "why": "checksum matches but the bytes are not a certificate" }),
        json!({ "token": format!("HUDDLE1:{outdated}"), "error": "Outdated", "why": "a certificate of version 1 (an older huddle): ask for a new token" }),
    ];

    json!({
        "description": "Membership certificates v2 (protocol/wire.md §4), their validity rules at a given time (Certificate::check) and their text tokens; the pass each shows in a hello and the secret part it shows in an identify (§4.2), the pass's checks under a verifier's own team key (Pass::check), rebuilding a certificate from a pass and a secret part (Pass::join), and member tags. Certificates are signed by the team authority (keys.authority); 'ben-tablet@riverside' belongs to another team.",
        "keys": keys_json(c),
        "valid": valid,
        "invalid": invalid,
        "signature_invalid": sig_invalid,
        "checks": checks,
        "pass_checks": pass_checks,
        "joins": joins,
        "passes_invalid": passes_invalid,
        "secrets_invalid": secrets_invalid,
        "member_tags": member_tags,
        "tokens": tokens,
        "tokens_invalid": tokens_invalid,
    })
}

#[test]
fn certificates_vectors() {
    let v = load("certificates.json");
    let (team, other, _) = keys_from_json(get(&v, "keys"));
    let mut by_name = BTreeMap::new();
    for x in list(&v, "valid") {
        let fields = cert_from_json(get(x, "fields"));
        let (cert, b) = check_round_trip(x, fields, Certificate::encode, Certificate::decode);
        let signer = if cert.team == team { team } else { other };
        assert!(cert.is_signed_by(&signer));
        let (signed, tag, digest) = independent_signed_message(&cert);
        assert_eq!(hex(&signed), st(x, "signed_message"));
        assert_eq!(hex(&tag), st(x, "member_tag"));
        assert_eq!(hex(&digest), st(x, "secret_digest"));
        let key = ed25519_dalek::VerifyingKey::from_bytes(&signer.0).expect("a valid key");
        let sig = ed25519_dalek::Signature::from_bytes(&cert.signature);
        key.verify_strict(&signed, &sig)
            .expect("the signature verifies strictly");
        let pass = get(x, "pass");
        let (p, _) = check_round_trip(
            pass,
            pass_from_json(get(pass, "fields")),
            Pass::encode,
            Pass::decode,
        );
        assert_eq!(p, cert.pass());
        assert_eq!(p.member_tag, tag);
        assert_eq!(p.secret_digest, digest);
        assert_eq!(p.signature, cert.signature);
        let secret = get(x, "secret");
        let (sec, _) = check_round_trip(
            secret,
            secret_from_json(get(secret, "fields")),
            Secret::encode,
            |b| {
                let mut r = Reader::new(b);
                let s = Secret::read(&mut r)?;
                r.finish().map(|()| s)
            },
        );
        assert_eq!(p.join(&cert.team, sec), Ok(cert.clone()));
        assert_eq!(cert.to_token(), st(x, "token"));
        assert_eq!(Certificate::from_token(st(x, "token")), Ok(cert.clone()));
        let token_bytes = data_encoding::BASE32_NOPAD
            .decode(&st(x, "token").as_bytes()["HUDDLE1:".len()..])
            .expect("base32");
        assert_eq!(token_bytes[..b.len()], b[..]);
        assert_eq!(token_bytes[b.len()..], crypto::sha256(&[&b])[..4]);
        by_name.insert(st(x, "name").to_owned(), cert);
    }
    for x in list(&v, "invalid") {
        expect_decode_error(x, Certificate::decode(&bytes(x, "hex")));
    }
    for x in list(&v, "signature_invalid") {
        let cert = Certificate::decode(&bytes(x, "hex")).expect("decodes");
        assert!(!cert.is_signed_by(&team), "{x}");
        assert_eq!(
            cert.check(&team, T0, &Revocations::default()),
            Err(huddle::membership::CertError::BadSignature)
        );
    }
    for x in list(&v, "checks") {
        let cert = &by_name[st(x, "certificate")];
        let revoked = revoked_of(x);
        let got = match cert.check(&TeamId(fixed(x, "team")), num(x, "now"), &revoked) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        assert_eq!(got, st(x, "result"), "{x}");
    }
    for x in list(&v, "pass_checks") {
        let pass = by_name[st(x, "pass")].pass();
        let got = match pass.check(&TeamId(fixed(x, "team")), num(x, "now"), &revoked_of(x)) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        assert_eq!(got, st(x, "result"), "{x}");
    }
    for x in list(&v, "joins") {
        let pass = by_name[st(x, "pass")].pass();
        let b = bytes(x, "secret_hex");
        let mut r = Reader::new(&b);
        let secret = Secret::read(&mut r).expect("decodes");
        r.finish().expect("nothing left");
        let got = match pass.join(&TeamId(fixed(x, "team")), secret) {
            Ok(cert) => {
                assert_eq!(cert, by_name[st(x, "pass")]);
                "ok".to_owned()
            }
            Err(e) => format!("{e:?}"),
        };
        assert_eq!(got, st(x, "result"), "{x}");
    }
    for x in list(&v, "passes_invalid") {
        expect_decode_error(x, Pass::decode(&bytes(x, "hex")));
    }
    for x in list(&v, "secrets_invalid") {
        let b = bytes(x, "hex");
        let mut r = Reader::new(&b);
        expect_decode_error(x, Secret::read(&mut r).and_then(|s| r.finish().map(|()| s)));
    }
    for x in list(&v, "member_tags") {
        let (m, d) = (MemberId(fixed(x, "member")), DeviceId(fixed(x, "device")));
        let h = crypto::sha256(&[b"huddle/member-tag/v1", &m.0, &d.0]);
        assert_eq!(hex(&h[..16]), st(x, "tag"));
        assert_eq!(hex(&member_tag(&m, &d)), st(x, "tag"));
    }
    for x in list(&v, "tokens") {
        assert_eq!(
            Certificate::from_token(st(x, "token")).as_ref(),
            Ok(&by_name[st(x, "certificate")]),
            "{x}"
        );
    }
    for x in list(&v, "tokens_invalid") {
        match Certificate::from_token(st(x, "token")) {
            Ok(c) => panic!("token {x} must be rejected, got {c:?}"),
            Err(e) => assert_eq!(token_error_name(&e), st(x, "error"), "{x}: {e}"),
        }
    }
}

fn revoked_of(x: &Value) -> Revocations {
    let mut revoked = Revocations::default();
    for d in list(x, "revoked_devices") {
        revoked.insert(RevocationTarget::Device(DeviceId(
            unhex(d.as_str().expect("hex")).try_into().expect("32"),
        )));
    }
    for m in list(x, "revoked_members") {
        revoked.insert(RevocationTarget::Member(
            m.as_str().expect("hex").parse().expect("member"),
        ));
    }
    revoked
}
