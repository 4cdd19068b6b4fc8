//! A conversation as an HL7 FHIR R4 (4.0.1) `Bundle`: one `Communication`
//! per message and one `Provenance` per message for its signature.
//!
//! The mapping, element by element:
//! - `Bundle.type` is `collection`: a set of resources gathered for a
//!   purpose, with no processing asked of the reader. Not `document` (that
//!   needs a `Composition` first, attested as a whole), not `message`
//!   (a `MessageHeader` and an event), not `transaction` or `batch` (those
//!   ask a server to write them). `Bundle.timestamp` is the export time.
//! - `fullUrl`s are `urn:uuid:`s derived from the message id
//!   (`values::uuid`, stable across exports); each resource's `id` is the
//!   same UUID. huddle's own ids ride in identifiers: the message in
//!   `Communication.identifier` ([`SYSTEM_MESSAGE`], hex), members as
//!   logical `Practitioner` references by identifier ([`SYSTEM_MEMBER`],
//!   hex, with the directory's name as `display`), devices as logical
//!   `Device` references ([`SYSTEM_DEVICE`], the device's PeerId text,
//!   which encodes its Ed25519 key), and the conversation as the
//!   `topic` coding ([`SYSTEM_CONVERSATION`], hex, the title as `display`).
//! - `Communication.status` is `completed`; `priority` is routine, urgent
//!   or stat (huddle's Routine, Urgent, Stat; never `asap`); `sender` is
//!   the member the message names as its author (whether a certificate
//!   binds its device to that member is the `Provenance`'s to say);
//!   `sent` is the author's time (its HLC's milliseconds, as the author's
//!   device stated it); `recipient` is the conversation's members but the
//!   author (for a role conversation, the members who hold the role in
//!   this device's directory at export time); `inResponseTo` references
//!   the replied-to `Communication` by `fullUrl` when it is in the bundle,
//!   and by its identifier alone when it is not (older than `since`).
//! - `Communication.received` is left out: a node does not record when it
//!   first held each message (it keeps that time only for urgent and STAT
//!   messages still open, and drops it once they close), so no value it
//!   could give would be true of every message.
//! - `payload`: the body as `contentString` (left out when empty), then
//!   each attachment as `contentAttachment` with `contentType`, `title`
//!   (the file name), `size`, and the extension [`EXTENSION_BLOB`] whose
//!   `valueUri` is `urn:huddle:blob:<hex>`, the blob's BLAKE3 hash
//!   (protocol/blobs.md). Not in `Attachment.url`: that is of FHIR's type
//!   `url`, a locator, which a URN is not (fhir.resources refuses it).
//!   Not in `Attachment.hash` either: FHIR defines it as the SHA-1 of the
//!   data, which huddle never computes (a device may not even hold the
//!   bytes), and a BLAKE3 digest there would be a wrong value, not
//!   another format.
//! - Acknowledgements: FHIR R4's `Communication` has no element for them,
//!   so they ride in one complex extension, [`EXTENSION_RECEIPTS`], on the
//!   `Communication`: `ackRequested` (valueBoolean: an urgent or STAT
//!   message), `ackBy` (valueCode any | all | member, when the author chose
//!   rather than the team policy) and `ackByMember` (valueReference), then
//!   one `acknowledgedBy`, `readBy` and `deliveredTo` (valueReference to
//!   a `Practitioner`) per member, as the exporting device renders them
//!   (the acknowledgement rules of sync.md §7.2 applied).
//! - `Provenance`: `target` the `Communication`, `recorded` its sent time
//!   (the export time if that cannot be stated), `activity` CREATE, one
//!   `agent` of type `author` whose `who` is the signing device and whose
//!   `onBehalfOf` is the author member — only when a certificate in this
//!   device's directory binds that device to that member
//!   (`author_verified`); the signature alone does not.
//! - `Provenance.signature`, only for a message whose signed entry was
//!   given and checked (`super::checked_entries`): type
//!   1.2.840.10065.1.12.1.1 (Author's Signature, `urn:iso-astm:E1762-95:2013`),
//!   `when` the sent time, `who`/`onBehalfOf` as the agent's,
//!   `targetFormat` and `sigFormat` `application/octet-stream`, and `data`
//!   the base64 of the whole stored entry E (protocol/wire.md §6): the
//!   signed bytes, then the 64-byte Ed25519 signature. A reader checks it
//!   with strict Ed25519: public key E[17..49] (the device, also in
//!   `who`), message `"huddle/message/v1" ‖ 0x00 ‖ C ‖ E[..len-64]` where
//!   C is the conversation id (16 bytes; the `topic` code in hex), and
//!   signature E[len-64..]; the first 16 bytes of SHA-256 of that
//!   signature are the message id in `Communication.identifier`. That the
//!   device speaks for the member is the team directory's word (a
//!   certificate), not this signature's.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::values::{base64, code, fhir_string, instant, uuid};
use super::{checked_entries, directory, recipients, selected, ExportInput};
use crate::api::types::{HistoryMessage, Member};
use crate::ids::{DeviceId, MemberId, MessageId};
use crate::message::{AckBy, Priority};

/// `Identifier.system` of a message id (32 hex digits).
pub const SYSTEM_MESSAGE: &str = "urn:huddle:message";
/// `Identifier.system` of a member id (32 hex digits).
pub const SYSTEM_MEMBER: &str = "urn:huddle:member";
/// `Identifier.system` of a device (its PeerId, `12D3KooW…`).
pub const SYSTEM_DEVICE: &str = "urn:huddle:device";
/// `Coding.system` of a conversation id (32 hex digits).
pub const SYSTEM_CONVERSATION: &str = "urn:huddle:conversation";
/// The receipts extension's URL. FHIR wants an extension's URL to be a
/// URL, not a URN; huddle publishes no StructureDefinition yet, so its
/// extensions are under `.invalid` (RFC 2606): they name, and will never
/// resolve.
pub const EXTENSION_RECEIPTS: &str =
    "https://huddle.invalid/fhir/StructureDefinition/huddle-receipts";
/// The blob extension's URL (on an `Attachment`).
pub const EXTENSION_BLOB: &str = "https://huddle.invalid/fhir/StructureDefinition/huddle-blob";

const AUTHORS_SIGNATURE: &str = "1.2.840.10065.1.12.1.1";
const SIGNATURE_TYPES: &str = "urn:iso-astm:E1762-95:2013";
const PARTICIPANT_TYPES: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";
const DATA_OPERATIONS: &str = "http://terminology.hl7.org/CodeSystem/v3-DataOperation";
const OCTETS: &str = "application/octet-stream";
/// Largest FHIR `unsignedInt`.
const MAX_UNSIGNED_INT: u64 = i32::MAX as u64;

/// The FHIR R4 `Bundle` (type `collection`) of `input`: for each exported
/// message in display order, its `Communication`, then its `Provenance`
/// (left out only when no time at all can be stated for it).
pub fn fhir_bundle(input: &ExportInput) -> Value {
    let messages = selected(input);
    let in_bundle: BTreeSet<MessageId> = messages.iter().map(|m| m.id).collect();
    let entries = checked_entries(input);
    let names = directory(input);
    let export = Export {
        input,
        names: &names,
        in_bundle: &in_bundle,
    };
    let mut entry = Vec::with_capacity(messages.len() * 2);
    for m in &messages {
        let comm = communication_url(&m.id);
        entry.push(json!({ "fullUrl": comm, "resource": export.communication(m) }));
        if let Some(p) = export.provenance(m, entries.get(&m.id).map(Vec::as_slice)) {
            entry.push(json!({ "fullUrl": uuid("Provenance", &m.id.0), "resource": p }));
        }
    }
    let bundle_key = [
        input.conversation.id.0.as_slice(),
        &input.device.0,
        &input.exported_ms.to_be_bytes(),
        &[u8::from(input.since_ms.is_some())],
        &input.since_ms.unwrap_or(0).to_be_bytes(),
    ]
    .concat();
    let id = uuid("Bundle", &bundle_key);
    let mut bundle = obj(json!({
        "resourceType": "Bundle",
        "id": bare(&id),
        "identifier": { "system": "urn:ietf:rfc:3986", "value": id },
        "type": "collection",
    }));
    put(&mut bundle, "timestamp", instant(input.exported_ms));
    bundle.insert("entry".into(), Value::Array(entry));
    Value::Object(bundle)
}

/// What every resource of one export is made with.
struct Export<'a> {
    input: &'a ExportInput,
    names: &'a BTreeMap<MemberId, &'a Member>,
    in_bundle: &'a BTreeSet<MessageId>,
}

impl Export<'_> {
    fn communication(&self, m: &HistoryMessage) -> Value {
        let url = communication_url(&m.id);
        let conv = &self.input.conversation;
        let mut topic_coding = obj(json!({
            "system": SYSTEM_CONVERSATION,
            "code": conv.id.to_hex(),
        }));
        put(&mut topic_coding, "display", fhir_string(&conv.title));
        let mut topic = obj(json!({ "coding": [topic_coding] }));
        put(&mut topic, "text", fhir_string(&conv.title));
        let mut c = obj(json!({
            "resourceType": "Communication",
            "id": bare(&url),
            "extension": [self.receipts(m)],
            "identifier": [{ "system": SYSTEM_MESSAGE, "value": m.id.to_hex() }],
            "status": "completed",
            "priority": priority(m.priority),
            "topic": topic,
            "sender": self.member(&m.author, m.author_name.as_deref()),
        }));
        if let Some(r) = m.reply_to {
            let mut target = obj(json!({
                "type": "Communication",
                "identifier": { "system": SYSTEM_MESSAGE, "value": r.to_hex() },
            }));
            if self.in_bundle.contains(&r) {
                target.insert("reference".into(), communication_url(&r).into());
            }
            c.insert("inResponseTo".into(), json!([target]));
        }
        put(&mut c, "sent", instant(m.time_ms));
        let to: Vec<Value> = recipients(self.input, &m.author)
            .iter()
            .map(|r| self.member(r, None))
            .collect();
        if !to.is_empty() {
            c.insert("recipient".into(), to.into());
        }
        let payload = payload(m);
        if !payload.is_empty() {
            c.insert("payload".into(), payload.into());
        }
        Value::Object(c)
    }

    /// `None` when no instant can be given for `recorded` (both the sent
    /// time and the export time past the year 9999): FHIR requires one.
    fn provenance(&self, m: &HistoryMessage, entry: Option<&[u8]>) -> Option<Value> {
        let url = uuid("Provenance", &m.id.0);
        let when = instant(m.time_ms).or_else(|| instant(self.input.exported_ms))?;
        let device = device(&m.device);
        let on_behalf = m
            .author_verified
            .then(|| self.member(&m.author, m.author_name.as_deref()));
        let mut agent = obj(json!({
            "type": { "coding": [{
                "system": PARTICIPANT_TYPES, "code": "author", "display": "Author",
            }]},
            "who": device,
        }));
        put(&mut agent, "onBehalfOf", on_behalf.clone());
        let mut p = obj(json!({
            "resourceType": "Provenance",
            "id": bare(&url),
            "target": [{ "reference": communication_url(&m.id), "type": "Communication" }],
            "activity": { "coding": [{
                "system": DATA_OPERATIONS, "code": "CREATE", "display": "create",
            }]},
            "agent": [agent],
            "recorded": when,
        }));
        if let Some(bytes) = entry {
            let mut sig = obj(json!({
                "type": [{
                    "system": SIGNATURE_TYPES,
                    "code": AUTHORS_SIGNATURE,
                    "display": "Author's Signature",
                }],
                "when": when,
                "who": device,
                "targetFormat": OCTETS,
                "sigFormat": OCTETS,
                "data": base64(bytes),
            }));
            put(&mut sig, "onBehalfOf", on_behalf);
            p.insert("signature".into(), json!([sig]));
        }
        Some(Value::Object(p))
    }

    /// The receipts extension of `m` (see the module comment).
    fn receipts(&self, m: &HistoryMessage) -> Value {
        let mut parts = vec![json!({
            "url": "ackRequested",
            "valueBoolean": m.priority.wants_ack(),
        })];
        match m.ack_by {
            Some(AckBy::Any) => parts.push(json!({ "url": "ackBy", "valueCode": "any" })),
            Some(AckBy::All) => parts.push(json!({ "url": "ackBy", "valueCode": "all" })),
            Some(AckBy::Member(who)) => {
                parts.push(json!({ "url": "ackBy", "valueCode": "member" }));
                parts.push(json!({
                    "url": "ackByMember",
                    "valueReference": self.member(&who, None),
                }));
            }
            None => {}
        }
        for (url, who) in [
            ("acknowledgedBy", &m.acked_by),
            ("readBy", &m.read_by),
            ("deliveredTo", &m.delivered_to),
        ] {
            for w in who {
                parts.push(json!({ "url": url, "valueReference": self.member(w, None) }));
            }
        }
        json!({ "url": EXTENSION_RECEIPTS, "extension": parts })
    }

    /// A logical `Practitioner` reference to `member`, named as the
    /// directory names them (else as `fallback`, the message's own).
    fn member(&self, member: &MemberId, fallback: Option<&str>) -> Value {
        let mut r = obj(json!({
            "type": "Practitioner",
            "identifier": { "system": SYSTEM_MEMBER, "value": member.to_hex() },
        }));
        let name = self.names.get(member).map(|m| m.name.as_str()).or(fallback);
        put(&mut r, "display", name.and_then(fhir_string));
        Value::Object(r)
    }
}

/// The body, then each attachment.
fn payload(m: &HistoryMessage) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(body) = fhir_string(&m.body) {
        out.push(json!({ "contentString": body }));
    }
    for a in &m.attachments {
        let mut att = Map::new();
        put(
            &mut att,
            "contentType",
            code(&a.media_type).map(str::to_owned),
        );
        if let Some(h) = crate::blobs::BlobHash::from_hex(&a.hash) {
            att.insert(
                "extension".into(),
                json!([{
                    "url": EXTENSION_BLOB,
                    "valueUri": format!("urn:huddle:blob:{}", h.to_hex()),
                }]),
            );
        }
        if a.size <= MAX_UNSIGNED_INT {
            att.insert("size".into(), a.size.into());
        }
        put(&mut att, "title", fhir_string(&a.name));
        // FHIR has no empty elements: an attachment with nothing to state
        // (never one a node shows) is left out.
        if !att.is_empty() {
            out.push(json!({ "contentAttachment": att }));
        }
    }
    out
}

fn priority(p: Priority) -> &'static str {
    match p {
        Priority::Routine => "routine",
        Priority::Urgent => "urgent",
        Priority::Stat => "stat",
    }
}

/// A logical `Device` reference to `d`.
fn device(d: &DeviceId) -> Value {
    json!({
        "type": "Device",
        "identifier": { "system": SYSTEM_DEVICE, "value": d.to_string() },
    })
}

fn communication_url(id: &MessageId) -> String {
    uuid("Communication", &id.0)
}

/// A `urn:uuid:` without its prefix: the resource's `id`.
fn bare(url: &str) -> String {
    url.trim_start_matches("urn:uuid:").to_owned()
}

/// `json!` of an object literal, as a map to add to.
fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Sets `key` when there is a value.
fn put(map: &mut Map<String, Value>, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        map.insert(key.to_owned(), v.into());
    }
}
