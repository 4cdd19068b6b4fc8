//! Minting memberships and revocations with the team key, for
//! `huddle team admit | revoke` and for the screen's Team page alike.
//!
//! Invariant: the team key is read from the data directory for each use and
//! never kept.

use rand_core::OsRng;

use super::{check_name, normalize_role, now_ms, CliError, Result};
use crate::crypto::AuthorityKey;
use crate::datadir::DataDir;
use crate::ids::{DeviceId, MemberId};
use crate::membership::{Certificate, CertificateRequest, Revocation, RevocationTarget, MAX_ROLES};

/// What an administrator asks to admit, as typed.
pub(crate) struct Admission<'a> {
    pub device: &'a str,
    pub member: Option<&'a str>,
    pub name: &'a str,
    pub roles: &'a [String],
    pub expires: &'a str,
}

pub(crate) fn roles(raw: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        let r = normalize_role(r)?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.len() > MAX_ROLES {
        return Err(CliError::usage(format!(
            "a member has at most {MAX_ROLES} roles"
        )));
    }
    Ok(out)
}

/// The team key in `dir`, with the team's own certificate `own` (for its
/// name), if they belong together.
pub(crate) fn authority(
    dir: &DataDir,
    own: Option<Certificate>,
) -> Result<(AuthorityKey, Certificate)> {
    let key = dir.authority()?.ok_or_else(|| {
        CliError::new(
            "this device does not hold a team key: run this on the device where the team was created (`huddle team create`)",
        )
    })?;
    let cert = own.filter(|c| c.team == key.team_id()).ok_or_else(|| {
        CliError::new("this device's team key does not match its membership: the data directory is inconsistent")
    })?;
    Ok((key, cert))
}

/// A membership certificate for `a`, signed with the team key.
pub(crate) fn admit(
    key: &AuthorityKey,
    own: &Certificate,
    a: &Admission<'_>,
) -> Result<Certificate> {
    let device: DeviceId = a.device.trim().parse().map_err(|_| {
        CliError::usage(format!(
            "\"{}\" is not a device id: it looks like 12D3KooW… (the device shows it with `huddle whoami`)",
            a.device
        ))
    })?;
    let member = match a.member.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => m.parse::<MemberId>().map_err(|_| {
            CliError::usage(format!(
                "\"{m}\" is not a member id (32 hex digits, shown by `huddle whoami`)"
            ))
        })?,
        None => MemberId::random(&mut OsRng),
    };
    let now = now_ms();
    Ok(CertificateRequest {
        team_name: own.team_name.clone(),
        member,
        display_name: check_name(a.name)?,
        roles: roles(a.roles)?,
        device,
        issued: now,
        expires: now.saturating_add(super::membership_length(a.expires)?),
    }
    .sign(key)?)
}

/// A revocation of `target`, signed with the team key; never of the
/// administrator's own device or member.
pub(crate) fn revoke(
    key: &AuthorityKey,
    own: &Certificate,
    target: RevocationTarget,
) -> Result<Revocation> {
    if target == RevocationTarget::Device(own.device)
        || target == RevocationTarget::Member(own.member)
    {
        return Err(CliError::new(
            "refusing to revoke this device's own membership: run the revocation from another administrator's device",
        ));
    }
    Ok(Revocation::sign(key, target, now_ms()))
}
