//! The Team page's administrator actions, on a device that holds the team
//! key: admitting a device (the token as text and as a QR code) and
//! revoking a device or a member. Both mint or withdraw membership, so each
//! is confirmed with a fresh one-time login URL (`huddle open --print`),
//! proof that the person at the screen can act on this computer now and
//! not only that an unlocked page was left open.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::routes::{refuse, session_writer, Refusal};
use super::Web;
use crate::cli::admin;
use crate::datadir::DataDir;
use crate::ids::{DeviceId, MemberId};
use crate::membership::RevocationTarget;
use crate::net::NodeHandle;
use crate::node::Command;

pub(super) struct Admin {
    pub dir: DataDir,
    pub handle: NodeHandle,
}

impl Admin {
    /// Whether this device holds the team key now.
    pub fn holds_key(&self) -> bool {
        self.dir.authority().is_ok_and(|k| k.is_some())
    }

    fn authority(
        &self,
    ) -> Result<(crate::crypto::AuthorityKey, crate::membership::Certificate), String> {
        let own = self.dir.certificate().map_err(|e| e.to_string())?;
        admin::authority(&self.dir, own).map_err(|e| e.to_string())
    }
}

/// `POST /web/admin/admit`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdmitForm {
    pub device: String,
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The member id, to add a device of an existing member.
    #[serde(default)]
    pub member: Option<String>,
    /// e.g. `90d`; a year when absent.
    #[serde(default)]
    pub expires: Option<String>,
    /// A fresh one-time login URL.
    pub confirm: String,
}

/// The answer to an admission: the token the new device joins with.
#[derive(Debug, Serialize, Deserialize)]
pub struct Admitted {
    pub token: String,
    pub name: String,
    pub device: DeviceId,
    pub member: MemberId,
    pub expires: u64,
}

/// `POST /web/admin/revoke`: exactly one of `device` and `member`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub member: Option<String>,
    pub confirm: String,
}

const UNCONFIRMED: &str = "confirm with a fresh sign-in link: run `huddle open --print` on this computer and paste the link it prints";

/// The checks both actions share: a signed-in screen's write, on a device
/// that holds the team key, confirmed.
fn gate<'a>(web: &'a Web, headers: &HeaderMap, confirm: &str) -> Result<&'a Admin, Refusal> {
    session_writer(web, headers)?;
    let Some(admin) = web.admin.as_ref().filter(|a| a.holds_key()) else {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "this device does not hold the team key: admit and revoke on the device where the team was created".into(),
        ));
    };
    if !web.confirm(confirm) {
        return Err(Refusal(StatusCode::FORBIDDEN, UNCONFIRMED.into()));
    }
    Ok(admin)
}

pub(super) async fn admit(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Json(f): Json<AdmitForm>,
) -> Response {
    let admin = match gate(&web, &headers, &f.confirm) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let minted = admin.authority().and_then(|(key, own)| {
        admin::admit(
            &key,
            &own,
            &admin::Admission {
                device: &f.device,
                member: f.member.as_deref(),
                name: &f.name,
                roles: &f.roles,
                expires: f.expires.as_deref().unwrap_or("365d"),
            },
        )
        .map_err(|e| e.to_string())
    });
    if let Ok(cert) = &minted {
        let action = crate::trail::Action::Admitted {
            member: cert.member,
            device: cert.device,
        };
        if let Err(e) = admin.handle.command(Command::Audit(action)).await {
            tracing::warn!("could not record an admission in the audit trail: {e}");
        }
    }
    match minted {
        Ok(cert) => Json(Admitted {
            token: cert.to_token(),
            name: cert.display_name,
            device: cert.device,
            member: cert.member,
            expires: cert.expires,
        })
        .into_response(),
        Err(why) => refuse(StatusCode::BAD_REQUEST, why),
    }
}

pub(super) async fn revoke(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Json(f): Json<RevokeForm>,
) -> Response {
    let target = match (f.device.as_deref(), f.member.as_deref()) {
        (Some(d), None) => d.trim().parse().map(RevocationTarget::Device).ok(),
        (None, Some(m)) => m.trim().parse().map(RevocationTarget::Member).ok(),
        _ => None,
    };
    let Some(target) = target else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "name exactly one device id or one member id to revoke",
        );
    };
    let admin = match gate(&web, &headers, &f.confirm) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let rev = match admin
        .authority()
        .and_then(|(key, own)| admin::revoke(&key, &own, target).map_err(|e| e.to_string()))
    {
        Ok(rev) => rev,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    match admin.handle.command(Command::Revoke(rev)).await {
        Ok(_) => Json(serde_json::json!({})).into_response(),
        Err(e) => refuse(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
