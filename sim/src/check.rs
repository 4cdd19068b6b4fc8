//! The invariants of DESIGN.md as checks: the ledger of what users were
//! told, the per-frame no-leak check at the network layer, and the final
//! checks (convergence, no loss, no leak, authenticity) once the network is
//! healed and quiet.
//!
//! Invariant: every check reads the nodes only through their public API
//! (`history`, `conversation`, `team_heads`, `is_revoked`), the same view a
//! user or the shell has; the simulator never peeks inside the core.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use huddle::membership::RevocationTarget;
use huddle::team::TEAM_DOC_ID;
use huddle::wire::Frame;
use huddle::{ConversationHeader, ConversationId, MessageId};

use crate::device::Device;
use crate::net::Dev;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invariant {
    Convergence,
    NoLoss,
    NoLeak,
    Authenticity,
    Bounded,
    /// The network did not go quiet after the final heal (a sync loop).
    Quiescence,
    /// A store left by a crash did not load.
    Restart,
    /// Store-and-forward: history did not travel with a moving device.
    Carried,
    /// A message a device showed is gone from it (DESIGN.md invariant 6).
    AppendOnly,
    /// The scenario asked for something the core refused (a scenario bug).
    Setup,
    /// An urgent message or a reminder was missed, or an escalation was
    /// wrong (sync.md §7.6, `clinical.rs`).
    Clinical,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::Convergence => "convergence",
            Invariant::NoLoss => "no-loss",
            Invariant::NoLeak => "no-leak",
            Invariant::Authenticity => "authenticity",
            Invariant::Bounded => "bounded",
            Invariant::Quiescence => "quiescence",
            Invariant::Restart => "restart",
            Invariant::Carried => "carried",
            Invariant::AppendOnly => "append-only",
            Invariant::Setup => "setup",
            Invariant::Clinical => "clinical",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
    /// Devices involved (the trace shown is filtered to them).
    pub devices: Vec<Dev>,
    pub at: u64,
}

impl Violation {
    pub fn new(invariant: Invariant, at: u64, devices: Vec<Dev>, detail: String) -> Violation {
        Violation {
            invariant,
            detail,
            devices,
            at,
        }
    }
}

/// A message whose author was told "sent".
#[derive(Clone, Debug)]
pub struct Confirmed {
    pub conv: ConversationId,
    pub author: Dev,
    pub at: u64,
}

/// What the users were told and what the simulator created.
#[derive(Default)]
pub struct Ledger {
    pub confirmed: BTreeMap<MessageId, Confirmed>,
    pub forged: BTreeSet<MessageId>,
    /// Conversation spec index → id, once created.
    pub convs: Vec<Option<ConversationId>>,
    pub headers: BTreeMap<ConversationId, ConversationHeader>,
    /// Conversations durable on at least one device (a `ConversationAdded`
    /// was carried out, which the output contract puts after the `Flush`):
    /// only these must converge. A creation cut short by a crash before its
    /// `Flush` never happened.
    pub live: BTreeSet<ConversationId>,
    /// Every message each device showed (`MessageAdded`), which it must
    /// still hold at the end: no peer may take back an entry once shown.
    pub shown: BTreeMap<Dev, BTreeSet<(ConversationId, MessageId)>>,
    /// When each forger turned: what it confirms from then on is its own
    /// business (its changes after the forgery depend on changes every
    /// honest device refuses).
    pub forger_since: BTreeMap<Dev, u64>,
    /// Every body the workload wrote, to search frames and stores for
    /// (`leak.rs`).
    pub bodies: crate::leak::Bodies,
    /// Each confirmed message's priority.
    pub priority: BTreeMap<MessageId, huddle::Priority>,
}

impl Ledger {
    /// The conversations that must be on every member device.
    pub fn live_headers(&self) -> impl Iterator<Item = (&ConversationId, &ConversationHeader)> {
        self.headers.iter().filter(|(id, _)| self.live.contains(id))
    }
}

fn short(id: &impl fmt::Display) -> String {
    id.to_string().chars().take(8).collect()
}

/// Devices that must hold `h` at the end: enrolled, honest members, not
/// revoked, whose certificate the header admits.
pub fn member_devices(devices: &[Device], h: &ConversationHeader) -> Vec<Dev> {
    devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_member() && d.enrolled && !d.revoked)
        .filter(|(_, d)| d.cert.as_ref().is_some_and(|c| h.admits(c)))
        .map(|(i, _)| i)
        .collect()
}

/// No leak, at the moment `from` hands `frame` (encoded: `raw`) to the
/// network for `to`: the frame passes the membership gates, and — unless
/// it is a `Sync` frame, whose document the gates already hold to the
/// receiver's conversations — its bytes hold no body of a conversation
/// `to` is not a member of. A frame kind this simulator does not know
/// yet goes only to proven team devices and through the body search.
pub fn check_send(
    devices: &[Device],
    ledger: &Ledger,
    from: Dev,
    to: Dev,
    (frame, raw): (&Frame, &[u8]),
    at: u64,
) -> Result<(), Violation> {
    check_gates(devices, ledger, from, to, frame, at)?;
    if matches!(frame, Frame::Sync { .. }) {
        return Ok(());
    }
    let rx = &devices[to];
    let foreign = |h: &ConversationHeader| !crate::leak::admitted(rx, h);
    match ledger.bodies.find_deep(raw, &foreign) {
        None => Ok(()),
        Some(f) => Err(Violation::new(
            Invariant::NoLeak,
            at,
            vec![from, to],
            format!(
                "d{from} sent d{to} a {} frame holding, at byte {}, the {}-byte body of a message of conversation {} (\"{}\"), which d{to} is not a member of",
                frame_kind(frame),
                f.at,
                f.len,
                short(&f.conv),
                f.title
            ),
        )),
    }
}

/// The membership gates of [`check_send`].
fn check_gates(
    devices: &[Device],
    ledger: &Ledger,
    from: Dev,
    to: Dev,
    frame: &Frame,
    at: u64,
) -> Result<(), Violation> {
    let leak = |what: String| Err(Violation::new(Invariant::NoLeak, at, vec![from, to], what));
    let (tx, rx) = (&devices[from], &devices[to]);
    let doc = match frame {
        Frame::Hello { .. } | Frame::Refuse { .. } => return Ok(()),
        // A revocation goes only to the device it revokes (or its member's).
        Frame::Revoked { revocation } => {
            return match revocation.target {
                RevocationTarget::Device(d) if d == rx.id => Ok(()),
                RevocationTarget::Member(m) if Some(m) == rx.member => Ok(()),
                _ => leak(format!("a revocation of {:?}", revocation.target)),
            };
        }
        // Who we are: for members of the team only, like conversation bytes.
        Frame::Identify { .. } | Frame::TrailAsk { .. } => None,
        // No simulated device holds the team key, so none is an
        // administrator that may be sent audit entries (sync.md §8).
        Frame::Trail { .. } => return leak("audit entries to a non-administrator".into()),
        Frame::Catalog { entries, .. } => entries.iter().map(|e| e.doc).find(|d| *d != TEAM_DOC_ID),
        Frame::Heads { entries } => entries.iter().map(|e| e.doc).find(|d| *d != TEAM_DOC_ID),
        Frame::Header { header } => Some(header.id.0),
        Frame::Sync { doc, .. } => Some(*doc),
        // Sealed relaying (protocol/sealed.md): for any proven team device,
        // member of the conversation or not; what they carry is searched
        // for bodies by `check_send` like every frame but `Sync`.
        Frame::Sealed { .. }
        | Frame::MailIds { .. }
        | Frame::MailWant { .. }
        | Frame::MailDone { .. } => None,
    };
    if !rx.is_member() {
        return leak(format!(
            "d{from} sent a {} frame to d{to}, which holds no valid certificate of the team ({:?})",
            frame_kind(frame),
            rx.kind
        ));
    }
    let knows_revoked = tx
        .node
        .as_ref()
        .is_some_and(|n| rx.member.is_some_and(|m| n.is_revoked(&rx.id, &m)));
    if knows_revoked {
        return leak(format!(
            "d{from} knows d{to} is revoked but sent it a {} frame",
            frame_kind(frame)
        ));
    }
    let docs: Vec<[u8; 16]> = match frame {
        Frame::Catalog { entries, .. } => entries.iter().map(|e| e.doc).collect(),
        Frame::Heads { entries } => entries.iter().map(|e| e.doc).collect(),
        _ => doc.into_iter().collect(),
    };
    for doc in docs.into_iter().filter(|d| *d != TEAM_DOC_ID) {
        let id = ConversationId(doc);
        let Some(h) = ledger.headers.get(&id) else {
            return leak(format!(
                "d{from} sent d{to} a {} frame for unknown document {}",
                frame_kind(frame),
                short(&id)
            ));
        };
        if !rx.cert.as_ref().is_some_and(|c| h.admits(c)) {
            return leak(format!(
                "d{from} sent d{to} a {} frame for conversation {} (\"{}\"), which d{to} is not a member of",
                frame_kind(frame),
                short(&id),
                h.title()
            ));
        }
    }
    Ok(())
}

/// A conversation as device `d` would read it from its store at a restart.
fn reread(d: &Device, h: &ConversationHeader) -> Option<huddle::conversation::Conversation> {
    let stored = huddle::store::DocLoader::load_doc(&d.store, &h.id.0).ok()?;
    let actor = automerge::ActorId::from([0xcc; 16].as_slice());
    huddle::conversation::Conversation::load(
        h.clone(),
        &actor,
        stored.snapshot.as_deref(),
        &stored.chunks,
        &stored.rejected,
    )
    .ok()
    .map(|(c, _)| c)
}

pub fn frame_kind(f: &Frame) -> &'static str {
    match f {
        Frame::Hello { .. } => "Hello",
        Frame::Identify { .. } => "Identify",
        Frame::Refuse { .. } => "Refuse",
        Frame::Revoked { .. } => "Revoked",
        Frame::Catalog { .. } => "Catalog",
        Frame::Header { .. } => "Header",
        Frame::Sync { .. } => "Sync",
        Frame::Heads { .. } => "Heads",
        Frame::TrailAsk { .. } => "TrailAsk",
        Frame::Trail { .. } => "Trail",
        Frame::Sealed { .. } => "Sealed",
        Frame::MailIds { .. } => "MailIds",
        Frame::MailWant { .. } => "MailWant",
        Frame::MailDone { .. } => "MailDone",
    }
}

/// Convergence, no loss, no leak and authenticity, once healed and quiet.
pub fn check_final(devices: &[Device], ledger: &Ledger, at: u64) -> Result<(), Violation> {
    let fail = |inv, devs: Vec<Dev>, what: String| Err(Violation::new(inv, at, devs, what));
    // Authenticity and no leak by holding, on every device there is.
    let owner: BTreeMap<huddle::DeviceId, Option<huddle::MemberId>> =
        devices.iter().map(|d| (d.id, d.member)).collect();
    for (i, d) in devices.iter().enumerate() {
        let Some(n) = &d.node else { continue };
        for id in n.conversation_ids() {
            let Some(c) = n.conversation(id) else {
                return fail(
                    Invariant::NoLoss,
                    vec![i],
                    format!("d{i} cannot read conversation {} from its store", short(id)),
                );
            };
            let admitted = d.is_member() && d.cert.as_ref().is_some_and(|c2| c.header.admits(c2));
            if !admitted {
                return fail(
                    Invariant::NoLeak,
                    vec![i],
                    format!("d{i} holds conversation {} but is not a member", short(id)),
                );
            }
            if d.malicious {
                continue;
            }
            for r in n.history(id, None).expect("held") {
                let truth = owner.get(&r.device).copied().flatten();
                if r.author_verified && truth != Some(r.author) {
                    return fail(
                        Invariant::Authenticity,
                        vec![i],
                        format!(
                            "d{i} shows message {} as verifiably written by member {}, but its device belongs to {}",
                            short(&r.id),
                            short(&r.author),
                            truth.map_or("no member".into(), |m| short(&m))
                        ),
                    );
                }
            }
            for m in c.messages() {
                if !m.verify(id) || ledger.forged.contains(&m.id()) {
                    return fail(
                        Invariant::Authenticity,
                        vec![i],
                        format!(
                            "d{i} renders message {} in {} although its signature does not verify (verify: {}, body {:?})",
                            short(&m.id()),
                            short(id),
                            m.verify(id),
                            m.body
                        ),
                    );
                }
            }
        }
    }
    // Append-only: what a device showed, it still shows, and would show
    // again after a restart: read back from its store, as a restart reads it
    // (a node's index in memory never drops an entry, its document can).
    for (&i, shown) in &ledger.shown {
        let d = &devices[i];
        if d.node.is_none() || d.malicious || d.revoked {
            continue;
        }
        let mut read: BTreeMap<ConversationId, Option<huddle::conversation::Conversation>> =
            BTreeMap::new();
        for (conv, mid) in shown {
            if !member_devices(devices, &ledger.headers[conv]).contains(&i) {
                continue;
            }
            let c = read
                .entry(*conv)
                .or_insert_with(|| reread(d, &ledger.headers[conv]));
            if c.as_ref().is_none_or(|c| c.get(mid).is_none()) {
                return fail(
                    Invariant::AppendOnly,
                    vec![i],
                    format!(
                        "d{i} showed message {} in {} and no longer holds it",
                        short(mid),
                        short(conv)
                    ),
                );
            }
        }
    }
    // Convergence of every conversation on its member devices.
    for (id, h) in ledger.live_headers() {
        let members = member_devices(devices, h);
        let mut first: Option<(Dev, [u8; 16], Vec<huddle::node::RenderedMessage>)> = None;
        for &i in &members {
            let Some(n) = &devices[i].node else {
                return fail(Invariant::Convergence, vec![i], format!("d{i} is not up"));
            };
            let Some(c) = n.conversation(id) else {
                let holders: Vec<(Dev, usize)> = members
                    .iter()
                    .filter_map(|&j| {
                        let cv = devices[j].node.as_ref()?.conversation(id)?;
                        Some((j, cv.len()))
                    })
                    .collect();
                return fail(
                    Invariant::Convergence,
                    vec![i],
                    format!(
                        "member device d{i} never received conversation {} (\"{}\"); (holder, messages): {holders:?}",
                        short(id),
                        h.title()
                    ),
                );
            };
            let heads = c.replica().heads_digest();
            if devices[i].malicious {
                continue;
            }
            let hist = n.history(id, None).expect("held");
            match &first {
                None => first = Some((i, heads, hist)),
                Some((j, h0, hist0)) => {
                    if heads != *h0 {
                        return fail(
                            Invariant::Convergence,
                            vec![*j, i],
                            format!(
                                "d{j} and d{i} hold different heads for {} (\"{}\"): {} vs {} messages; d{j} lacks {}; d{i} lacks {}",
                                short(id),
                                h.title(),
                                hist0.len(),
                                hist.len(),
                                lacking(devices, hist0, &hist),
                                lacking(devices, &hist, hist0),
                            ),
                        );
                    }
                    if hist != *hist0 {
                        let k = hist.iter().zip(hist0).position(|(a, b)| a != b);
                        return fail(
                            Invariant::Convergence,
                            vec![*j, i],
                            format!(
                                "d{j} and d{i} hold the same heads for {} but render different histories (first difference at entry {k:?})",
                                short(id)
                            ),
                        );
                    }
                }
            }
        }
    }
    // The team document (directory and revocations).
    let team: Vec<(Dev, [u8; 16])> = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_member() && d.enrolled && !d.revoked)
        .filter_map(|(i, d)| d.node.as_ref().and_then(|n| n.team_heads()).map(|h| (i, h)))
        .collect();
    if let Some((j, h0)) = team.first() {
        if let Some((i, _)) = team.iter().find(|(_, h)| h != h0) {
            return fail(
                Invariant::Convergence,
                vec![*j, *i],
                format!("d{j} and d{i} hold different team documents"),
            );
        }
    }
    // No loss: every confirmed message on every member device.
    for (mid, c) in &ledger.confirmed {
        if devices[c.author].revoked {
            continue;
        }
        if ledger
            .forger_since
            .get(&c.author)
            .is_some_and(|t| c.at >= *t)
        {
            continue;
        }
        let h = &ledger.headers[&c.conv];
        // A forger is refused by every honest device once it sends its
        // forgery: what others write later is not owed to it.
        for i in member_devices(devices, h)
            .into_iter()
            .filter(|&i| !devices[i].malicious)
        {
            let has = devices[i]
                .node
                .as_ref()
                .and_then(|n| n.conversation(&c.conv))
                .is_some_and(|cv| cv.get(mid).is_some());
            if !has {
                return fail(
                    Invariant::NoLoss,
                    vec![c.author, i],
                    format!(
                        "message {} confirmed by d{} at {} is missing on d{i} (conversation \"{}\")",
                        short(mid),
                        c.author,
                        crate::trace::fmt_time(c.at),
                        h.title()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Which messages of `theirs` `ours` lacks: each by its author's device and
/// the time it was written (the first few).
fn lacking(
    devices: &[Device],
    ours: &[huddle::node::RenderedMessage],
    theirs: &[huddle::node::RenderedMessage],
) -> String {
    let missing: Vec<String> = theirs
        .iter()
        .filter(|m| !ours.iter().any(|o| o.id == m.id))
        .map(|m| {
            let by = devices.iter().position(|d| d.id == m.device);
            let by = by.map_or_else(|| m.device.short(), |k| format!("d{k}"));
            // The author's clock, skewed as the run made it.
            let at = m.time_ms.saturating_sub(crate::device::EPOCH_MS) / 1000;
            format!(
                "{by}'s {:?} written at {}:{:02}",
                m.priority,
                at / 60,
                at % 60
            )
        })
        .collect();
    match missing.len() {
        0 => "nothing".into(),
        n if n > 5 => format!("{} and {} more", missing[..5].join(", "), n - 5),
        _ => missing.join(", "),
    }
}
