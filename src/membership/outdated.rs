//! Reading a version-1 certificate (huddle before passes, protocol
//! version 3) only so that the authority that signed it can sign the same
//! fields again as version 2: an administrator's device upgraded from an
//! older huddle renews its own certificate instead of being locked out.
//!
//! Invariant: nothing here makes a version-1 certificate valid anywhere;
//! its signature is not even checked, because the only use of what it says
//! is a request that the team's authority key must sign anew.

use super::{token_bytes, CertificateRequest, MAX_NAME_LEN, MAX_ROLES, MAX_ROLE_LEN};
use crate::codec::{DecodeError, Reader};
use crate::ids::{DeviceId, MemberId, TeamId};

/// The team and the fields of the version-1 certificate in `token`, as a
/// request; `None` if it is not one.
pub fn outdated_request(token: &str) -> Option<(TeamId, CertificateRequest)> {
    let bytes = token_bytes(token).ok()?;
    read_v1(&bytes).ok()
}

fn read_v1(bytes: &[u8]) -> Result<(TeamId, CertificateRequest), DecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.u8("certificate version")?;
    if version != 1 {
        return Err(DecodeError::Unknown("certificate version", version.into()));
    }
    let team = TeamId(r.array("team id")?);
    let team_name = r.str(MAX_NAME_LEN, "team name")?.to_owned();
    let member = MemberId(r.array("member id")?);
    let display_name = r.str(MAX_NAME_LEN, "display name")?.to_owned();
    let n = r.count(MAX_ROLES, 1, "roles")?;
    let mut roles = Vec::with_capacity(n);
    for _ in 0..n {
        roles.push(r.str(MAX_ROLE_LEN, "role")?.to_owned());
    }
    let device = DeviceId(r.array("device id")?);
    let issued = r.u64_be("issued")?;
    let expires = r.u64_be("expires")?;
    let _signature: [u8; 64] = r.array("certificate signature")?;
    r.finish()?;
    Ok((
        team,
        CertificateRequest {
            team_name,
            member,
            display_name,
            roles,
            device,
            issued,
            expires,
        },
    ))
}
