//! Helpers for the sealed-relaying tests (`sealed_relay.rs`, `sealed_repair.rs`).

use huddle::wire::Frame;

use super::*;

pub fn bodies(m: &Mesh, i: usize, conv: huddle::ConversationId) -> Vec<String> {
    m.devices[i]
        .node
        .history(&conv, None)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.body)
        .collect()
}

/// Every envelope device `i` was sent, in order.
pub fn envelopes_received(m: &Mesh, i: usize) -> Vec<Vec<u8>> {
    m.devices[i]
        .received
        .iter()
        .filter_map(|f| match Frame::decode(f) {
            Ok(Frame::Sealed { envelopes }) => Some(envelopes),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The carrier leaves `from` and meets `to`.
pub fn walk(m: &mut Mesh, carrier: usize, from: usize, to: usize) {
    m.disconnect(from, carrier);
    m.connect(to, carrier);
    m.run_until_quiet();
}

/// Ana, Ben and Dan in "Transfer", which Ana created and wrote `text` in;
/// Ana and Dan connected; Cleo (a member of nothing) carried everyone's
/// certificates and left.
pub fn transfer(seed: u64, text: &str) -> (Mesh, [usize; 4], huddle::ConversationId) {
    let mut m = Mesh::new(seed);
    let ana = m.add_member("Ana", &["nurse"]);
    let ben = m.add_member("Ben", &["nurse"]);
    let dan = m.add_member("Dan", &["nurse"]);
    let cleo = m.add_member("Cleo", &["porter"]);
    for i in [ana, ben, dan] {
        m.connect(i, cleo);
    }
    m.run_until_quiet();
    for i in [ana, ben, dan] {
        m.disconnect(i, cleo);
    }
    m.connect(ana, dan);
    let conv = group_of(&mut m, ana, &[ana, ben, dan], "Transfer");
    m.send_text(ana, conv, text);
    m.run_until_quiet();
    (m, [ana, ben, dan, cleo], conv)
}

/// Ben's new phone enrols: its certificate reaches Cleo's team document,
/// and two minutes pass (past every grace period).
pub fn enrol_bens_phone(m: &mut Mesh, ben: usize, cleo: usize) -> usize {
    let key = huddle::crypto::DeviceKey::generate(&mut m.rng);
    let cert = request("Ben", &["nurse"], key.device_id(), m.devices[ben].member())
        .sign(&m.authority)
        .unwrap();
    let phone = m.add_device(key, Some(cert));
    m.connect(phone, cleo);
    m.run_until_quiet();
    m.disconnect(phone, cleo);
    let t = m.now + 120_000;
    m.run_until(t);
    phone
}
