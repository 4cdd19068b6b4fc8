//! One simulated device: its identity and certificate, its durable store,
//! and the core [`Node`] that runs on it while it is up.
//!
//! Invariant: a device's node is only ever rebuilt from what its
//! [`MemoryStore`] holds after [`MemoryStore::crash`] — exactly what a power
//! cut leaves — via [`huddle::store::load_lazy`], as the real shell does.

use std::collections::BTreeMap;

use huddle::crypto::{AuthorityKey, DeviceKey};
use huddle::membership::{Certificate, CertificateRequest};
use huddle::node::{NodeConfig, Timer};
use huddle::store::{self, MemoryStore};
use huddle::{DeviceId, MemberId, Millis, Node};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::OutsiderKind;

/// The simulated wall clock starts here (ms since the epoch).
pub const EPOCH_MS: u64 = 1_750_000_000_000;
const DAY_MS: u64 = 86_400_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Member,
    Outsider(OutsiderKind),
}

pub struct Device {
    pub key: DeviceKey,
    pub id: DeviceId,
    pub cert: Option<Certificate>,
    /// The member this device belongs to (team devices only).
    pub member: Option<MemberId>,
    pub kind: Kind,
    pub store: MemoryStore,
    pub node: Option<Node>,
    /// Bumped at every crash; events addressed to an older one are moot.
    pub inc: u32,
    pub rng: ChaCha8Rng,
    pub skew_ms: i64,
    /// Timers the node has set, with the token of the live one.
    pub timers: BTreeMap<Timer, u64>,
    /// Has booted at least once (late joiners start out absent).
    pub enrolled: bool,
    /// Powered off or crashed, waiting to come back.
    pub down: bool,
    /// The next step of this device is interrupted by a crash.
    pub crash_mid_step: bool,
    pub revoked: bool,
    /// Turned malicious (the forger): what it shows itself is its own
    /// business, so it is left out of the authenticity and history checks.
    pub malicious: bool,
    /// Its node refuses changes that break the append-only rules.
    pub append_only: bool,
    pub clinical_fault: huddle::node::ClinicalFault,
}

/// What a device is made of before it boots.
pub struct Identity {
    pub kind: Kind,
    pub member: Option<MemberId>,
    pub display_name: String,
    pub roles: Vec<String>,
}

/// A certificate request with the simulator's validity window.
pub fn request(
    team_name: &str,
    member: MemberId,
    name: &str,
    roles: Vec<String>,
    device: DeviceId,
    expired: bool,
) -> CertificateRequest {
    let issued = EPOCH_MS - if expired { 30 * DAY_MS } else { DAY_MS };
    let expires = if expired {
        EPOCH_MS - DAY_MS
    } else {
        EPOCH_MS + 365 * DAY_MS
    };
    CertificateRequest {
        team_name: team_name.into(),
        member,
        display_name: name.into(),
        roles,
        device,
        issued,
        expires,
    }
}

impl Device {
    /// Creates a device and its certificate. `stolen` is the certificate an
    /// impostor presents (someone else's).
    pub fn new(
        rng: &mut ChaCha8Rng,
        ident: Identity,
        team: &AuthorityKey,
        other_team: &AuthorityKey,
        stolen: Option<Certificate>,
    ) -> Device {
        let key = DeviceKey::generate(rng);
        let id = key.device_id();
        let member = ident.member.unwrap_or_else(|| MemberId::random(rng));
        let sign = |auth: &AuthorityKey, team_name: &str, expired: bool| {
            request(
                team_name,
                member,
                &ident.display_name,
                ident.roles.clone(),
                id,
                expired,
            )
            .sign(auth)
            .expect("simulator certificates are well-formed")
        };
        let cert = match &ident.kind {
            Kind::Member => Some(sign(team, "Sim Hospital", false)),
            Kind::Outsider(OutsiderKind::NoCert) => None,
            Kind::Outsider(OutsiderKind::OtherTeam) => Some(sign(other_team, "Elsewhere", false)),
            Kind::Outsider(OutsiderKind::Expired) => Some(sign(team, "Sim Hospital", true)),
            Kind::Outsider(OutsiderKind::Stolen) => stolen,
        };
        let mut store = MemoryStore::new();
        store::check_format(&mut store).expect("memory store");
        Device {
            key,
            id,
            member: ident.member,
            cert,
            kind: ident.kind,
            store,
            node: None,
            inc: 0,
            rng: ChaCha8Rng::seed_from_u64(rng.gen()),
            skew_ms: 0,
            timers: BTreeMap::new(),
            enrolled: false,
            down: true,
            crash_mid_step: false,
            revoked: false,
            malicious: false,
            append_only: true,
            clinical_fault: huddle::node::ClinicalFault::None,
        }
    }

    pub fn is_member(&self) -> bool {
        self.kind == Kind::Member
    }

    pub fn up(&self) -> bool {
        self.node.is_some()
    }

    /// This device's clock, given the simulated time in microseconds.
    pub fn now_ms(&self, sim_us: u64) -> Millis {
        let t = (EPOCH_MS + sim_us / 1000) as i64 + self.skew_ms;
        t.max(0) as Millis
    }

    /// Builds the node from the store. An error is a core bug: a store that
    /// a crash left behind must always load.
    pub fn boot(&mut self) -> Result<(), String> {
        // As the shell does: conversations are read on first use, here from
        // a copy of the store as it is at boot (all a loader may ever see).
        let loader = store::Loader(std::sync::Arc::new(self.store.clone()));
        let stored = store::load_lazy(&self.store, loader).map_err(|e| e.to_string())?;
        let node = Node::new(
            self.key.clone(),
            self.cert.clone(),
            stored,
            NodeConfig {
                append_only: self.append_only,
                clinical_fault: self.clinical_fault,
                ..NodeConfig::default()
            },
            &mut self.rng,
        )
        .map_err(|e| e.to_string())?;
        self.node = Some(node);
        self.enrolled = true;
        self.down = false;
        Ok(())
    }

    /// Power cut: everything not flushed is lost, the node and its timers
    /// with it.
    pub fn crash(&mut self) {
        self.store.crash();
        self.node = None;
        self.timers.clear();
        self.inc += 1;
        self.down = true;
        self.crash_mid_step = false;
    }
}
