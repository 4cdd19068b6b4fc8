//! A certificate split in two for the hello (protocol/wire.md §4.2): the
//! public [`Pass`] a node shows anyone it connects to, and the [`Secret`]
//! part (team name, member id, name, roles, salt) it shows only to a peer
//! whose own pass verified under our team key. The authority's signature
//! covers the secret part only through a salted digest and the member only
//! through a per-device tag, so a pass tells a stranger nothing it could
//! test a guess of a name, a role or a team name against.
//!
//! Invariant: [`Pass::check`] and [`Pass::join`] decide with the same
//! signed bytes as [`Certificate::check`]; a pass that passes both rebuilds
//! exactly the certificate the authority signed, or nothing.

use super::{
    signed_message, valid_standing, CertError, Certificate, Revocation, RevocationTarget,
    Revocations, MAX_NAME_LEN, MAX_ROLES, MAX_ROLE_LEN,
};
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, domain, SIGNATURE_LEN};
use crate::ids::{DeviceId, MemberId, Millis, TeamId};

/// Bytes of a certificate's salt.
pub const SALT_LEN: usize = 16;
/// Bytes of a member tag.
pub const MEMBER_TAG_LEN: usize = 16;
/// Bytes of an encoded pass.
pub const PASS_LEN: usize = 32 + 8 + 8 + MEMBER_TAG_LEN + 32 + SIGNATURE_LEN;

const MEMBER_TAG_LABEL: &[u8] = b"huddle/member-tag/v1";
const SECRET_LABEL: &[u8] = b"huddle/certificate-secret/v1";

/// `SHA-256("huddle/member-tag/v1" ‖ member ‖ device)[0..16]`: lets a
/// verifier that knows which members are revoked test a pass against them,
/// without the pass naming its member, and differs per device, so two
/// devices of one member cannot be linked by it.
pub fn member_tag(member: &MemberId, device: &DeviceId) -> [u8; MEMBER_TAG_LEN] {
    let h = crypto::sha256(&[MEMBER_TAG_LABEL, &member.0, &device.0]);
    h[..MEMBER_TAG_LEN].try_into().expect("16 bytes")
}

/// What a pass shows: who signed it can be tested, what it names cannot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    pub device: DeviceId,
    pub issued: Millis,
    pub expires: Millis,
    pub member_tag: [u8; MEMBER_TAG_LEN],
    pub secret_digest: [u8; 32],
    pub signature: [u8; SIGNATURE_LEN],
}

/// The part of a certificate only a proven member of our team sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub salt: [u8; SALT_LEN],
    pub team_name: String,
    pub member: MemberId,
    pub display_name: String,
    pub roles: Vec<String>,
}

impl Secret {
    pub fn write(&self, w: &mut Writer) {
        w.raw(&self.salt)
            .str(&self.team_name)
            .raw(&self.member.0)
            .str(&self.display_name)
            .varint(self.roles.len() as u64);
        for r in &self.roles {
            w.str(r);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        self.write(&mut w);
        w.finish()
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Secret, DecodeError> {
        let salt = r.array("salt")?;
        let team_name = r.str(MAX_NAME_LEN, "team name")?.to_owned();
        let member = MemberId(r.array("member id")?);
        let display_name = r.str(MAX_NAME_LEN, "display name")?.to_owned();
        let n = r.count(MAX_ROLES, 1, "roles")?;
        let mut roles = Vec::with_capacity(n);
        for _ in 0..n {
            roles.push(r.str(MAX_ROLE_LEN, "role")?.to_owned());
        }
        Ok(Secret {
            salt,
            team_name,
            member,
            display_name,
            roles,
        })
    }

    /// `SHA-256("huddle/certificate-secret/v1" ‖ encoding)`: the salt makes
    /// it useless for testing guesses of the fields.
    pub fn digest(&self) -> [u8; 32] {
        crypto::sha256(&[SECRET_LABEL, &self.encode()])
    }
}

impl Pass {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(PASS_LEN);
        w.raw(&self.device.0)
            .u64_be(self.issued)
            .u64_be(self.expires)
            .raw(&self.member_tag)
            .raw(&self.secret_digest)
            .raw(&self.signature);
        w.finish()
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Pass, DecodeError> {
        Ok(Pass {
            device: DeviceId(r.array("device id")?),
            issued: r.u64_be("issued")?,
            expires: r.u64_be("expires")?,
            member_tag: r.array("member tag")?,
            secret_digest: r.array("secret digest")?,
            signature: r.array("certificate signature")?,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Pass, DecodeError> {
        let mut r = Reader::new(bytes);
        let pass = Self::read(&mut r)?;
        r.finish()?;
        Ok(pass)
    }

    fn signed(&self, team: &TeamId) -> Vec<u8> {
        signed_message(
            team,
            &self.device,
            self.issued,
            self.expires,
            &self.member_tag,
            &self.secret_digest,
        )
    }

    /// Is this the pass of a valid certificate of `team` at `now`, given
    /// what is revoked? A pass carries no team: one of another team, or a
    /// damaged one, fails its signature under ours, and both are
    /// [`CertError::WrongTeam`] (the verifier cannot tell them apart). A
    /// revoked member is found by its tag for this pass's device.
    pub fn check(
        &self,
        team: &TeamId,
        now: Millis,
        revoked: &Revocations,
    ) -> Result<(), CertError> {
        if !crypto::verify(
            &team.0,
            domain::CERTIFICATE,
            &self.signed(team),
            &self.signature,
        ) {
            return Err(CertError::WrongTeam);
        }
        valid_standing(self.issued, self.expires, &self.device, now, revoked)?;
        if revoked
            .members
            .iter()
            .any(|m| member_tag(m, &self.device) == self.member_tag)
        {
            return Err(CertError::RevokedMember);
        }
        Ok(())
    }

    /// The signed revocation of this pass's device or member, if `revoked`
    /// holds one (sent to the device with its refusal, sync.md §2.1).
    pub fn revocation<'a>(&self, revoked: &'a Revocations) -> Option<&'a Revocation> {
        let device = revoked.signed.get(&RevocationTarget::Device(self.device));
        device.or_else(|| {
            revoked.signed.iter().find_map(|(t, r)| match t {
                RevocationTarget::Member(m) if member_tag(m, &self.device) == self.member_tag => {
                    Some(r)
                }
                _ => None,
            })
        })
    }

    /// The certificate this pass and `secret` make for `team`, if `secret`
    /// is the part the authority signed (its digest and member tag match).
    /// Check the result with [`Certificate::check`].
    pub fn join(&self, team: &TeamId, secret: Secret) -> Result<Certificate, CertError> {
        if secret.digest() != self.secret_digest
            || member_tag(&secret.member, &self.device) != self.member_tag
        {
            return Err(CertError::BadSignature);
        }
        Ok(Certificate {
            team: *team,
            team_name: secret.team_name,
            member: secret.member,
            display_name: secret.display_name,
            roles: secret.roles,
            device: self.device,
            issued: self.issued,
            expires: self.expires,
            salt: secret.salt,
            signature: self.signature,
        })
    }
}

impl Certificate {
    /// What this certificate shows anyone in a hello.
    pub fn pass(&self) -> Pass {
        Pass {
            device: self.device,
            issued: self.issued,
            expires: self.expires,
            member_tag: member_tag(&self.member, &self.device),
            secret_digest: self.secret().digest(),
            signature: self.signature,
        }
    }

    /// What this certificate shows only a proven member of its team.
    pub fn secret(&self) -> Secret {
        Secret {
            salt: self.salt,
            team_name: self.team_name.clone(),
            member: self.member,
            display_name: self.display_name.clone(),
            roles: self.roles.clone(),
        }
    }
}
