//! The team document: the replicated member directory (certificates) and the
//! revocation list, both as authority-signed entries.
//!
//! Document schema (protocol/sync.md): root map `certs` (device id, as its
//! PeerId text → certificate bytes), root map `revocations` (revocation key
//! hex → revocation bytes).
//!
//! Invariant: the document is only a carrier. Nothing in it is trusted until
//! its authority signature verifies; unsigned or foreign entries are ignored,
//! and a revocation once verified is kept even if a peer deletes it.

use std::collections::BTreeMap;

use automerge::ObjType;

use crate::ids::{DeviceId, Millis, TeamId};
use crate::membership::{Certificate, Revocation, Revocations};
use crate::replica::{Entry, Persist, Replica, ReplicaError, Schema};

pub const SCHEMA: Schema = Schema {
    roots: &[("certs", ObjType::Map), ("revocations", ObjType::Map)],
    page_len: 0,
};
const CERTS: usize = 0;
const REVOCATIONS: usize = 1;

/// The team document's id: all zeroes (conversation ids are random).
pub const TEAM_DOC_ID: [u8; 16] = [0; 16];

/// What new entries changed in the team's view.
#[derive(Clone, Debug, Default)]
pub struct TeamApplied {
    pub certificates: Vec<Certificate>,
    pub revocations: Vec<Revocation>,
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
                        if self.learn_certificate(c.clone()) {
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
                _ => applied.rejected += 1,
            }
        }
        applied
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
