//! The holes the fuzzers found in what the check let through (issue 19):
//! each shown hurting Automerge, then refused.

use super::*;

/// A change by actor 2 inserting into the `items` list the genesis actor
/// made, with the object's actor index (1, the genesis actor, listed as
/// the change's other actor) rewritten to `index`; the checksum is redone.
fn change_naming_actor(index: u8) -> Vec<u8> {
    let mut a = Replica::new(&[5; 16], SCHEMA, &ActorId::from([2u8; 16].as_slice()));
    a.insert(1_000, 0, b"an entry".to_vec()).unwrap();
    let raw = a.doc.get_last_local_change().unwrap().raw_bytes().to_vec();
    let mut body = body(&raw).to_vec();
    // The first column of actors is the object's: a literal run (-1) of
    // one value, actor 1.
    let at = first_actor_column(&body);
    assert_eq!(body[at..at + 2], [0x7f, 1], "a literal run of actor 1");
    body[at + 1] = index;
    chunk(1, &body, 1, &body)
}

/// Where a change body's first actor column starts.
fn first_actor_column(body: &[u8]) -> usize {
    let mut c = Cursor(body);
    hashes(&mut c, "deps").unwrap();
    actor(&mut c).unwrap();
    c.uleb("seq").unwrap();
    c.uleb("start op").unwrap();
    c.ileb("time").unwrap();
    let len = c.uleb("message").unwrap();
    c.take(len, "message").unwrap();
    for _ in 0..c.uleb("others").unwrap() {
        actor(&mut c).unwrap();
    }
    let mut first = None;
    let mut offset = 0;
    columns(&mut c)
        .unwrap()
        .each(|spec, len| {
            if spec & 0b111 == 1 && first.is_none() {
                first = Some(offset);
            }
            offset += len as usize;
            Ok(())
        })
        .unwrap();
    body.len() - c.0.len() + first.expect("an actor column")
}

/// The hole (fuzz finding `member_peer/crash-actor-index`): Automerge
/// parses a change whose op names an actor it does not list, and
/// `Change::decode`, which the append-only rules call, panics on it.
#[test]
fn an_op_naming_an_unlisted_actor_panics_decode() {
    let ok = automerge::Change::from_bytes(change_naming_actor(1)).unwrap();
    assert_eq!(ok.decode().operations.len(), 1);
    assert_eq!(check_actor_indices(ok.raw_bytes()), Ok(()));
    let bad = automerge::Change::from_bytes(change_naming_actor(5)).expect("Automerge parses it");
    let decode = std::panic::catch_unwind(|| bad.decode());
    assert!(decode.is_err(), "decode panics");
    assert!(check_actor_indices(bad.raw_bytes()).is_err());
}

#[test]
fn a_change_naming_an_unlisted_actor_is_refused_as_a_breach() {
    let mut r = replica();
    let m = message(&[], &[], &[change_naming_actor(5)]);
    assert_eq!(check_sync_message(&m), Ok(()), "well framed");
    match r.receive_sync(&mut sync::State::new(), &m) {
        Err(ReplicaError::Breach(b)) => {
            assert!(b.0.contains("actor the change does not list"), "{b}")
        }
        other => panic!("not refused: {other:?}"),
    }
}

/// Every actor column of changes with several actors (inserts after
/// another device's element, concurrent puts) passes.
#[test]
fn changes_with_several_actors_pass_the_index_check() {
    let mut a = Replica::new(&[5; 16], SCHEMA, &ActorId::from([2u8; 16].as_slice()));
    let mut b = Replica::new(&[5; 16], SCHEMA, &ActorId::from([3u8; 16].as_slice()));
    for i in 0..4u8 {
        a.insert(1_000, 0, vec![i; 4]).unwrap();
        crate::replica::tests::sync_pair(&mut a, &mut b);
        b.insert(1_000, 0, vec![i; 5]).unwrap();
    }
    let changes = b.doc.get_changes(&[]);
    assert!(changes.iter().any(|c| !c.other_actor_ids().is_empty()));
    for c in changes {
        assert_eq!(check_actor_indices(c.raw_bytes()), Ok(()), "{:?}", c.hash());
    }
}

/// A message with no haves and no changes that asks for `needs`.
fn asking_for(heads: &[automerge::ChangeHash], needs: &[automerge::ChangeHash]) -> Vec<u8> {
    let mut m = vec![0x43];
    leb(&mut m, heads.len() as u64);
    for h in heads {
        m.extend_from_slice(&h.0);
    }
    leb(&mut m, needs.len() as u64);
    for h in needs {
        m.extend_from_slice(&h.0);
    }
    m.extend_from_slice(&[0, 0]);
    m
}

/// The hole (fuzz finding `sync_check/crash-needs-twice`): asked for one
/// change twice, Automerge rebuilds it twice from its op set and panics
/// while answering.
#[test]
fn a_need_listed_twice_panics_automerge_and_is_refused() {
    let mut doc = doc_with_a_change(1);
    let h = doc.get_heads()[0];
    let twice = asking_for(&[h], &[h, h]);
    let msg = sync::Message::decode(&twice).expect("Automerge decodes it");
    let mut state = sync::State::new();
    doc.receive_sync_message(&mut state, msg).unwrap();
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        doc.generate_sync_message(&mut state)
    }));
    assert!(answer.is_err(), "Automerge panics answering");
    assert_eq!(
        check_sync_message(&twice),
        Err(CheckError::Invalid(
            "needs not sorted and unique, as Automerge writes them"
        ))
    );
    let mut hashes: Vec<_> = (0..3).map(|i| automerge::ChangeHash([i; 32])).collect();
    assert_eq!(check_sync_message(&asking_for(&[h], &hashes)), Ok(()));
    hashes.swap(0, 2);
    assert!(check_sync_message(&asking_for(&[h], &hashes)).is_err());
}

/// The hole (fuzz finding `sync_check/crash-heads-unsorted`): heads out of
/// order become the `last_sync` Automerge writes back, and its encoder
/// asserts they are sorted (a panic in any build with debug assertions).
#[test]
fn heads_out_of_order_panic_automerge_and_are_refused() {
    // The fuzzer's input: two heads, out of order, one of them a change
    // of the replica it fed (six inserts by actor 2).
    let unsorted = include_bytes!("../../../../fuzz/corpus/sync_check/crash-heads-unsorted");
    let schema = Schema {
        roots: &[("items", ObjType::List), ("keys", ObjType::Map)],
        page_len: 4,
    };
    let mut r = Replica::new(&[1; 16], schema, &ActorId::from([2u8; 16].as_slice()));
    for i in 0..6u8 {
        r.insert(1_000, 0, vec![i; 20]).unwrap();
    }
    let msg = sync::Message::decode(unsorted).expect("Automerge decodes it");
    let mut state = sync::State::new();
    r.doc.receive_sync_message(&mut state, msg).unwrap();
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.doc.generate_sync_message(&mut state).map(|m| m.encode())
    }));
    assert!(answer.is_err(), "Automerge panics answering");
    assert_eq!(
        check_sync_message(unsorted),
        Err(CheckError::Invalid(
            "heads not sorted and unique, as Automerge writes them"
        ))
    );
    let (low, high) = (
        automerge::ChangeHash([1; 32]),
        automerge::ChangeHash([2; 32]),
    );
    assert_eq!(check_sync_message(&asking_for(&[low, high], &[])), Ok(()));
    assert!(check_sync_message(&asking_for(&[low, low], &[])).is_err());
}
