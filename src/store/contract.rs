//! The contract every [`Store`] meets, as a suite any implementation's tests
//! can run: `contract::run_all(|| MyStore::new())`.
//!
//! It lives in the library (not in `tests/`) so that every store, including
//! ones in other crates, is held to the same cases. It uses no dev-dependencies
//! and fails with plain `assert!`s whose messages say which rule was broken.
//!
//! Invariant: each case gets a fresh store from `make` and assumes nothing
//! about its contents except what the case wrote itself, so stores that write
//! metadata at open (the format version) pass unchanged.

use super::{check_format, keys, load, Store, StoreError, StoreOp, FORMAT_VERSION};

type Case = fn(&mut dyn Store);

const CASES: &[(&str, Case)] = &[
    ("put, get and overwrite", put_get_overwrite),
    ("delete", delete),
    ("delete range bounds", delete_range_bounds),
    (
        "delete range empty and inverted",
        delete_range_empty_and_inverted,
    ),
    ("scan prefix", scan_prefix),
    ("scan prefix of binary keys", scan_prefix_binary),
    ("batch order", batch_order),
    (
        "check format writes the version",
        check_format_writes_version,
    ),
    (
        "check format refuses a newer format",
        check_format_refuses_newer,
    ),
    (
        "check format refuses a damaged version",
        check_format_refuses_damaged,
    ),
    ("load groups documents", load_groups_documents),
    ("load refuses a damaged key", load_refuses_damaged_key),
];

/// Runs every case, each on a fresh store from `make`.
pub fn run_all<S: Store>(mut make: impl FnMut() -> S) {
    for (name, case) in CASES {
        // Printed before the case so a failure's captured output names it.
        eprintln!("store contract: {name}");
        let mut store = make();
        case(&mut store);
    }
}

fn put(key: &[u8], value: &[u8]) -> StoreOp {
    StoreOp::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn del(key: &[u8]) -> StoreOp {
    StoreOp::Delete { key: key.to_vec() }
}

fn del_range(from: &[u8], to: &[u8]) -> StoreOp {
    StoreOp::DeleteRange {
        from: from.to_vec(),
        to: to.to_vec(),
    }
}

fn apply(s: &mut dyn Store, ops: &[StoreOp]) {
    if let Err(e) = s.apply(ops) {
        panic!("apply({ops:?}) failed: {e}");
    }
}

fn get(s: &dyn Store, key: &[u8]) -> Option<Vec<u8>> {
    s.get(key)
        .unwrap_or_else(|e| panic!("get({key:?}) failed: {e}"))
}

fn scan_keys(s: &dyn Store, prefix: &[u8]) -> Vec<Vec<u8>> {
    s.scan_prefix(prefix)
        .unwrap_or_else(|e| panic!("scan_prefix({prefix:?}) failed: {e}"))
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn owned(keys: &[&[u8]]) -> Vec<Vec<u8>> {
    keys.iter().map(|k| k.to_vec()).collect()
}

fn put_get_overwrite(s: &mut dyn Store) {
    assert_eq!(
        get(s, b"t/a"),
        None,
        "a key never written must read as absent"
    );
    apply(s, &[put(b"t/a", b"1")]);
    assert_eq!(
        get(s, b"t/a").as_deref(),
        Some(&b"1"[..]),
        "a put must be visible at once"
    );
    apply(s, &[put(b"t/a", b"22")]);
    assert_eq!(
        get(s, b"t/a").as_deref(),
        Some(&b"22"[..]),
        "a second put must overwrite the first"
    );
    apply(s, &[put(b"t/empty", b"")]);
    assert_eq!(
        get(s, b"t/empty").as_deref(),
        Some(&b""[..]),
        "an empty value is a value, not an absent key"
    );
    assert_eq!(
        get(s, b"t/"),
        None,
        "a prefix of a stored key is not itself stored"
    );
    assert_eq!(
        get(s, b"t/a\0"),
        None,
        "an extension of a stored key is not itself stored"
    );
}

fn delete(s: &mut dyn Store) {
    apply(s, &[put(b"t/a", b"1"), put(b"t/b", b"2")]);
    apply(s, &[del(b"t/a")]);
    assert_eq!(get(s, b"t/a"), None, "a deleted key must read as absent");
    assert_eq!(
        get(s, b"t/b").as_deref(),
        Some(&b"2"[..]),
        "delete must not touch other keys"
    );
    apply(s, &[del(b"t/never")]);
    assert_eq!(
        scan_keys(s, b"t/"),
        owned(&[b"t/b"]),
        "deleting an absent key is a no-op"
    );
}

fn delete_range_bounds(s: &mut dyn Store) {
    let all: &[&[u8]] = &[
        b"r/a",
        b"r/b",
        b"r/b\x00",
        b"r/bz",
        b"r/c\xff\xff",
        b"r/d",
        b"r/d\x00",
        b"r/e",
    ];
    apply(s, &all.iter().map(|k| put(k, b"v")).collect::<Vec<_>>());
    apply(s, &[del_range(b"r/b", b"r/d")]);
    assert_eq!(
        scan_keys(s, b"r/"),
        owned(&[b"r/a", b"r/d", b"r/d\x00", b"r/e"]),
        "DeleteRange [r/b, r/d) must delete `from` and everything below `to`, \
         and keep `to` itself and keys after it"
    );
}

fn delete_range_empty_and_inverted(s: &mut dyn Store) {
    apply(
        s,
        &[put(b"r/a", b"1"), put(b"r/b", b"2"), put(b"r/c", b"3")],
    );
    apply(s, &[del_range(b"r/b", b"r/b")]);
    assert_eq!(
        scan_keys(s, b"r/"),
        owned(&[b"r/a", b"r/b", b"r/c"]),
        "an empty range [r/b, r/b) must delete nothing, not even r/b"
    );
    apply(s, &[del_range(b"r/c", b"r/a")]);
    assert_eq!(
        scan_keys(s, b"r/"),
        owned(&[b"r/a", b"r/b", b"r/c"]),
        "an inverted range [r/c, r/a) must delete nothing"
    );
    apply(s, &[del_range(b"r/x", b"r/z")]);
    assert_eq!(
        scan_keys(s, b"r/"),
        owned(&[b"r/a", b"r/b", b"r/c"]),
        "a range holding no keys must delete nothing"
    );
}

fn scan_prefix(s: &mut dyn Store) {
    apply(
        s,
        &[
            put(b"p/b", b"2"),
            put(b"p/a", b"1"),
            put(b"p/ab", b"3"),
            put(b"p", b"no slash"),
            put(b"q/a", b"other"),
            put(b"o/z", b"before"),
        ],
    );
    let scanned = s
        .scan_prefix(b"p/")
        .unwrap_or_else(|e| panic!("scan_prefix failed: {e}"));
    assert_eq!(
        scanned,
        vec![
            (b"p/a".to_vec(), b"1".to_vec()),
            (b"p/ab".to_vec(), b"3".to_vec()),
            (b"p/b".to_vec(), b"2".to_vec()),
        ],
        "scan_prefix must return exactly the keys with the prefix, with their values, in key order"
    );
    assert_eq!(
        scan_keys(s, b"p/a"),
        owned(&[b"p/a", b"p/ab"]),
        "a key equal to the prefix is included, and so are longer keys"
    );
    assert_eq!(
        scan_keys(s, b"p/c"),
        Vec::<Vec<u8>>::new(),
        "no key has prefix p/c"
    );
    let all = scan_keys(s, b"");
    for k in [&b"o/z"[..], b"p", b"p/a", b"p/ab", b"p/b", b"q/a"] {
        assert!(
            all.contains(&k.to_vec()),
            "the empty prefix must return every key, missing {k:?}"
        );
    }
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "the empty prefix must return keys in strict order"
    );
}

fn scan_prefix_binary(s: &mut dyn Store) {
    // Prefixes ending in 0xff are where a computed upper bound overflows, and
    // 0x00 is where C-string thinking truncates.
    let keys: &[&[u8]] = &[
        b"\xfe\xff",
        b"\xff",
        b"\xff\x00",
        b"\xff\x00\x00",
        b"\xff\x00\xff",
        b"\xff\x01",
        b"\xff\xff",
        b"\xff\xff\x00",
        b"\xff\xff\xff",
        b"\x00",
        b"\x00\x00",
        b"\x00\xff",
        b"\x01",
    ];
    apply(s, &keys.iter().map(|k| put(k, k)).collect::<Vec<_>>());

    let cases: &[(&[u8], &[&[u8]])] = &[
        (
            b"\xff",
            &[
                b"\xff",
                b"\xff\x00",
                b"\xff\x00\x00",
                b"\xff\x00\xff",
                b"\xff\x01",
                b"\xff\xff",
                b"\xff\xff\x00",
                b"\xff\xff\xff",
            ],
        ),
        (
            b"\xff\x00",
            &[b"\xff\x00", b"\xff\x00\x00", b"\xff\x00\xff"],
        ),
        (
            b"\xff\xff",
            &[b"\xff\xff", b"\xff\xff\x00", b"\xff\xff\xff"],
        ),
        (b"\xff\xff\xff", &[b"\xff\xff\xff"]),
        (b"\xff\xff\xff\xff", &[]),
        (b"\x00", &[b"\x00", b"\x00\x00", b"\x00\xff"]),
        (b"\x00\x00", &[b"\x00\x00"]),
    ];
    for (prefix, expected) in cases {
        let scanned = s
            .scan_prefix(prefix)
            .unwrap_or_else(|e| panic!("scan_prefix({prefix:?}) failed: {e}"));
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            expected.iter().map(|k| (k.to_vec(), k.to_vec())).collect();
        assert_eq!(scanned, want, "scan_prefix({prefix:?}) over binary keys");
    }
}

fn batch_order(s: &mut dyn Store) {
    apply(s, &[put(b"b/k", b"1"), del(b"b/k")]);
    assert_eq!(
        get(s, b"b/k"),
        None,
        "put then delete of one key in one batch must leave it absent"
    );

    apply(s, &[del(b"b/k"), put(b"b/k", b"2")]);
    assert_eq!(
        get(s, b"b/k").as_deref(),
        Some(&b"2"[..]),
        "delete then put of one key in one batch must leave the put"
    );

    apply(s, &[put(b"b/k", b"3"), put(b"b/k", b"4")]);
    assert_eq!(
        get(s, b"b/k").as_deref(),
        Some(&b"4"[..]),
        "the last put in a batch must win"
    );

    apply(s, &[put(b"b/r1", b"x"), del_range(b"b/r", b"b/s")]);
    assert_eq!(
        scan_keys(s, b"b/r"),
        Vec::<Vec<u8>>::new(),
        "a range delete must remove keys put earlier in the same batch"
    );
    assert_eq!(
        get(s, b"b/k").as_deref(),
        Some(&b"4"[..]),
        "a range delete must not touch keys outside it"
    );

    apply(s, &[del_range(b"b/r", b"b/s"), put(b"b/r2", b"y")]);
    assert_eq!(
        scan_keys(s, b"b/r"),
        owned(&[b"b/r2"]),
        "a put after a range delete in the same batch must survive it"
    );
}

fn check_format_writes_version(s: &mut dyn Store) {
    // Some stores check the format at open; start from "new" either way.
    apply(s, &[del(keys::FORMAT)]);
    check_format(s).unwrap_or_else(|e| panic!("check_format on a new store failed: {e}"));
    let want = FORMAT_VERSION.to_be_bytes().to_vec();
    assert_eq!(
        get(s, keys::FORMAT),
        Some(want.clone()),
        "check_format must write FORMAT_VERSION (big-endian u32) into a new store"
    );
    check_format(s).unwrap_or_else(|e| panic!("a second check_format failed: {e}"));
    assert_eq!(
        get(s, keys::FORMAT),
        Some(want),
        "check_format must be idempotent"
    );
    let older = FORMAT_VERSION.checked_sub(1);
    if let Some(older) = older {
        apply(s, &[put(keys::FORMAT, &older.to_be_bytes())]);
        check_format(s)
            .unwrap_or_else(|e| panic!("check_format refused an older format {older}: {e}"));
    }
}

fn check_format_refuses_newer(s: &mut dyn Store) {
    let newer = FORMAT_VERSION + 1;
    apply(s, &[put(keys::FORMAT, &newer.to_be_bytes())]);
    match check_format(s) {
        Err(StoreError::NewerFormat { found, supported }) => {
            assert_eq!(found, newer, "NewerFormat must report the version found");
            assert_eq!(
                supported, FORMAT_VERSION,
                "NewerFormat must report the version we support"
            );
        }
        other => {
            panic!("a store with format {newer} must be refused with NewerFormat, got {other:?}")
        }
    }
    assert_eq!(
        get(s, keys::FORMAT),
        Some(newer.to_be_bytes().to_vec()),
        "refusing a newer format must not overwrite it"
    );
}

fn check_format_refuses_damaged(s: &mut dyn Store) {
    apply(s, &[put(keys::FORMAT, b"\x00\x01")]);
    assert!(
        matches!(check_format(s), Err(StoreError::Corrupt(_))),
        "a format version that is not 4 bytes must be refused as Corrupt"
    );
}

fn load_groups_documents(s: &mut dyn Store) {
    let a = [0u8; 16];
    // Bytes that look like key separators must not confuse the grouping.
    let b = *b"/c/h/s\xff\x00////////";
    let c = [0xffu8; 16];
    let seqs = [256u64, 1, 255, 0, 65_536, u64::MAX, 2];
    let mut ops = vec![
        put(&keys::header(&a), b"header a"),
        put(&keys::snapshot(&a), b"snapshot a"),
        put(&keys::header(&b), b"header b"),
        put(&keys::revocation(&[7; 16]), b"revocation 7"),
        put(&keys::revocation(&[3; 16]), b"revocation 3"),
    ];
    for seq in seqs {
        ops.push(put(&keys::chunk(&a, seq), format!("a{seq}").as_bytes()));
        ops.push(put(&keys::chunk(&c, seq), format!("c{seq}").as_bytes()));
    }
    apply(s, &ops);

    let stored = load(s).unwrap_or_else(|e| panic!("load failed: {e}"));
    assert_eq!(
        stored.docs.keys().copied().collect::<Vec<_>>(),
        vec![a, b, c],
        "load must return one entry per document id, and nothing else"
    );

    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    let chunks = |tag: &str| -> Vec<(u64, Vec<u8>)> {
        sorted
            .iter()
            .map(|&q| (q, format!("{tag}{q}").into_bytes()))
            .collect()
    };

    let doc_a = &stored.docs[&a];
    assert_eq!(
        doc_a.header.as_deref(),
        Some(&b"header a"[..]),
        "doc a's header"
    );
    assert_eq!(
        doc_a.snapshot.as_deref(),
        Some(&b"snapshot a"[..]),
        "doc a's snapshot"
    );
    assert_eq!(
        doc_a.chunks,
        chunks("a"),
        "chunks must come back in ascending seq order (255 before 256: seqs are big-endian)"
    );

    let doc_b = &stored.docs[&b];
    assert_eq!(
        doc_b.header.as_deref(),
        Some(&b"header b"[..]),
        "doc b's header"
    );
    assert_eq!(doc_b.snapshot, None, "doc b has no snapshot");
    assert!(doc_b.chunks.is_empty(), "doc b has no chunks");

    let doc_c = &stored.docs[&c];
    assert_eq!(doc_c.header, None, "doc c has no header");
    assert_eq!(doc_c.snapshot, None, "doc c has no snapshot");
    assert_eq!(
        doc_c.chunks,
        chunks("c"),
        "doc c's chunks, in ascending seq order"
    );

    assert_eq!(
        stored.revocations,
        vec![b"revocation 3".to_vec(), b"revocation 7".to_vec()],
        "load must return every revocation, in key order"
    );
}

fn load_refuses_damaged_key(s: &mut dyn Store) {
    apply(s, &[put(&[keys::DOC_PREFIX, b"short"].concat(), b"x")]);
    assert!(
        matches!(load(s), Err(StoreError::Corrupt(_))),
        "a document key too short to hold an id must make load fail with Corrupt"
    );

    apply(s, &[del_range(keys::DOC_PREFIX, b"doc0")]);
    apply(
        s,
        &[put(&[keys::DOC_PREFIX, &[1; 16], b"/x"].concat(), b"x")],
    );
    assert!(
        matches!(load(s), Err(StoreError::Corrupt(_))),
        "an unknown document key kind must make load fail with Corrupt"
    );
}
