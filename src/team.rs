//! The team document: the replicated member directory (certificates) and the
//! revocation list, both as authority-signed entries.
//!
//! Document schema (protocol/sync.md): root map `certs` (device id, as its
//! PeerId text → certificate bytes), root map `revocations` (revocation key
//! hex → revocation bytes), root map `policy` (`clinical` → the authority's
//! signed clinical policy), root map `oncall` (assignment id hex → a signed
//! on-call assignment).
//!
//! Invariant: the document is only a carrier. Nothing in it is trusted until
//! its authority signature verifies; unsigned or foreign entries are ignored,
//! and a revocation once verified is kept even if a peer deletes it.

use std::collections::BTreeMap;

use automerge::ObjType;

use crate::clinical::policy::POLICY_KEY;
use crate::clinical::roster::AssignmentId;
use crate::clinical::{Assignment, SignedPolicy};
use crate::ids::{DeviceId, Millis, TeamId};
use crate::membership::{Certificate, Revocation, Revocations};
use crate::replica::{Entry, Persist, Replica, ReplicaError, Schema};

pub const SCHEMA: Schema = Schema {
    roots: &[
        ("certs", ObjType::Map),
        ("revocations", ObjType::Map),
        ("policy", ObjType::Map),
        ("oncall", ObjType::Map),
    ],
    page_len: 0,
};
const CERTS: usize = 0;
const REVOCATIONS: usize = 1;
const POLICY: usize = 2;
const ONCALL: usize = 3;

/// The team document's id (conversation ids are hashes): version 2, with
/// the clinical policy and the roster (sync.md §7.6).
pub const TEAM_DOC_ID: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// The version-1 team document (certificates and revocations only), read
/// once at start to carry its entries into version 2 (`TeamDoc::upgrade`).
pub const TEAM_DOC_V1_ID: [u8; 16] = [0; 16];
const SCHEMA_V1: Schema = Schema {
    roots: &[("certs", ObjType::Map), ("revocations", ObjType::Map)],
    page_len: 0,
};

/// What new entries changed in the team's view.
#[derive(Clone, Debug, Default)]
pub struct TeamApplied {
    pub certificates: Vec<Certificate>,
    /// Those of `certificates` for devices the directory did not hold (not
    /// renewals).
    pub new_devices: Vec<Certificate>,
    pub revocations: Vec<Revocation>,
    /// The clinical policy or the roster changed.
    pub clinical: bool,
    pub rejected: usize,
}

#[derive(Clone)]
pub struct TeamDoc {
    team: TeamId,
    replica: Replica,
    /// Every verified certificate, by device (the newest expiry wins).
    pub directory: BTreeMap<DeviceId, Certificate>,
    pub revoked: Revocations,
    /// The newest expiry of each device's certificate as found in the document.
    published: BTreeMap<DeviceId, Millis>,
    /// The newest verified clinical policy, if the authority set one.
    policy: Option<SignedPolicy>,
    /// Every on-call assignment whose signature verifies (whether its
    /// signer may assign the role is checked where it is used).
    pub assignments: BTreeMap<AssignmentId, Assignment>,
}

/// What a peer may put into the team document (sync.md §7.5): a
/// certificate signed by the team authority under its device's id, never
/// with an earlier expiry than the one that key holds; a revocation that
/// verifies for the team under its revocation key.
fn entry_rule(team: TeamId) -> crate::replica::Rule {
    use crate::replica::Write;
    std::sync::Arc::new(move |write, value| match write {
        Write::Put {
            root: CERTS,
            key,
            current,
        } => {
            let c = Certificate::decode(value)
                .map_err(|e| format!("a certificate that does not decode: {e}"))?;
            if c.device.to_string() != key {
                return Err("a certificate under another device's key".into());
            }
            if !c.is_signed_by(&team) {
                return Err("a certificate not signed by the team authority".into());
            }
            let earlier = current
                .iter()
                .filter_map(|v| Certificate::decode(v).ok())
                .any(|old| old.device == c.device && c.expires < old.expires);
            if earlier {
                return Err("a certificate that replaces one with a later expiry".into());
            }
            Ok(())
        }
        Write::Put {
            root: REVOCATIONS,
            key,
            ..
        } => {
            let r = Revocation::decode(value)
                .map_err(|e| format!("a revocation that does not decode: {e}"))?;
            if data_encoding::HEXLOWER.encode(&r.key()) != key {
                return Err("a revocation under another revocation's key".into());
            }
            if !r.verify(&team) {
                return Err("a revocation that does not verify for the team".into());
            }
            Ok(())
        }
        Write::Put {
            root: POLICY,
            key,
            current,
        } => {
            let p = SignedPolicy::decode(value)
                .map_err(|e| format!("a clinical policy that does not decode: {e}"))?;
            if key != POLICY_KEY {
                return Err("a clinical policy under another key".into());
            }
            if !p.verify(&team) {
                return Err("a clinical policy not signed by the team authority".into());
            }
            let older = current
                .iter()
                .filter_map(|v| SignedPolicy::decode(v).ok())
                .any(|old| p.issued < old.issued);
            if older {
                return Err("a clinical policy that replaces a newer one".into());
            }
            Ok(())
        }
        Write::Put {
            root: ONCALL, key, ..
        } => {
            let a = Assignment::decode(value)
                .map_err(|e| format!("an on-call assignment that does not decode: {e}"))?;
            if a.doc_key() != key {
                return Err("an on-call assignment under another key".into());
            }
            if !a.verify(&team) {
                return Err("an on-call assignment whose signature does not verify".into());
            }
            Ok(())
        }
        Write::Insert { .. } | Write::Put { .. } => {
            Err("a write outside the team document's maps".into())
        }
    })
}

impl TeamDoc {
    pub fn new(team: TeamId, actor: &automerge::ActorId) -> TeamDoc {
        TeamDoc {
            team,
            replica: Replica::new(&TEAM_DOC_ID, SCHEMA, actor).with_rule(entry_rule(team)),
            directory: BTreeMap::new(),
            revoked: Revocations::default(),
            published: BTreeMap::new(),
            policy: None,
            assignments: BTreeMap::new(),
        }
    }

    pub fn load(
        team: TeamId,
        actor: &automerge::ActorId,
        snapshot: Option<&[u8]>,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<(TeamDoc, TeamApplied), ReplicaError> {
        let (replica, entries) = match Replica::load(&TEAM_DOC_ID, SCHEMA, actor, snapshot, chunks)
        {
            Ok(loaded) => loaded,
            Err(e) => {
                // Every member holds the team document: start with what
                // can be read, and take the rest from peers, rather than
                // keep the device from starting.
                let (replica, entries, skipped) =
                    Replica::salvage(&TEAM_DOC_ID, SCHEMA, actor, snapshot, chunks);
                tracing::error!("the stored team document is damaged ({e}): {skipped} stored part(s) could not be read and are skipped (kept on disk); what they held comes back from peers");
                (replica, entries)
            }
        };
        let mut t = TeamDoc {
            team,
            replica: replica.with_rule(entry_rule(team)),
            directory: BTreeMap::new(),
            revoked: Revocations::default(),
            published: BTreeMap::new(),
            policy: None,
            assignments: BTreeMap::new(),
        };
        let applied = t.index(entries);
        Ok((t, applied))
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    pub fn index(&mut self, entries: Vec<Entry>) -> TeamApplied {
        let mut applied = TeamApplied::default();
        for e in entries {
            match e {
                Entry::Keyed {
                    root: CERTS, value, ..
                } => match Certificate::decode(&value) {
                    // Only the team and signature are checked here; expiry and
                    // revocation are checked whenever the certificate is used.
                    Ok(c) if c.is_signed_by(&self.team) => {
                        let e = self.published.entry(c.device).or_default();
                        *e = (*e).max(c.expires);
                        let new = !self.directory.contains_key(&c.device);
                        if self.learn_certificate(c.clone()) {
                            if new {
                                applied.new_devices.push(c.clone());
                            }
                            applied.certificates.push(c);
                        }
                    }
                    _ => applied.rejected += 1,
                },
                Entry::Keyed {
                    root: REVOCATIONS,
                    value,
                    ..
                } => match Revocation::decode(&value) {
                    Ok(r) if r.verify(&self.team) => {
                        if self.revoked.insert_signed(&r) {
                            applied.revocations.push(r);
                        }
                    }
                    _ => applied.rejected += 1,
                },
                Entry::Keyed {
                    root: POLICY,
                    value,
                    ..
                } => match SignedPolicy::decode(&value) {
                    Ok(p) if p.verify(&self.team) => {
                        if self.policy.as_ref().is_none_or(|old| p.rank() > old.rank()) {
                            self.policy = Some(p);
                            applied.clinical = true;
                        }
                    }
                    _ => applied.rejected += 1,
                },
                Entry::Keyed {
                    root: ONCALL,
                    value,
                    ..
                } => match Assignment::decode(&value) {
                    Ok(a) if a.verify(&self.team) => {
                        applied.clinical |= self.assignments.insert(a.id(), a).is_none();
                    }
                    _ => applied.rejected += 1,
                },
                _ => applied.rejected += 1,
            }
        }
        applied
    }

    /// The clinical policy in force: the authority's newest, or the default.
    pub fn policy(&self) -> Option<&SignedPolicy> {
        self.policy.as_ref()
    }

    /// Sets a clinical policy the authority signed; returns true if it is
    /// now the one in force.
    pub fn set_policy(&mut self, now: Millis, p: &SignedPolicy) -> Result<bool, ReplicaError> {
        if !p.verify(&self.team)
            || self
                .policy
                .as_ref()
                .is_some_and(|old| old.rank() >= p.rank())
        {
            return Ok(false);
        }
        self.replica.put(now, POLICY, POLICY_KEY, p.encode())?;
        self.policy = Some(p.clone());
        Ok(true)
    }

    /// Adds an on-call assignment whose signature verifies; returns true if
    /// it was new.
    pub fn add_assignment(&mut self, now: Millis, a: &Assignment) -> Result<bool, ReplicaError> {
        if !a.verify(&self.team) || self.assignments.contains_key(&a.id()) {
            return Ok(false);
        }
        self.replica.put(now, ONCALL, &a.doc_key(), a.encode())?;
        self.assignments.insert(a.id(), a.clone());
        Ok(true)
    }

    /// A version-1 team document's verified entries, written into this
    /// (version-2) document as local changes. Returns how many were carried.
    pub fn upgrade(
        &mut self,
        now: Millis,
        snapshot: Option<&[u8]>,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<usize, ReplicaError> {
        let actor = automerge::ActorId::from([0xff; 16].as_slice());
        let (_, entries, _) =
            Replica::salvage(&TEAM_DOC_V1_ID, SCHEMA_V1, &actor, snapshot, chunks);
        let mut carried = 0;
        for e in entries {
            let Entry::Keyed { root, value, .. } = e else {
                continue;
            };
            let done = match root {
                CERTS => match Certificate::decode(&value) {
                    Ok(c) => self.add_certificate(now, &c)?,
                    Err(_) => false,
                },
                REVOCATIONS => match Revocation::decode(&value) {
                    Ok(r) => self.add_revocation(now, &r)?,
                    Err(_) => false,
                },
                _ => false,
            };
            carried += usize::from(done);
        }
        Ok(carried)
    }

    fn learn_certificate(&mut self, c: Certificate) -> bool {
        match self.directory.get(&c.device) {
            Some(old) if old.expires >= c.expires => false,
            _ => {
                self.directory.insert(c.device, c);
                true
            }
        }
    }

    /// Publishes a certificate (ours, or one a peer showed us) in the directory.
    /// Returns true if the document changed.
    pub fn add_certificate(&mut self, now: Millis, c: &Certificate) -> Result<bool, ReplicaError> {
        if !c.is_signed_by(&self.team) {
            return Ok(false);
        }
        self.learn_certificate(c.clone());
        if self
            .published
            .get(&c.device)
            .is_some_and(|e| *e >= c.expires)
        {
            return Ok(false);
        }
        self.replica
            .put(now, CERTS, &c.device.to_string(), c.encode())?;
        self.published.insert(c.device, c.expires);
        Ok(true)
    }

    /// Adds a verified revocation; returns true if it was new.
    pub fn add_revocation(&mut self, now: Millis, r: &Revocation) -> Result<bool, ReplicaError> {
        if !r.verify(&self.team) {
            return Ok(false);
        }
        let key = data_encoding::HEXLOWER.encode(&r.key());
        if self.replica.contains_key(REVOCATIONS, &key) {
            return Ok(self.revoked.insert_signed(r));
        }
        self.replica.put(now, REVOCATIONS, &key, r.encode())?;
        Ok(self.revoked.insert_signed(r))
    }

    pub fn take_persist(&mut self) -> Option<Persist> {
        self.replica.take_persist()
    }
}

/// A version-1 team document holding `certs` and `revocations`, as the
/// change bytes a format-5 store kept in its first chunk (for the upgrade
/// test of storage.md §5.1).
#[doc(hidden)]
pub fn v1_document(certs: &[Certificate], revocations: &[Revocation]) -> Vec<Vec<u8>> {
    let actor = automerge::ActorId::from([7u8; 16].as_slice());
    let mut r = Replica::new(&TEAM_DOC_V1_ID, SCHEMA_V1, &actor);
    let mut out = Vec::new();
    let mut take = |r: &mut Replica| match r.take_persist() {
        Some(Persist::Chunk { bytes, .. }) | Some(Persist::Snapshot { bytes, .. }) => {
            out.push(bytes)
        }
        None => {}
    };
    for c in certs {
        r.put(0, CERTS, &c.device.to_string(), c.encode())
            .expect("a fresh document takes puts");
        take(&mut r);
    }
    for v in revocations {
        let key = data_encoding::HEXLOWER.encode(&v.key());
        r.put(0, REVOCATIONS, &key, v.encode())
            .expect("a fresh document takes puts");
        take(&mut r);
    }
    out
}
