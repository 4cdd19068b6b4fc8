//! The stateless decoders: frames, credentials (passes, secrets,
//! certificates, join tokens, revocations) and records (conversation
//! headers, messages, receipts, index entries).
//!
//! Beyond "never panics", each checks what a decoder promises: what decodes
//! re-encodes to something that decodes to the same value, and a genuine
//! credential or record that was damaged and still verifies is the genuine
//! one (a signature covers everything that was decoded).

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use huddle::blobs::{Attachment, BlobHash};
use huddle::clinical::{Assignment, AssignmentDraft, AttachmentRule, ClinicalPolicy, SignedPolicy};
use huddle::codec::Reader;
use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::header::ConversationHeader;
use huddle::hlc::Hlc;
use huddle::membership::{
    outdated_request, Certificate, CertificateRequest, Pass, Revocation, RevocationTarget,
    Revocations, Secret,
};
use huddle::message::{AckBy, Draft, Escalation, Fields, Message, Receipt, ReceiptKind};
use huddle::store::peers::PeerRecord;
use huddle::store::DocMeta;
use huddle::wire::Frame;
use huddle::{ConversationKind, MemberId, Priority, TeamId};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{structured, Damage};

/// A time inside the genuine certificate's validity.
const NOW: u64 = 1_700_000_000_000;

/// Any bytes as one frame.
pub fn frame(data: &[u8]) {
    if let Ok(f) = Frame::decode(data) {
        let again = Frame::decode(&f.encode()).expect("a decoded frame re-encodes to a frame");
        assert_eq!(again, f, "a frame changed in a round trip");
    }
}

/// Genuine credentials and records, made once from fixed seeds.
struct Genuine {
    team: TeamId,
    cert: Certificate,
    revocation: Revocation,
    header: ConversationHeader,
    message: Message,
    /// A version-2 message: an escalation entry with every field it may
    /// carry, attachments (one with a thumbnail) included.
    escalation: Message,
    receipt: Receipt,
    policy: SignedPolicy,
    assignment: Assignment,
}

fn genuine() -> &'static Genuine {
    static G: OnceLock<Genuine> = OnceLock::new();
    G.get_or_init(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(19);
        let authority = AuthorityKey::generate(&mut rng);
        let key = DeviceKey::generate(&mut rng);
        let member = MemberId::random(&mut rng);
        let cert = CertificateRequest {
            team_name: "St Mary Ward 7".into(),
            member,
            display_name: "Ana".into(),
            roles: vec!["charge-nurse".into()],
            device: key.device_id(),
            issued: NOW - 1_000,
            expires: NOW + 1_000_000,
        }
        .sign(&authority)
        .expect("a valid request");
        let revocation = Revocation::sign(&authority, RevocationTarget::Member(member), NOW);
        let kind = ConversationKind::Role {
            role: "charge-nurse".into(),
        };
        let header = ConversationHeader::create(&key, kind, NOW);
        let draft = Draft {
            author_member: member,
            hlc: Hlc(NOW << 16),
            priority: Priority::Urgent,
            reply_to: None,
            body: "Bed 4: BP 80/50, please come".into(),
            fields: Default::default(),
        };
        let message = Message::sign(&key, &header.id, draft.clone());
        let escalation = Message::sign(
            &key,
            &header.id,
            Draft {
                priority: Priority::Stat,
                fields: Fields {
                    ack_by: Some(AckBy::All),
                    escalation: Some(Escalation {
                        conversation: header.id,
                        message: message.id(),
                        level: 1,
                        priority: Priority::Stat,
                        author: member,
                        waiting: vec![member],
                        unacked_ms: 180_000,
                    }),
                    reminder: None,
                    attachments: vec![
                        Attachment {
                            hash: BlobHash([5; 32]),
                            size: 3 * 128 * 1024 + 5,
                            media_type: "image/jpeg".into(),
                            name: "wound.jpg".into(),
                            thumbnail: vec![0xff, 0xd8, 0xff, 0xe0, 1, 2, 3],
                        },
                        Attachment {
                            hash: BlobHash([6; 32]),
                            size: 1000,
                            media_type: "application/pdf".into(),
                            name: "lab.pdf".into(),
                            thumbnail: vec![],
                        },
                    ],
                },
                ..draft
            },
        );
        // Version 2: with attachment limits of the team's own.
        let policy = SignedPolicy::sign(
            &authority,
            ClinicalPolicy {
                attachments: AttachmentRule {
                    limit: 10 << 20,
                    auto_fetch: 1 << 20,
                },
                ..ClinicalPolicy::default()
            },
            NOW,
        )
        .expect("the policy is valid");
        let assignment = Assignment::sign_by_device(
            &key,
            authority.team_id(),
            member,
            AssignmentDraft {
                role: "charge-nurse".into(),
                holders: vec![member],
                from_ms: NOW,
                to_ms: NOW + 3_600_000,
                issued: NOW << 16,
                replaces: vec![[7; 16]],
            },
        )
        .expect("a valid assignment");
        let upto = (message.hlc, message.id());
        let receipt = Receipt::sign(
            &key,
            &header.id,
            ReceiptKind::Ack,
            member,
            upto,
            message.hlc,
        );
        Genuine {
            team: authority.team_id(),
            cert,
            revocation,
            header,
            message,
            escalation,
            receipt,
            policy,
            assignment,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Credential {
    Pass(Vec<u8>),
    Secret(Vec<u8>),
    Certificate(Vec<u8>),
    Token(String),
    Revocation(Vec<u8>),
    /// A pass and a secret joined, as `Identify` does after `Hello`.
    Identify(Vec<u8>, Vec<u8>),
    /// One of the genuine credentials, damaged.
    Damaged(Which, Vec<Damage>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Which {
    Pass,
    Secret,
    Certificate,
    Token,
    Revocation,
}

/// Any bytes as a credential a stranger or member could show us.
pub fn credentials(data: &[u8]) {
    let Some(c) = structured::<Credential>(data) else {
        return;
    };
    match c {
        Credential::Pass(b) => pass(&b),
        Credential::Secret(b) => secret(&b),
        Credential::Certificate(b) => certificate(&b),
        Credential::Token(t) => token(&t),
        Credential::Revocation(b) => revocation(&b),
        Credential::Identify(p, s) => identify(&p, &s),
        Credential::Damaged(which, damage) => {
            let g = genuine();
            let mut b = match which {
                Which::Pass => g.cert.pass().encode(),
                Which::Secret => g.cert.secret().encode(),
                Which::Certificate => g.cert.encode(),
                Which::Token => g.cert.to_token().into_bytes(),
                Which::Revocation => g.revocation.encode(),
            };
            for d in &damage {
                d.apply(&mut b);
            }
            match which {
                Which::Pass => pass(&b),
                Which::Secret => {
                    secret(&b);
                    identify(&g.cert.pass().encode(), &b);
                }
                Which::Certificate => certificate(&b),
                Which::Token => token(&String::from_utf8_lossy(&b)),
                Which::Revocation => revocation(&b),
            }
        }
    }
}

fn pass(b: &[u8]) {
    let Ok(p) = Pass::decode(b) else { return };
    assert_eq!(Pass::decode(&p.encode()).as_ref(), Ok(&p));
    let g = genuine();
    if p.check(&g.team, NOW, &Revocations::default()).is_ok() {
        assert_eq!(p, g.cert.pass(), "a pass that verifies is the genuine one");
    }
}

fn read_secret(b: &[u8]) -> Option<Secret> {
    let mut r = Reader::new(b);
    let s = Secret::read(&mut r).ok()?;
    r.finish().ok()?;
    Some(s)
}

fn secret(b: &[u8]) {
    let Some(s) = read_secret(b) else { return };
    assert_eq!(read_secret(&s.encode()).as_ref(), Some(&s));
}

fn identify(pass: &[u8], secret: &[u8]) {
    let (Ok(p), Some(s)) = (Pass::decode(pass), read_secret(secret)) else {
        return;
    };
    let g = genuine();
    let Ok(cert) = p.join(&g.team, s) else { return };
    if cert.check(&g.team, NOW, &Revocations::default()).is_ok() {
        assert_eq!(
            cert, g.cert,
            "a joined certificate that verifies is the genuine one"
        );
    }
}

fn certificate(b: &[u8]) {
    let Ok(c) = Certificate::decode(b) else {
        return;
    };
    assert_eq!(Certificate::decode(&c.encode()).as_ref(), Ok(&c));
    assert_eq!(Certificate::from_token(&c.to_token()).as_ref(), Ok(&c));
    let g = genuine();
    if c.check(&g.team, NOW, &Revocations::default()).is_ok() {
        assert_eq!(c, g.cert, "a certificate that verifies is the genuine one");
    }
    // What a hello and an identify carry of it joins back into it.
    assert_eq!(c.pass().join(&c.team, c.secret()).as_ref(), Ok(&c));
}

fn token(t: &str) {
    let _ = outdated_request(t);
    if let Ok(c) = Certificate::from_token(t) {
        let g = genuine();
        if c.check(&g.team, NOW, &Revocations::default()).is_ok() {
            assert_eq!(c, g.cert, "a token that verifies is the genuine one");
        }
    }
}

fn revocation(b: &[u8]) {
    let Ok(r) = Revocation::decode(b) else { return };
    assert_eq!(Revocation::decode(&r.encode()).as_ref(), Ok(&r));
    let g = genuine();
    if r.verify(&g.team) {
        assert_eq!(
            r, g.revocation,
            "a revocation that verifies is the genuine one"
        );
    }
    let _ = r.key();
}

#[derive(Arbitrary, Debug)]
enum Record {
    Header(Vec<u8>),
    Message(Vec<u8>),
    Receipt(Vec<u8>),
    Index(Vec<u8>),
    Damaged(Kind, Vec<Damage>),
    Policy(Vec<u8>),
    Assignment(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    Header,
    Message,
    Receipt,
    Escalation,
    Policy,
    Assignment,
}

/// Any bytes as a record a document or the store carries.
pub fn records(data: &[u8]) {
    let Some(r) = structured::<Record>(data) else {
        return;
    };
    match r {
        Record::Header(b) => header(&b),
        Record::Message(b) => message(&b),
        Record::Receipt(b) => receipt(&b),
        Record::Index(b) => index(&b),
        Record::Policy(b) => policy(&b),
        Record::Assignment(b) => assignment(&b),
        Record::Damaged(kind, damage) => {
            let g = genuine();
            let mut b = match kind {
                Kind::Header => g.header.encode(),
                Kind::Message => g.message.encode(),
                Kind::Escalation => g.escalation.encode(),
                Kind::Receipt => g.receipt.encode(),
                Kind::Policy => g.policy.encode(),
                Kind::Assignment => g.assignment.encode(),
            };
            for d in &damage {
                d.apply(&mut b);
            }
            match kind {
                Kind::Header => header(&b),
                Kind::Message | Kind::Escalation => message(&b),
                Kind::Receipt => receipt(&b),
                Kind::Policy => policy(&b),
                Kind::Assignment => assignment(&b),
            }
        }
    }
}

fn policy(b: &[u8]) {
    let Ok(p) = SignedPolicy::decode(b) else {
        return;
    };
    assert_eq!(SignedPolicy::decode(&p.encode()).as_ref(), Ok(&p));
    let g = genuine();
    if p.verify(&g.team) {
        assert_eq!(p, g.policy, "a policy that verifies is the genuine one");
    }
    let _ = p.policy.stat.horizon_ms();
}

fn assignment(b: &[u8]) {
    let Ok(a) = Assignment::decode(b) else {
        return;
    };
    assert_eq!(Assignment::decode(&a.encode()).as_ref(), Ok(&a));
    let g = genuine();
    if a.verify(&g.team) {
        assert_eq!(
            a, g.assignment,
            "an assignment that verifies is the genuine one"
        );
    }
    let _ = (a.id(), a.doc_key(), a.covers(NOW));
}

fn header(b: &[u8]) {
    // Decoding checks the creator's signature and the id.
    let Ok(h) = ConversationHeader::decode(b) else {
        return;
    };
    assert_eq!(ConversationHeader::decode(&h.encode()).as_ref(), Ok(&h));
    let g = genuine();
    if h.creator == g.header.creator {
        assert_eq!(h, g.header, "a header that verifies is the genuine one");
    }
    let _ = (h.title(), h.admits(&g.cert));
}

fn message(b: &[u8]) {
    let Ok(m) = Message::decode(b) else { return };
    assert_eq!(Message::decode(&m.encode()).as_ref(), Ok(&m));
    let g = genuine();
    if m.verify(&g.header.id) {
        assert!(
            m == g.message || m == g.escalation,
            "a message that verifies is a genuine one"
        );
    }
    let _ = (m.id(), m.order_key());
}

fn receipt(b: &[u8]) {
    let Ok(r) = Receipt::decode(b) else { return };
    assert_eq!(Receipt::decode(&r.encode()).as_ref(), Ok(&r));
    let g = genuine();
    if r.verify(&g.header.id) {
        assert_eq!(r, g.receipt, "a receipt that verifies is the genuine one");
    }
    let _ = r.doc_key();
}

/// The store's own records: an index entry, and (the same bytes) a
/// remembered peer.
fn index(b: &[u8]) {
    if let Ok(Some(m)) = DocMeta::decode(b) {
        assert_eq!(DocMeta::decode(&m.encode()).ok(), Some(Some(m)));
    }
    if let Ok(p) = PeerRecord::decode(b) {
        assert_eq!(p.encode(), b, "a peer record decodes only as it is written");
    }
}
