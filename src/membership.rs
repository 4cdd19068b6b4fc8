//! Team membership: certificates signed by the team authority that bind a
//! device to a member (name, roles) in a team until an expiry, revocations
//! signed by the same authority, and the compact text token that carries a
//! certificate between devices (copy-paste or QR code). A certificate shows
//! strangers only its pass (`pass.rs`).
//!
//! Invariant: [`Certificate::check`] (and, for the pass a hello carries,
//! [`Pass::check`] over the same signed bytes) is the single place that
//! decides whether a certificate is valid now; every gate (hello, sync,
//! rendering) calls it.

mod outdated;
mod pass;
mod policy;
mod revocation;

pub use outdated::outdated_request;
pub use pass::{member_tag, Pass, Secret, MEMBER_TAG_LEN, PASS_LEN, SALT_LEN};
pub use policy::TeamPolicy;
pub use revocation::{Revocation, RevocationTarget, Revocations};

use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, domain, AuthorityKey, SIGNATURE_LEN};
use crate::ids::{DeviceId, MemberId, Millis, TeamId};

pub const MAX_NAME_LEN: usize = 100;
pub const MAX_ROLE_LEN: usize = 64;
pub const MAX_ROLES: usize = 16;
/// Tolerated clock difference when checking `issued` (a device whose clock is
/// a little behind the authority's must still accept a fresh certificate).
pub const ISSUE_SKEW_MS: Millis = 10 * 60 * 1000;

const CERT_VERSION: u8 = 2;
const REVOCATION_VERSION: u8 = 1;
const TOKEN_PREFIX: &str = "HUDDLE1:";

/// Why a certificate is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertError {
    #[error("the certificate belongs to another team")]
    WrongTeam,
    #[error("the certificate's signature does not verify")]
    BadSignature,
    #[error("the certificate is not valid yet")]
    NotYetValid,
    #[error("the certificate has expired")]
    Expired,
    #[error("this device has been revoked")]
    RevokedDevice,
    #[error("this member has been revoked")]
    RevokedMember,
    #[error("the certificate is for another device")]
    WrongDevice,
}

/// Why a token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("this is not a huddle membership token (it should start with {TOKEN_PREFIX})")]
    Prefix,
    #[error("the token is damaged: it is not valid base32; copy it again in full")]
    Encoding,
    #[error("the token is damaged (checksum mismatch); copy it again in full")]
    Checksum,
    #[error("this membership token is from an older huddle (certificate version {0}): ask your team admin for a new token")]
    Outdated(u8),
    #[error("the token could not be decoded: {0}")]
    Decode(#[from] DecodeError),
}

/// A membership certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub team: TeamId,
    pub team_name: String,
    pub member: MemberId,
    pub display_name: String,
    pub roles: Vec<String>,
    pub device: DeviceId,
    pub issued: Millis,
    pub expires: Millis,
    /// Drawn by the authority (derived from its signature over the request,
    /// so unguessable without its key): it keeps the secret digest a pass
    /// carries from confirming guesses of names and roles.
    pub salt: [u8; SALT_LEN],
    pub signature: [u8; SIGNATURE_LEN],
}

/// The fields an authority signs.
#[derive(Clone, Debug)]
pub struct CertificateRequest {
    pub team_name: String,
    pub member: MemberId,
    pub display_name: String,
    pub roles: Vec<String>,
    pub device: DeviceId,
    pub issued: Millis,
    pub expires: Millis,
}

/// A user-supplied field that does not fit the certificate's limits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertFieldError {
    #[error("names must be 1 to {MAX_NAME_LEN} bytes long")]
    Name,
    #[error("roles must be 1 to {MAX_ROLE_LEN} bytes of lowercase letters, digits or '-', at most {MAX_ROLES} of them")]
    Role,
    #[error("the expiry must be after the issue time")]
    Expiry,
}

/// A role is a short lowercase slug, e.g. `charge-nurse`.
pub fn valid_role(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= MAX_ROLE_LEN
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_name(n: &str) -> bool {
    !n.trim().is_empty() && n.len() <= MAX_NAME_LEN
}

impl CertificateRequest {
    pub fn sign(self, authority: &AuthorityKey) -> Result<Certificate, CertFieldError> {
        if !valid_name(&self.team_name) || !valid_name(&self.display_name) {
            return Err(CertFieldError::Name);
        }
        if self.roles.len() > MAX_ROLES || !self.roles.iter().all(|r| valid_role(r)) {
            return Err(CertFieldError::Role);
        }
        if self.expires <= self.issued {
            return Err(CertFieldError::Expiry);
        }
        let mut cert = Certificate {
            team: authority.team_id(),
            team_name: self.team_name,
            member: self.member,
            display_name: self.display_name,
            roles: self.roles,
            device: self.device,
            issued: self.issued,
            expires: self.expires,
            salt: [0; SALT_LEN],
            signature: [0; SIGNATURE_LEN],
        };
        // Ed25519 signing is deterministic and needs the authority's secret,
        // so this salt is as unguessable as a drawn one, and signing stays a
        // pure function of the request (no rng to thread through callers).
        let mut w = Writer::with_capacity(256);
        w.raw(&cert.team.0).raw(&cert.device.0);
        cert.secret().write(&mut w);
        w.u64_be(cert.issued).u64_be(cert.expires);
        let seed = authority.sign(domain::CERTIFICATE_SALT, w.as_slice());
        cert.salt = crypto::sha256(&[domain::CERTIFICATE_SALT, &seed])[..SALT_LEN]
            .try_into()
            .expect("16 bytes");
        cert.signature = authority.sign(domain::CERTIFICATE, &cert.signed_bytes());
        Ok(cert)
    }
}

/// The bytes the authority signs (after the domain tag): what a pass and a
/// full certificate both rebuild.
pub(crate) fn signed_message(
    team: &TeamId,
    device: &DeviceId,
    issued: Millis,
    expires: Millis,
    tag: &[u8; MEMBER_TAG_LEN],
    digest: &[u8; 32],
) -> Vec<u8> {
    let mut w = Writer::with_capacity(1 + 32 + 32 + 16 + MEMBER_TAG_LEN + 32);
    w.u8(CERT_VERSION)
        .raw(&team.0)
        .raw(&device.0)
        .u64_be(issued)
        .u64_be(expires)
        .raw(tag)
        .raw(digest);
    w.finish()
}

/// The checks that can change over time and need no member id.
pub(crate) fn valid_standing(
    issued: Millis,
    expires: Millis,
    device: &DeviceId,
    now: Millis,
    revoked: &Revocations,
) -> Result<(), CertError> {
    if issued > now.saturating_add(ISSUE_SKEW_MS) {
        return Err(CertError::NotYetValid);
    }
    if now >= expires {
        return Err(CertError::Expired);
    }
    if revoked.devices.contains(device) {
        return Err(CertError::RevokedDevice);
    }
    Ok(())
}

impl Certificate {
    fn signed_bytes(&self) -> Vec<u8> {
        signed_message(
            &self.team,
            &self.device,
            self.issued,
            self.expires,
            &member_tag(&self.member, &self.device),
            &self.secret().digest(),
        )
    }

    /// `version ‖ team ‖ device ‖ issued ‖ expires ‖ secret ‖ signature`
    /// (wire.md §4.1).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.u8(CERT_VERSION)
            .raw(&self.team.0)
            .raw(&self.device.0)
            .u64_be(self.issued)
            .u64_be(self.expires);
        self.secret().write(&mut w);
        w.raw(&self.signature);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Certificate, DecodeError> {
        let mut r = Reader::new(bytes);
        let cert = Self::read(&mut r)?;
        r.finish()?;
        Ok(cert)
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Certificate, DecodeError> {
        let version = r.u8("certificate version")?;
        if version != CERT_VERSION {
            return Err(DecodeError::Unknown("certificate version", version.into()));
        }
        let team = TeamId(r.array("team id")?);
        let device = DeviceId(r.array("device id")?);
        let issued = r.u64_be("issued")?;
        let expires = r.u64_be("expires")?;
        let secret = Secret::read(r)?;
        let signature = r.array("certificate signature")?;
        Ok(Certificate {
            team,
            team_name: secret.team_name,
            member: secret.member,
            display_name: secret.display_name,
            roles: secret.roles,
            device,
            issued,
            expires,
            salt: secret.salt,
            signature,
        })
    }

    /// Is this a certificate of `team`, signed by its authority? (No expiry
    /// or revocation check: see [`Certificate::check`].)
    pub fn is_signed_by(&self, team: &TeamId) -> bool {
        self.team == *team
            && crypto::verify(
                &self.team.0,
                domain::CERTIFICATE,
                &self.signed_bytes(),
                &self.signature,
            )
    }

    /// Is this certificate valid for `team` at `now`, given what is revoked?
    pub fn check(
        &self,
        team: &TeamId,
        now: Millis,
        revoked: &Revocations,
    ) -> Result<(), CertError> {
        if self.team != *team {
            return Err(CertError::WrongTeam);
        }
        if !crypto::verify(
            &self.team.0,
            domain::CERTIFICATE,
            &self.signed_bytes(),
            &self.signature,
        ) {
            return Err(CertError::BadSignature);
        }
        self.check_standing(now, revoked)
    }

    /// The checks of [`Certificate::check`] that can change over time —
    /// validity period and revocation — for a certificate whose team and
    /// signature were already checked. Re-checking connected peers uses this:
    /// a signature does not stop verifying, and verifying it every time costs
    /// a node 40 µs per peer per check.
    pub fn check_standing(&self, now: Millis, revoked: &Revocations) -> Result<(), CertError> {
        valid_standing(self.issued, self.expires, &self.device, now, revoked)?;
        if revoked.members.contains(&self.member) {
            return Err(CertError::RevokedMember);
        }
        Ok(())
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The copy-pasteable token: `HUDDLE1:` then RFC 4648 base32 (no padding)
    /// of the certificate bytes and a 4-byte SHA-256 checksum. Every character
    /// is in the QR alphanumeric set.
    pub fn to_token(&self) -> String {
        let mut b = self.encode();
        let sum = crypto::sha256(&[&b]);
        b.extend_from_slice(&sum[..4]);
        format!("{TOKEN_PREFIX}{}", data_encoding::BASE32_NOPAD.encode(&b))
    }

    pub fn from_token(token: &str) -> Result<Certificate, TokenError> {
        let bytes = token_bytes(token)?;
        match Certificate::decode(&bytes) {
            Err(DecodeError::Unknown("certificate version", v)) if v < u64::from(CERT_VERSION) => {
                Err(TokenError::Outdated(v as u8))
            }
            r => Ok(r?),
        }
    }
}

/// A token's certificate bytes, its prefix, base32 and checksum checked.
fn token_bytes(token: &str) -> Result<Vec<u8>, TokenError> {
    let t: String = token.split_whitespace().collect();
    let body = t
        .strip_prefix(TOKEN_PREFIX)
        .or_else(|| t.strip_prefix(&TOKEN_PREFIX.to_ascii_lowercase()))
        .ok_or(TokenError::Prefix)?;
    let bytes = data_encoding::BASE32_NOPAD
        .decode(body.to_ascii_uppercase().as_bytes())
        .map_err(|_| TokenError::Encoding)?;
    if bytes.len() < 4 {
        return Err(TokenError::Encoding);
    }
    let (cert, sum) = bytes.split_at(bytes.len() - 4);
    if crypto::sha256(&[cert])[..4] != *sum {
        return Err(TokenError::Checksum);
    }
    Ok(cert.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn setup() -> (AuthorityKey, Certificate) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let auth = AuthorityKey::generate(&mut rng);
        let dev = crate::crypto::DeviceKey::generate(&mut rng);
        let cert = CertificateRequest {
            team_name: "St Mary Ward 7".into(),
            member: MemberId([1; 16]),
            display_name: "Ana Silva".into(),
            roles: vec!["nurse".into(), "charge-nurse".into()],
            device: dev.device_id(),
            issued: 1_000,
            expires: 100_000,
        }
        .sign(&auth)
        .unwrap();
        (auth, cert)
    }

    #[test]
    fn token_round_trip_and_checks() {
        let (auth, cert) = setup();
        let token = cert.to_token();
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b':'));
        let back = Certificate::from_token(&token).unwrap();
        assert_eq!(back, cert);
        let none = Revocations::default();
        assert_eq!(back.check(&auth.team_id(), 2_000, &none), Ok(()));
        assert_eq!(
            back.check(&TeamId([9; 32]), 2_000, &none),
            Err(CertError::WrongTeam)
        );
        assert_eq!(
            back.check(&auth.team_id(), 100_000, &none),
            Err(CertError::Expired)
        );
        let mut revoked = Revocations::default();
        revoked.insert(RevocationTarget::Member(cert.member));
        assert_eq!(
            back.check(&auth.team_id(), 2_000, &revoked),
            Err(CertError::RevokedMember)
        );
        let mut altered = cert.clone();
        altered.roles.push("physician".into());
        assert_eq!(
            altered.check(&auth.team_id(), 2_000, &none),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn a_pass_shows_nothing_of_who_and_rebuilds_the_certificate() {
        let (auth, cert) = setup();
        let team = auth.team_id();
        let none = Revocations::default();
        let pass = Pass::decode(&cert.pass().encode()).unwrap();
        assert_eq!(pass.encode().len(), PASS_LEN);
        for needle in [
            cert.display_name.as_bytes(),
            cert.team_name.as_bytes(),
            &cert.member.0,
            &team.0,
            b"nurse",
        ] {
            assert!(!pass.encode().windows(needle.len()).any(|w| w == needle));
        }
        assert_eq!(pass.check(&team, 2_000, &none), Ok(()));
        assert_eq!(
            pass.check(&TeamId([9; 32]), 2_000, &none),
            Err(CertError::WrongTeam)
        );
        let mut revoked = Revocations::default();
        revoked.insert(RevocationTarget::Member(MemberId([2; 16])));
        assert_eq!(pass.check(&team, 2_000, &revoked), Ok(()));
        revoked.insert(RevocationTarget::Member(cert.member));
        assert_eq!(
            pass.check(&team, 2_000, &revoked),
            Err(CertError::RevokedMember)
        );
        assert_eq!(pass.join(&team, cert.secret()), Ok(cert.clone()));
        let mut other = cert.secret();
        other.roles.push("physician".into());
        assert_eq!(pass.join(&team, other), Err(CertError::BadSignature));
    }

    #[test]
    fn an_older_token_says_so() {
        let (_, cert) = setup();
        let mut b = cert.encode();
        b[0] = 1;
        let sum = crypto::sha256(&[&b]);
        b.extend_from_slice(&sum[..4]);
        let token = format!("{TOKEN_PREFIX}{}", data_encoding::BASE32_NOPAD.encode(&b));
        assert_eq!(
            Certificate::from_token(&token),
            Err(TokenError::Outdated(1))
        );
    }

    #[test]
    fn damaged_tokens_are_explained() {
        let (_, cert) = setup();
        let token = cert.to_token();
        assert_eq!(Certificate::from_token("hello"), Err(TokenError::Prefix));
        let mut chars: Vec<char> = token.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let damaged: String = chars.into_iter().collect();
        assert_eq!(Certificate::from_token(&damaged), Err(TokenError::Checksum));
    }

    #[test]
    fn revocations_verify() {
        let (auth, cert) = setup();
        let r = Revocation::sign(&auth, RevocationTarget::Device(cert.device), 5);
        let back = Revocation::decode(&r.encode()).unwrap();
        assert!(back.verify(&auth.team_id()));
        assert!(!back.verify(&TeamId([3; 32])));
    }
}
