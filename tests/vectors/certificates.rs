//! certificates.json vectors.

use super::*;

pub(crate) fn gen_certificates(c: &Cast) -> Value {
    let certs = certificates(c);
    let valid: Vec<Value> = certs
        .iter()
        .map(|(name, cert)| {
            let b = cert.encode();
            json!({
                "name": name,
                "fields": cert_json(cert),
                "signed_message": hex(&[domain::CERTIFICATE, &[0], &b[..b.len() - 64]].concat()),
                "hex": hex(&b),
                "token": cert.to_token(),
            })
        })
        .collect();

    let ana = cert(c, "ana-phone");
    let a = ana.encode();
    let name_at = 1 + 32 + 1 + ana.team_name.len() + 16 + 1;
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
        bad(splice(&a, 0, 1, &[2]), "version 2", "Unknown"),
        bad(
            nonminimal_varint(&a, 33),
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
    let sig_invalid = vec![
        json!({ "hex": hex(&tampered), "why": "display name changed after signing" }),
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
    ];

    json!({
        "description": "Membership certificates (protocol/wire.md#certificate), their validity rules at a given time (Certificate::check) and their text tokens. Certificates are signed by the team authority (keys.authority); 'ben-tablet@riverside' belongs to another team.",
        "keys": keys_json(c),
        "valid": valid,
        "invalid": invalid,
        "signature_invalid": sig_invalid,
        "checks": checks,
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
        check_signed(x, domain::CERTIFICATE, &[], &b, &signer.0);
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
        let got = match cert.check(&TeamId(fixed(x, "team")), num(x, "now"), &revoked) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        assert_eq!(got, st(x, "result"), "{x}");
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
