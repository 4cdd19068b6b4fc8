//! Holes 2 and 5 of issue 18, against a real node: a device with a valid
//! certificate of the node's team (the bench holds the authority) sends
//! the team document a compressed change that inflates to about 1 GiB (a
//! decompression bomb), or one change holding six 8 MiB blobs, as chunked
//! `Sync` frames; the node must refuse it.
//!
//! Invariant: each attack uses a new device (a refused device is not
//! asked to come back), and waits for its cut with a deadline.
//!
//! The member's handshake is [`handshake`] alone: the Hello is about to
//! become members-only in two steps (Hello(pass), then Identify), and
//! only that function should need to change.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automerge::sync;
use huddle::crypto::AuthorityKey;
use huddle::membership::{Certificate, CertificateRequest};
use huddle::team::{TeamDoc, TEAM_DOC_ID};
use huddle::wire::{Frame, Reason, PROTOCOL_VERSION, SYNC_CHUNK_LEN};
use huddle::{MemberId, TeamId};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use rand_chacha::rand_core::SeedableRng;

use super::node::{Probe, Sample};
use super::peer::{self, Conn};

const DAY: u64 = 24 * 3600 * 1000;
const DEADLINE: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A device of the team, admitted by the authority.
pub(crate) struct Member {
    pub(crate) key: Keypair,
    pub(crate) cert: Certificate,
}

impl Member {
    pub(crate) fn admit(authority: &AuthorityKey, team_name: &str, seed: u64) -> Member {
        let key = Keypair::generate_ed25519();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let cert = CertificateRequest {
            team_name: team_name.into(),
            member: MemberId::random(&mut rng),
            display_name: format!("Mallory {seed}"),
            roles: vec!["nurse".into()],
            device: peer::device_of(&key),
            issued: now_ms() - DAY,
            expires: now_ms() + 30 * DAY,
        }
        .sign(authority)
        .expect("valid certificate fields");
        Member { key, cert }
    }
}

/// The member's side of the session's start (sync.md §2): our Hello (the
/// pass) and Identify (the secret part, which the node takes once it has
/// accepted the pass), the node's Hello, Identify and Catalog (it accepted
/// us), our Catalog.
pub(crate) async fn handshake(c: &mut Conn, cert: &Certificate) -> Result<(), String> {
    c.send(&Frame::Hello {
        version: PROTOCOL_VERSION,
        pass: cert.pass(),
    })
    .await?;
    c.send(&Frame::Identify {
        secret: cert.secret(),
    })
    .await?;
    loop {
        match c.recv(DEADLINE).await {
            Some(Frame::Catalog { last: true, .. }) => break,
            Some(Frame::Refuse { reason }) => return Err(format!("refused at hello: {reason}")),
            Some(_) => {}
            None => return Err("no catalog from the node".into()),
        }
    }
    c.send(&Frame::Catalog {
        entries: Vec::new(),
        last: true,
    })
    .await
}

/// What one member attack did.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
    /// The reason the node refused us with (None: cut without one).
    pub(crate) reason: Option<Reason>,
    pub(crate) secs: f64,
    /// The node's figures once our session was counted and, when the
    /// message took more than one frame, once it held every part but the
    /// last (each field's largest).
    pub(crate) during: Sample,
}

/// Connects as `m`, sends `message` to the team document in chunks of
/// `SYNC_CHUNK_LEN`, and waits for the node to cut us.
pub(crate) async fn attack(
    to: &Multiaddr,
    m: Member,
    message: &[u8],
    probe: &Probe,
) -> Result<Outcome, String> {
    let mut c = peer::connect(to.clone(), m.key, DEADLINE).await?;
    handshake(&mut c, &m.cert).await?;
    let (mut during, seen) = probe.until(DEADLINE, |s| s.r.sessions >= 1).await;
    if !seen {
        return Err("the node never counted our session".into());
    }
    let t = std::time::Instant::now();
    let chunks: Vec<&[u8]> = message.chunks(SYNC_CHUNK_LEN).collect();
    let mut frames = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 && i + 1 == chunks.len() {
            let held = i * SYNC_CHUNK_LEN;
            let (s, _) = probe
                .until(DEADLINE, move |s| s.r.reassembly_bytes >= held)
                .await;
            during = during.max(s);
        }
        let f = Frame::Sync {
            doc: TEAM_DOC_ID,
            more: i + 1 < chunks.len(),
            data: chunk.to_vec(),
        };
        // A write fails once the node has cut us: then see why.
        if c.send(&f).await.is_err() {
            break;
        }
        frames += 1;
    }
    let reason = c.cut(DEADLINE).await?;
    Ok(Outcome {
        frames,
        bytes: message.len(),
        reason,
        secs: t.elapsed().as_secs_f64(),
        during,
    })
}

fn leb(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Hole 2: a sync message (Automerge V2) holding one compressed change
/// chunk whose body inflates to `mib` MiB of zeros. Its header's checksum
/// is not right: the node must refuse it on its size before any checksum
/// (or Automerge) looks at it.
pub(crate) fn bomb(mib: usize) -> Vec<u8> {
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        deflate.write_all(&zeros).expect("in memory");
    }
    let bomb = deflate.finish().expect("in memory");
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    leb(&mut chunk, bomb.len() as u64);
    chunk.extend_from_slice(&bomb);
    let mut data = vec![0x43, 0, 0, 0, 1];
    leb(&mut data, chunk.len() as u64);
    data.extend_from_slice(&chunk);
    data.extend_from_slice(&[2, 0x02, 0x84]);
    data
}

/// Hole 5: one change that puts `n` blobs of `size` bytes into the team
/// document's certificate map (only certificates and revocations under
/// their own keys may go there, sync.md §7.5), as a sync message.
pub(crate) fn blobs(team: TeamId, n: usize, size: usize) -> Vec<u8> {
    let mut evil = TeamDoc::new(team, &automerge::ActorId::from([0x66u8; 16].as_slice()));
    evil.replica_mut()
        .local(now_ms(), |tx| {
            use automerge::transaction::Transactable;
            use automerge::ReadDoc;
            let certs = tx.get(automerge::ROOT, "certs")?.expect("genesis root").1;
            for i in 0..n {
                tx.put(
                    &certs,
                    format!("blob{i}"),
                    automerge::ScalarValue::Bytes(vec![0x5a; size]),
                )?;
            }
            Ok(())
        })
        .expect("a local change");
    evil.replica()
        .local_push()
        .expect("a change was made")
        .message_for(&mut sync::State::new())
}
