//! Export to the patient record (issue 24): a ward conversation with
//! replies, urgent and STAT messages, acknowledgements and an attachment,
//! made by real nodes on the in-memory mesh and exported as a device would
//! (`api::views::export_input`, then `export::fhir_bundle`), validates
//! against the official FHIR R4 (4.0.1) JSON schema, vendored in
//! `tests/vectors/fhir/` (README there: where it came from, its hashes).
//!
//! The schema is no rubber stamp: the same validator refuses broken
//! bundles here. What R4 requires and its schema cannot say (value sets
//! of bare `code`s such as `Communication.priority`, required primitives,
//! ext-1) this test checks itself ([`r4_rules_broken`]).

mod common;

use std::io::Read;
use std::sync::OnceLock;

use common::{group_of, Mesh};
use huddle::api::views;
use huddle::blobs::{Attachment, BlobHash};
use huddle::export::{self, PlainExport, EXTENSION_BLOB, EXTENSION_RECEIPTS};
use huddle::message::{AckBy, Fields};
use huddle::node::{Command, Reply};
use huddle::{ConversationId, MessageId, Priority};
use serde_json::{json, Value};

/// The official FHIR R4 JSON schema, compiled once per test process.
fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/fhir/fhir.schema.json.gz"
        );
        let gz = std::fs::read(path).expect("the vendored schema");
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_string(&mut text)
            .expect("gzip");
        let schema: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(schema["id"], "http://hl7.org/fhir/json-schema/4.0");
        jsonschema::draft6::new(&schema).expect("a draft-06 schema")
    })
}

/// The schema's complaints about `v`, one line each.
fn errors(v: &Value) -> Vec<String> {
    schema()
        .iter_errors(v)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// What R4 requires and its JSON schema does not say (the schema cannot
/// require a primitive, whose value may be absent behind an `_element`,
/// and types most coded elements as a bare `code`): Communication's
/// `status` and `priority` in their value sets (EventStatus,
/// RequestPriority), a Provenance's `recorded`, a signature's `when` and
/// `who`, and every extension with a value or extensions, not both
/// (ext-1). The rules broken, one line each.
fn r4_rules_broken(bundle: &Value) -> Vec<String> {
    let priorities = ["routine", "urgent", "asap", "stat"];
    let statuses = [
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    ];
    let mut broken = Vec::new();
    for c in resources(bundle, "Communication") {
        if !c["priority"]
            .as_str()
            .is_none_or(|p| priorities.contains(&p))
        {
            broken.push(format!("priority {}", c["priority"]));
        }
        if !c["status"].as_str().is_some_and(|s| statuses.contains(&s)) {
            broken.push(format!("status {}", c["status"]));
        }
    }
    for p in resources(bundle, "Provenance") {
        if !p["recorded"].is_string() {
            broken.push("a Provenance without recorded".into());
        }
        for sig in p["signature"].as_array().into_iter().flatten() {
            if !sig["when"].is_string() || !sig["who"].is_object() {
                broken.push("a signature without when or who".into());
            }
        }
    }
    extensions_broken(bundle, &mut broken);
    broken
}

/// ext-1 everywhere under `v`.
fn extensions_broken(v: &Value, broken: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "extension" {
                    for e in x.as_array().into_iter().flatten() {
                        let values = e
                            .as_object()
                            .map_or(0, |e| e.keys().filter(|k| k.starts_with("value")).count());
                        let nested = e.get("extension").is_some();
                        if values + usize::from(nested) != 1 {
                            broken.push(format!("ext-1: {}", e["url"]));
                        }
                    }
                }
                extensions_broken(x, broken);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| extensions_broken(x, broken)),
        _ => {}
    }
}

fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

/// The `Communication` carrying message `id`.
fn communication(bundle: &Value, id: MessageId) -> &Value {
    resources(bundle, "Communication")
        .into_iter()
        .find(|c| c["identifier"][0]["value"] == id.to_hex())
        .unwrap_or_else(|| panic!("no Communication for {id}"))
}

/// The `fullUrl` of the entry whose resource is `r`.
fn full_url<'a>(bundle: &'a Value, r: &Value) -> &'a str {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"] == *r)
        .and_then(|e| e["fullUrl"].as_str())
        .expect("fullUrl")
}

/// Member ids (hex) named by the receipts extension's `part` entries.
fn receipt(c: &Value, part: &str) -> Vec<String> {
    let ext = c["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == EXTENSION_RECEIPTS)
        .expect("the receipts extension");
    ext["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == part)
        .map(|e| {
            e["valueReference"]["identifier"]["value"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn ecg_png() -> Attachment {
    Attachment {
        hash: BlobHash::of(b"a 12-lead ECG"),
        size: 13,
        media_type: "image/png".into(),
        name: "ecg bed 12.png".into(),
        thumbnail: Vec::new(),
    }
}

/// The ward: Ana (nurse), Ben (doctor), Chloe (nurse) in "Bed 12", and the
/// messages, by name.
struct Ward {
    m: Mesh,
    ben: usize,
    id: ConversationId,
    members: [String; 3],
    observation: MessageId,
    order: MessageId,
    arrest: MessageId,
    ecg: MessageId,
}

fn send(
    m: &mut Mesh,
    i: usize,
    id: ConversationId,
    body: &str,
    p: Priority,
    reply: Option<MessageId>,
    fields: Fields,
) -> MessageId {
    m.run_until(m.now + 60_000);
    let cmd = Command::Send {
        conversation: id,
        body: body.into(),
        priority: p,
        reply_to: reply,
        fields,
    };
    match m.command(i, cmd) {
        Ok(Reply::Message(id)) => id,
        other => panic!("send failed: {other:?}"),
    }
}

fn ack(m: &mut Mesh, i: usize, conversation: ConversationId, message: MessageId) {
    let r = m.command(
        i,
        Command::Ack {
            conversation,
            message,
        },
    );
    assert!(r.is_ok(), "{r:?}");
}

fn ward() -> Ward {
    let mut m = Mesh::new(24);
    let ana = m.add_member("Ana Silva", &["nurse"]);
    let ben = m.add_member("Ben Okafor", &["doctor"]);
    let chloe = m.add_member("Chloe Martin", &["nurse"]);
    m.connect_all(&[ana, ben, chloe]);
    m.run_until_quiet();
    let id = group_of(&mut m, ana, &[ana, ben, chloe], "Bed 12");
    let none = Fields::default;
    let observation = send(
        &mut m,
        ana,
        id,
        "Bed 12 BP 80/40, HR 130",
        Priority::Routine,
        None,
        none(),
    );
    m.run_until_quiet();
    let order = send(
        &mut m,
        ben,
        id,
        "500 ml saline stat, coming",
        Priority::Urgent,
        Some(observation),
        none(),
    );
    m.run_until_quiet();
    let all = Fields {
        ack_by: Some(AckBy::All),
        ..Fields::default()
    };
    let arrest = send(
        &mut m,
        chloe,
        id,
        "Bed 12 unresponsive: crash call",
        Priority::Stat,
        None,
        all,
    );
    m.run_until_quiet();
    let photo = Fields {
        attachments: vec![ecg_png()],
        ..Fields::default()
    };
    let ecg = send(
        &mut m,
        ana,
        id,
        "ECG attached",
        Priority::Routine,
        Some(arrest),
        photo,
    );
    m.run_until_quiet();
    ack(&mut m, ana, id, order);
    ack(&mut m, ana, id, arrest);
    ack(&mut m, ben, id, arrest);
    m.run_until_quiet();
    let members = [ana, ben, chloe].map(|i| m.devices[i].member().to_hex());
    Ward {
        m,
        ben,
        id,
        members,
        observation,
        order,
        arrest,
        ecg,
    }
}

#[test]
fn a_ward_conversation_exports_as_valid_fhir_r4() {
    let w = ward();
    let node = &w.m.devices[w.ben].node;
    let input = views::export_input(node, &w.id, None, w.m.now).expect("held");
    let bundle = export::fhir_bundle(&input);
    // For a check by hand with another validator (tests/vectors/fhir/README.md).
    if let Some(path) = std::env::var_os("HUDDLE_FHIR_OUT") {
        std::fs::write(path, format!("{bundle:#}")).expect("written");
    }
    let errs = errors(&bundle);
    assert!(errs.is_empty(), "{errs:#?}\n{bundle:#}");
    let rules = r4_rules_broken(&bundle);
    assert!(rules.is_empty(), "{rules:#?}");
    assert_eq!(bundle["type"], "collection");
    assert_eq!(resources(&bundle, "Communication").len(), 4);
    assert_eq!(resources(&bundle, "Provenance").len(), 4);

    // Priorities, and replies pointing at the right Communication.
    let [ana, ben, chloe] = &w.members;
    let (obs, order) = (
        communication(&bundle, w.observation),
        communication(&bundle, w.order),
    );
    let (arrest, ecg) = (
        communication(&bundle, w.arrest),
        communication(&bundle, w.ecg),
    );
    assert_eq!(obs["priority"], "routine");
    assert_eq!(order["priority"], "urgent");
    assert_eq!(arrest["priority"], "stat");
    assert!(obs.get("inResponseTo").is_none());
    assert_eq!(
        order["inResponseTo"][0]["reference"],
        full_url(&bundle, obs)
    );
    assert_eq!(
        ecg["inResponseTo"][0]["reference"],
        full_url(&bundle, arrest)
    );
    assert_eq!(order["sender"]["identifier"]["value"], *ben);
    assert_eq!(order["sender"]["display"], "Ben Okafor");
    let to: Vec<&Value> = order["recipient"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["identifier"]["value"])
        .collect();
    let mut expected = vec![ana, chloe];
    expected.sort();
    assert_eq!(to, expected);
    assert!(order.get("received").is_none(), "not recorded by a node");

    // Acknowledgements: who, and what the author asked for.
    assert_eq!(receipt(order, "acknowledgedBy"), vec![ana.clone()]);
    let mut both = vec![ana.clone(), ben.clone()];
    both.sort();
    assert_eq!(receipt(arrest, "acknowledgedBy"), both);
    let ack_by = arrest["extension"][0]["extension"].as_array().unwrap();
    assert!(ack_by.contains(&json!({ "url": "ackBy", "valueCode": "all" })));
    assert!(receipt(obs, "acknowledgedBy").is_empty());
    assert!(!receipt(obs, "deliveredTo").is_empty());

    // The attachment: BLAKE3 in an extension, never in FHIR's SHA-1 `hash`.
    let att = &ecg["payload"][1]["contentAttachment"];
    assert_eq!(ecg["payload"][0]["contentString"], "ECG attached");
    assert_eq!(att["contentType"], "image/png");
    assert_eq!(att["title"], "ecg bed 12.png");
    assert_eq!(att["size"], 13);
    assert_eq!(att["extension"][0]["url"], EXTENSION_BLOB);
    assert_eq!(
        att["extension"][0]["valueUri"],
        format!("urn:huddle:blob:{}", ecg_png().hash.to_hex())
    );
    assert!(att.get("url").is_none(), "a URN is no locator");
    assert!(att.get("hash").is_none());

    // Each Provenance's signature checks out as its doc comment says.
    for p in resources(&bundle, "Provenance") {
        check_signature(&bundle, p, w.id);
    }
}

/// Checks a Provenance's signature with ed25519-dalek and the recipe in
/// `export::fhir`'s documentation, not with huddle's own decoder.
fn check_signature(bundle: &Value, p: &Value, conv: ConversationId) {
    use ed25519_dalek::{Signature, VerifyingKey};
    use sha2::Digest;
    let sig = &p["signature"][0];
    assert_eq!(sig["type"][0]["code"], "1.2.840.10065.1.12.1.1");
    let data = sig["data"].as_str().expect("signed");
    let e = data_encoding::BASE64.decode(data.as_bytes()).unwrap();
    let (signed, s) = e.split_at(e.len() - 64);
    let key = VerifyingKey::from_bytes(e[17..49].try_into().unwrap()).unwrap();
    let msg = [b"huddle/message/v1\0".as_slice(), &conv.0, signed].concat();
    key.verify_strict(&msg, &Signature::from_slice(s).unwrap())
        .expect("the signature verifies");
    let id = hex(&sha2::Sha256::digest(s)[..16]);
    let target = p["target"][0]["reference"].as_str().unwrap();
    let comm = resources(bundle, "Communication")
        .into_iter()
        .find(|c| full_url(bundle, c) == target)
        .expect("its target");
    assert_eq!(comm["identifier"][0]["value"], id);
    let device = huddle::DeviceId(e[17..49].try_into().unwrap());
    assert_eq!(sig["who"]["identifier"]["value"], device.to_string());
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

#[test]
fn since_keeps_later_messages_and_names_earlier_ones_by_identifier() {
    let w = ward();
    let node = &w.m.devices[w.ben].node;
    let all = views::export_input(node, &w.id, None, w.m.now).unwrap();
    let at = |id: MessageId| all.messages.iter().find(|m| m.id == id).unwrap().time_ms;
    // From the urgent order on: its reply target is out of the bundle.
    let input = views::export_input(node, &w.id, Some(at(w.order)), w.m.now).unwrap();
    let bundle = export::fhir_bundle(&input);
    assert!(errors(&bundle).is_empty());
    assert_eq!(resources(&bundle, "Communication").len(), 3);
    let order = communication(&bundle, w.order);
    let target = &order["inResponseTo"][0];
    assert!(target.get("reference").is_none(), "{target}");
    assert_eq!(target["identifier"]["value"], w.observation.to_hex());
    // The same filter applied by the pure function to the whole history.
    let mut whole = all.clone();
    whole.since_ms = Some(at(w.arrest));
    let later = export::fhir_bundle(&whole);
    assert_eq!(resources(&later, "Communication").len(), 2);
    let ecg = communication(&later, w.ecg);
    let arrest = communication(&later, w.arrest);
    assert_eq!(
        ecg["inResponseTo"][0]["reference"],
        full_url(&later, arrest)
    );

    // The plain form: the same messages, each with its signed entry, and
    // it reads back.
    let plain = export::plain(&whole);
    assert_eq!(plain.format, export::PLAIN_FORMAT);
    assert_eq!(plain.messages.len(), 2);
    assert!(plain.messages.iter().all(|m| m.signed.is_some()));
    assert_eq!(plain.members.len(), 3);
    let text = serde_json::to_string(&plain).unwrap();
    let back: PlainExport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, plain);
}

#[test]
fn the_validator_refuses_broken_bundles() {
    let w = ward();
    let node = &w.m.devices[w.ben].node;
    let input = views::export_input(node, &w.id, None, w.m.now).unwrap();
    let good = export::fhir_bundle(&input);
    assert!(errors(&good).is_empty());
    // Index 0 is the first Communication, 1 its Provenance.
    let broken: [(&str, &str, Value); 6] = [
        (
            "an unknown property",
            "/entry/0/resource/urgency",
            json!("high"),
        ),
        (
            "a priority that is no code",
            "/entry/0/resource/priority",
            json!(3),
        ),
        (
            "a sent time that is no dateTime",
            "/entry/0/resource/sent",
            json!("yesterday"),
        ),
        (
            "an unknown resource type",
            "/entry/0/resource/resourceType",
            json!("Comunication"),
        ),
        ("a bundle type R4 lacks", "/type", json!("conversation")),
        (
            "a signature that is no base64",
            "/entry/1/resource/signature/0/data",
            json!(["AA=="]),
        ),
    ];
    for (what, at, value) in broken {
        let mut b = good.clone();
        set(&mut b, at, value);
        assert!(!errors(&b).is_empty(), "the schema took {what}");
    }
    let mut b = good.clone();
    b["entry"][1]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("target");
    assert!(
        !errors(&b).is_empty(),
        "the schema took a Provenance without target"
    );

    // A priority outside RequestPriority is a string the R4 schema's bare
    // `code` accepts: the value-set check here is what refuses it.
    let mut soon = good.clone();
    set(&mut soon, "/entry/0/resource/priority", json!("soon"));
    assert!(errors(&soon).is_empty());
    assert_eq!(
        r4_rules_broken(&soon),
        vec![r#"priority "soon""#.to_owned()]
    );
    let mut empty = good.clone();
    empty["entry"][0]["resource"]["extension"][0]
        .as_object_mut()
        .unwrap()
        .remove("extension");
    assert!(errors(&empty).is_empty());
    assert_eq!(r4_rules_broken(&empty).len(), 1);
}

/// Sets the value at JSON pointer `at`, adding the last key if missing.
fn set(v: &mut Value, at: &str, value: Value) {
    let (parent, key) = at.rsplit_once('/').unwrap();
    let p = v.pointer_mut(parent).unwrap_or_else(|| panic!("{parent}"));
    match p {
        Value::Object(o) => {
            o.insert(key.to_owned(), value);
        }
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = value,
        _ => panic!("{at}"),
    }
}
