//! Revocations: the authority's signed statement that a device, or every
//! device of a member, is no longer in the team, and the set a node keeps
//! of every one it has verified (it only grows).

use std::collections::{BTreeMap, BTreeSet};

use super::REVOCATION_VERSION;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, domain, AuthorityKey, SIGNATURE_LEN};
use crate::ids::{DeviceId, MemberId, Millis, TeamId};

/// What a revocation names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RevocationTarget {
    Device(DeviceId),
    Member(MemberId),
}

/// An authority-signed revocation of a device or of a member (all devices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub team: TeamId,
    pub target: RevocationTarget,
    pub issued: Millis,
    pub signature: [u8; SIGNATURE_LEN],
}

impl Revocation {
    pub fn sign(authority: &AuthorityKey, target: RevocationTarget, issued: Millis) -> Revocation {
        let mut r = Revocation {
            team: authority.team_id(),
            target,
            issued,
            signature: [0; SIGNATURE_LEN],
        };
        r.signature = authority.sign(domain::REVOCATION, &r.signed_bytes());
        r
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.u8(REVOCATION_VERSION).raw(&self.team.0);
        match self.target {
            RevocationTarget::Device(d) => w.u8(1).raw(&d.0),
            RevocationTarget::Member(m) => w.u8(2).raw(&m.0),
        };
        w.u64_be(self.issued);
        w.finish()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.signed_bytes();
        b.extend_from_slice(&self.signature);
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Revocation, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("revocation version")?;
        if version != REVOCATION_VERSION {
            return Err(DecodeError::Unknown("revocation version", version.into()));
        }
        let team = TeamId(r.array("team id")?);
        let target = match r.u8("revocation target")? {
            1 => RevocationTarget::Device(DeviceId(r.array("device id")?)),
            2 => RevocationTarget::Member(MemberId(r.array("member id")?)),
            t => return Err(DecodeError::Unknown("revocation target", t.into())),
        };
        let issued = r.u64_be("issued")?;
        let signature = r.array("revocation signature")?;
        r.finish()?;
        Ok(Revocation {
            team,
            target,
            issued,
            signature,
        })
    }

    /// Signed by the authority of `team`?
    pub fn verify(&self, team: &TeamId) -> bool {
        self.team == *team
            && crypto::verify(
                &team.0,
                domain::REVOCATION,
                &self.signed_bytes(),
                &self.signature,
            )
    }

    /// A stable key for storing this revocation.
    pub fn key(&self) -> [u8; 16] {
        let h = crypto::sha256(&[&self.encode()]);
        h[..16].try_into().expect("16 bytes")
    }
}

/// The set of revoked devices and members. It only grows: once a node has
/// seen a valid revocation it never forgets it, whatever a peer's copy of the
/// team document says later.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    pub devices: BTreeSet<DeviceId>,
    pub members: BTreeSet<MemberId>,
    /// The signed revocation of each target, to show a revoked device why
    /// it is refused (sync.md §2.1).
    pub signed: BTreeMap<RevocationTarget, Revocation>,
}

impl Revocations {
    /// Adds a verified revocation's target; returns true if it was new.
    pub fn insert(&mut self, target: RevocationTarget) -> bool {
        match target {
            RevocationTarget::Device(d) => self.devices.insert(d),
            RevocationTarget::Member(m) => self.members.insert(m),
        }
    }

    /// Adds a verified revocation, keeping its signed form; returns true
    /// if its target is new.
    pub fn insert_signed(&mut self, r: &Revocation) -> bool {
        self.signed.entry(r.target).or_insert_with(|| r.clone());
        self.insert(r.target)
    }

    /// Everything `other` holds, added to this set.
    pub fn extend(&mut self, other: Revocations) {
        self.devices.extend(other.devices);
        self.members.extend(other.members);
        for (t, r) in other.signed {
            self.signed.entry(t).or_insert(r);
        }
    }

    /// The signed revocation of `device` or of `member`, if held.
    pub fn revocation_of(&self, device: &DeviceId, member: &MemberId) -> Option<&Revocation> {
        self.signed
            .get(&RevocationTarget::Device(*device))
            .or_else(|| self.signed.get(&RevocationTarget::Member(*member)))
    }

    pub fn is_revoked(&self, device: &DeviceId, member: &MemberId) -> bool {
        self.devices.contains(device) || self.members.contains(member)
    }
}
