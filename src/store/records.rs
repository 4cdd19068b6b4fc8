//! Reading the store's small records at start: held times, the mailbox,
//! the audit trails' heads and findings.

use super::{keys, Store, StoreError, Stored};

pub(super) fn read_held(store: &dyn Store, out: &mut Stored) -> Result<(), StoreError> {
    for (k, v) in store.scan_prefix(keys::HELD_PREFIX)? {
        let rest = &k[keys::HELD_PREFIX.len()..];
        let (Ok(ids), Ok(at)) = (
            <[u8; 32]>::try_from(rest),
            <[u8; 8]>::try_from(v.as_slice()),
        ) else {
            return Err(StoreError::Corrupt(format!(
                "a held-time record of {} bytes",
                v.len()
            )));
        };
        let conv = ids[..16].try_into().expect("16 bytes");
        let msg = ids[16..].try_into().expect("16 bytes");
        out.held.push((conv, msg, u64::from_be_bytes(at)));
    }
    Ok(())
}

pub(super) fn read_mail(store: &dyn Store, out: &mut Stored) -> Result<(), StoreError> {
    for (k, v) in store.scan_prefix(keys::MAIL_PREFIX)? {
        if let Ok(id) = <[u8; 32]>::try_from(&k[keys::MAIL_PREFIX.len()..]) {
            out.mail.push((id, v));
        }
    }
    for (k, v) in store.scan_prefix(keys::MAIL_QUEUE_PREFIX)? {
        if let Ok(id) = <[u8; 16]>::try_from(&k[keys::MAIL_QUEUE_PREFIX.len()..]) {
            out.mail_queue.push((id, v));
        }
    }
    Ok(())
}

/// The audit trails' heads and findings (sync.md §8).
pub(super) fn read_trails(store: &dyn Store, out: &mut Stored) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("an audit trail's {what} record"));
    for (k, v) in store.scan_prefix(keys::TRAIL_HEAD_PREFIX)? {
        let device = <[u8; 32]>::try_from(&k[keys::TRAIL_HEAD_PREFIX.len()..])
            .map_err(|_| corrupt("head"))?;
        if v.len() != 40 {
            return Err(corrupt("head"));
        }
        let len = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        let head = v[8..].try_into().expect("32 bytes");
        out.trails.push((crate::ids::DeviceId(device), len, head));
    }
    for (_, v) in store.scan_prefix(keys::TRAIL_FINDING_PREFIX)? {
        out.findings
            .push(crate::trail::Finding::decode(&v).map_err(|_| corrupt("finding"))?);
    }
    Ok(())
}
