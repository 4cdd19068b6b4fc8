//! The cast: keys, members and certificates every file draws on.

use super::*;

pub(crate) const DEVICES: [(&str, &str); 4] = [
    ("ana-phone", "ana"),
    ("ben-tablet", "ben"),
    ("chidi-laptop", "chidi"),
    ("max-device", "max"),
];

pub(crate) struct Cast {
    pub(crate) authority: AuthorityKey,
    pub(crate) other_authority: AuthorityKey,
    pub(crate) devices: BTreeMap<&'static str, DeviceKey>,
}

impl Cast {
    pub(crate) fn new() -> Cast {
        Cast {
            authority: AuthorityKey::from_secret(label("authority:St Mary Ward 7")),
            other_authority: AuthorityKey::from_secret(label("authority:Riverside Clinic")),
            devices: DEVICES
                .iter()
                .map(|(d, _)| (*d, DeviceKey::from_secret(label(&format!("device:{d}")))))
                .collect(),
        }
    }

    pub(crate) fn key(&self, device: &str) -> &DeviceKey {
        &self.devices[device]
    }

    pub(crate) fn dev(&self, device: &str) -> DeviceId {
        self.key(device).device_id()
    }
}

pub(crate) fn member(name: &str) -> MemberId {
    MemberId(id16(&format!("member:{name}")))
}

pub(crate) fn keys_json(c: &Cast) -> Value {
    let authority = |a: &AuthorityKey| {
        json!({
            "secret_key": hex(&a.secret()),
            "team": hex(&a.team_id().0),
            "fingerprint": a.team_id().fingerprint(),
        })
    };
    let devices: serde_json::Map<String, Value> = DEVICES
        .iter()
        .map(|(d, m)| {
            let k = c.key(d);
            (
                d.to_string(),
                json!({
                    "secret_key": hex(&k.secret()),
                    "public_key": hex(&k.device_id().0),
                    "peer_id": k.device_id().to_string(),
                    "member": member(m).to_hex(),
                }),
            )
        })
        .collect();
    json!({
        "authority": authority(&c.authority),
        "other_authority": authority(&c.other_authority),
        "devices": devices,
    })
}

/// Reads the `keys` object of a vector file, checking every public value
/// against its secret, and returns the device keys by name.
pub(crate) fn keys_from_json(v: &Value) -> (TeamId, TeamId, BTreeMap<String, DeviceKey>) {
    let authority = |a: &Value| {
        let k = AuthorityKey::from_secret(fixed(a, "secret_key"));
        assert_eq!(hex(&k.team_id().0), st(a, "team"));
        assert_eq!(k.team_id().fingerprint(), st(a, "fingerprint"));
        k.team_id()
    };
    let devices = get(v, "devices")
        .as_object()
        .expect("devices")
        .iter()
        .map(|(name, d)| {
            let k = DeviceKey::from_secret(fixed(d, "secret_key"));
            assert_eq!(hex(&k.device_id().0), st(d, "public_key"), "{name}");
            assert_eq!(k.device_id().to_string(), st(d, "peer_id"), "{name}");
            (name.clone(), k)
        })
        .collect();
    (
        authority(get(v, "authority")),
        authority(get(v, "other_authority")),
        devices,
    )
}

pub(crate) fn request(
    team_name: &str,
    display_name: &str,
    who: &str,
    roles: &[&str],
    device: DeviceId,
) -> CertificateRequest {
    CertificateRequest {
        team_name: team_name.into(),
        member: member(who),
        display_name: display_name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        device,
        issued: T0 - DAY,
        expires: T0 + 365 * DAY,
    }
}

/// The certificates, by name.
pub(crate) fn certificates(c: &Cast) -> Vec<(&'static str, Certificate)> {
    let ward = "St Mary Ward 7";
    let sign = |r: CertificateRequest| r.sign(&c.authority).expect("valid request");
    let long_name = format!("Dr. Maximiliana {}", "X".repeat(84));
    let long_team = format!("St Mary {}", "W".repeat(92));
    let roles: Vec<String> = (0..16)
        .map(|i| format!("role-{i:02}-{}", "x".repeat(56)))
        .collect();
    let max = CertificateRequest {
        team_name: long_team,
        member: member("max"),
        display_name: long_name,
        roles,
        device: c.dev("max-device"),
        issued: T0,
        expires: T0 + 30 * DAY,
    };
    vec![
        (
            "ana-phone",
            sign(request(
                ward,
                "Ana Silva",
                "ana",
                &["nurse", "charge-nurse"],
                c.dev("ana-phone"),
            )),
        ),
        (
            "ben-tablet",
            sign(request(
                ward,
                "Ben Okafor",
                "ben",
                &["physician", "on-call-surgery"],
                c.dev("ben-tablet"),
            )),
        ),
        (
            "chidi-laptop",
            sign(request(
                ward,
                "Chidi Nwosu-Müller",
                "chidi",
                &[],
                c.dev("chidi-laptop"),
            )),
        ),
        ("max-size", sign(max)),
        (
            "ben-tablet@riverside",
            request(
                "Riverside Clinic",
                "Ben Okafor",
                "ben",
                &["physician"],
                c.dev("ben-tablet"),
            )
            .sign(&c.other_authority)
            .expect("valid request"),
        ),
    ]
}

pub(crate) fn cert(c: &Cast, name: &str) -> Certificate {
    certificates(c)
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("known certificate")
        .1
}
