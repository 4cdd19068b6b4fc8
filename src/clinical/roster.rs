//! The on-call roster: signed assignments ("charge-nurse is Ana Silva from
//! 19:00 to 07:00"), carried in the team document's `oncall` map under
//! their ids (sync.md §7.6), and who holds a role at a given time.
//!
//! Invariants:
//! - An assignment counts only if the team authority signed it, or a device
//!   whose valid certificate holds the role (the caller checks that against
//!   the directory: [`Signer`]).
//! - Who is on call is a pure function of the valid assignments and the
//!   time: an assignment that another covering one `replaces` drops out;
//!   of those left, the one issued last wins (ties: the greater id). More
//!   than one left is a *conflict* (made concurrently, in a partition),
//!   shown to be fixed by a new assignment that replaces them all.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, domain, AuthorityKey, DeviceKey, SIGNATURE_LEN};
use crate::ids::{DeviceId, MemberId, Millis, TeamId};
use crate::membership::{valid_role, MAX_ROLE_LEN};

const ONCALL_VERSION: u8 = 1;
/// Most members one assignment puts on call.
pub const MAX_HOLDERS: usize = 8;
/// Most assignments one replaces.
pub const MAX_REPLACES: usize = 32;
/// The longest shift one assignment covers: 31 days.
pub const MAX_SHIFT_MS: Millis = 31 * 86_400_000;

pub type AssignmentId = [u8; 16];

/// Who signed an assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    /// A member's device; it counts if that device's certificate (valid,
    /// not revoked, for `member`) holds the role.
    Device { device: DeviceId, member: MemberId },
    /// The team authority (an administrator: a device holding the team key).
    Authority,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub team: TeamId,
    pub role: String,
    /// Sorted, unique, 1..=[`MAX_HOLDERS`].
    pub holders: Vec<MemberId>,
    pub from_ms: Millis,
    pub to_ms: Millis,
    /// The signer's hybrid logical clock when it signed.
    pub issued: u64,
    /// Assignments this one takes precedence over (sorted, unique).
    pub replaces: Vec<AssignmentId>,
    pub signer: Signer,
    pub signature: [u8; SIGNATURE_LEN],
}

/// What an assignment says, before it is signed.
#[derive(Clone, Debug)]
pub struct AssignmentDraft {
    pub role: String,
    pub holders: Vec<MemberId>,
    pub from_ms: Millis,
    pub to_ms: Millis,
    pub issued: u64,
    pub replaces: Vec<AssignmentId>,
}

impl Assignment {
    pub fn sign_by_device(
        key: &DeviceKey,
        team: TeamId,
        member: MemberId,
        draft: AssignmentDraft,
    ) -> Result<Assignment, DecodeError> {
        let signer = Signer::Device {
            device: key.device_id(),
            member,
        };
        let mut a = Assignment::unsigned(team, signer, draft)?;
        a.signature = key.sign(domain::ONCALL, &a.signed_bytes());
        Ok(a)
    }

    pub fn sign_by_authority(
        authority: &AuthorityKey,
        draft: AssignmentDraft,
    ) -> Result<Assignment, DecodeError> {
        let mut a = Assignment::unsigned(authority.team_id(), Signer::Authority, draft)?;
        a.signature = authority.sign(domain::ONCALL, &a.signed_bytes());
        Ok(a)
    }

    fn unsigned(
        team: TeamId,
        signer: Signer,
        mut d: AssignmentDraft,
    ) -> Result<Assignment, DecodeError> {
        d.holders.sort();
        d.holders.dedup();
        d.replaces.sort();
        d.replaces.dedup();
        let a = Assignment {
            team,
            role: d.role,
            holders: d.holders,
            from_ms: d.from_ms,
            to_ms: d.to_ms,
            issued: d.issued,
            replaces: d.replaces,
            signer,
            signature: [0; SIGNATURE_LEN],
        };
        a.check()?;
        Ok(a)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if !valid_role(&self.role) {
            return Err(DecodeError::Invalid("an on-call role that is not a role"));
        }
        if self.holders.is_empty() || self.holders.len() > MAX_HOLDERS {
            return Err(DecodeError::Invalid("an assignment of 1 to 8 members"));
        }
        if self.to_ms <= self.from_ms || self.to_ms - self.from_ms > MAX_SHIFT_MS {
            return Err(DecodeError::Invalid(
                "a shift that ends before it starts, or lasts over 31 days",
            ));
        }
        if self.replaces.len() > MAX_REPLACES {
            return Err(DecodeError::TooLong("replaced assignments", MAX_REPLACES));
        }
        let sorted = |v: &[[u8; 16]]| v.windows(2).all(|p| p[0] < p[1]);
        let members: Vec<[u8; 16]> = self.holders.iter().map(|m| m.0).collect();
        if !sorted(&members) || !sorted(&self.replaces) {
            return Err(DecodeError::Invalid("lists not sorted and unique"));
        }
        Ok(())
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(160);
        w.u8(ONCALL_VERSION).raw(&self.team.0).str(&self.role);
        w.varint(self.holders.len() as u64);
        for m in &self.holders {
            w.raw(&m.0);
        }
        w.u64_be(self.from_ms)
            .u64_be(self.to_ms)
            .u64_be(self.issued)
            .varint(self.replaces.len() as u64);
        for r in &self.replaces {
            w.raw(r);
        }
        match self.signer {
            Signer::Device { device, member } => w.u8(1).raw(&device.0).raw(&member.0),
            Signer::Authority => w.u8(2),
        };
        w.finish()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.signed_bytes();
        b.extend_from_slice(&self.signature);
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Assignment, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("on-call version")?;
        if version != ONCALL_VERSION {
            return Err(DecodeError::Unknown("on-call version", version.into()));
        }
        let team = TeamId(r.array("team id")?);
        let role = r.str(MAX_ROLE_LEN, "on-call role")?.to_owned();
        let n = r.count(MAX_HOLDERS, 16, "on-call members")?;
        let holders = (0..n)
            .map(|_| r.array("on-call member").map(MemberId))
            .collect::<Result<_, _>>()?;
        let from_ms = r.u64_be("shift start")?;
        let to_ms = r.u64_be("shift end")?;
        let issued = r.u64_be("on-call issued")?;
        let n = r.count(MAX_REPLACES, 16, "replaced assignments")?;
        let replaces = (0..n)
            .map(|_| r.array("replaced assignment"))
            .collect::<Result<_, _>>()?;
        let signer = match r.u8("on-call signer")? {
            1 => Signer::Device {
                device: DeviceId(r.array("signer device")?),
                member: MemberId(r.array("signer member")?),
            },
            2 => Signer::Authority,
            s => return Err(DecodeError::Unknown("on-call signer", s.into())),
        };
        let signature = r.array("on-call signature")?;
        r.finish()?;
        let a = Assignment {
            team,
            role,
            holders,
            from_ms,
            to_ms,
            issued,
            replaces,
            signer,
            signature,
        };
        a.check()?;
        Ok(a)
    }

    /// Is the signature the signer's, for `team`? (Whether a device signer
    /// may assign this role is the directory's to say.)
    pub fn verify(&self, team: &TeamId) -> bool {
        let key = match &self.signer {
            Signer::Device { device, .. } => &device.0,
            Signer::Authority => &team.0,
        };
        self.team == *team
            && crypto::verify(key, domain::ONCALL, &self.signed_bytes(), &self.signature)
    }

    pub fn id(&self) -> AssignmentId {
        crypto::sha256(&[&self.signature])[..16]
            .try_into()
            .expect("16 bytes")
    }

    /// The key it lives under in the team document.
    pub fn doc_key(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.id())
    }

    pub fn covers(&self, t: Millis) -> bool {
        self.from_ms <= t && t < self.to_ms
    }
}

/// Who is on call for a role at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OnCall {
    /// The winning assignment's members (empty: nobody is assigned).
    pub holders: Vec<MemberId>,
    pub assignment: Option<AssignmentId>,
    /// Assignments that cover the time and that nothing replaces, besides
    /// the winner: made concurrently, to be resolved by a new assignment.
    pub conflicts: Vec<AssignmentId>,
}

/// The valid assignments (the caller filters by [`Assignment::verify`] and
/// the directory), by id.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    pub assignments: BTreeMap<AssignmentId, Assignment>,
}

impl Roster {
    pub fn on_call(&self, role: &str, t: Millis) -> OnCall {
        on_call(self.assignments.iter(), role, t)
    }

    /// Every role that has an assignment.
    pub fn roles(&self) -> std::collections::BTreeSet<&str> {
        self.assignments.values().map(|a| a.role.as_str()).collect()
    }

    /// The ids of the assignments for `role` that overlap `[from, to)`: what
    /// a new assignment for that time replaces.
    pub fn overlapping(&self, role: &str, from: Millis, to: Millis) -> Vec<AssignmentId> {
        self.assignments
            .iter()
            .filter(|(_, a)| a.role == role && a.from_ms < to && from < a.to_ms)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Who is on call for `role` at `t`, among `valid` assignments (see the
/// module's invariants): for a caller that filters them without copying.
pub fn on_call<'a>(
    valid: impl Iterator<Item = (&'a AssignmentId, &'a Assignment)>,
    role: &str,
    t: Millis,
) -> OnCall {
    let covering: Vec<(&AssignmentId, &Assignment)> = valid
        .filter(|(_, a)| a.role == role && a.covers(t))
        .collect();
    let mut live: Vec<(&AssignmentId, &Assignment)> = covering
        .iter()
        .filter(|(id, _)| !covering.iter().any(|(_, b)| b.replaces.contains(id)))
        .copied()
        .collect();
    live.sort_by_key(|(id, a)| (a.issued, **id));
    let Some((win, a)) = live.pop() else {
        return OnCall::default();
    };
    OnCall {
        holders: a.holders.clone(),
        assignment: Some(*win),
        conflicts: live.into_iter().map(|(id, _)| *id).collect(),
    }
}
