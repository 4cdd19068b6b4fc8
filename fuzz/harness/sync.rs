//! Arbitrary bytes as a peer's sync message: the check never panics, and
//! what it lets through never panics Automerge's decoder nor a replica
//! receiving it and answering (replica/check.rs).

use automerge::{sync, ActorId, ObjType};
use huddle::replica::{check_sync_message, Replica, Schema};

const SCHEMA: Schema = Schema {
    roots: &[("items", ObjType::List), ("keys", ObjType::Map)],
    page_len: 4,
};

pub fn sync_check(data: &[u8]) {
    if check_sync_message(data).is_err() {
        return;
    }
    let _ = sync::Message::decode(data);
    let mut replica = Replica::new(&[1; 16], SCHEMA, &ActorId::from([2u8; 16].as_slice()));
    for i in 0..6u8 {
        replica
            .insert(1_000, 0, vec![i; 20])
            .expect("a local write");
    }
    let mut state = sync::State::new();
    let _ = replica.receive_sync(&mut state, data);
    // A Bloom filter Automerge took in hurts here, when it answers.
    let _ = replica.generate_sync(&mut state);
}
