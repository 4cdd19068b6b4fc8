//! Both stores against the shared contract, plus what only one of them can
//! show: sled's reopen, lock and format refusal, and the memory store's crash
//! model. A property test checks the two agree on random batches.

use huddle::store::{contract, MemoryStore, Store, StoreOp};

fn put(key: &[u8], value: &[u8]) -> StoreOp {
    StoreOp::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn del(key: &[u8]) -> StoreOp {
    StoreOp::Delete { key: key.to_vec() }
}

fn contents(store: &dyn Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.scan_prefix(b"").expect("scan_prefix(\"\")")
}

#[test]
fn memory_store_meets_the_contract() {
    contract::run_all(MemoryStore::new);
}

#[test]
fn memory_crash_keeps_exactly_the_flushed_writes() {
    let mut store = MemoryStore::new();
    store
        .apply(&[put(b"a", b"1"), put(b"b", b"2")])
        .expect("apply");
    store.flush().expect("flush");
    store
        .apply(&[put(b"c", b"3"), del(b"a"), put(b"b", b"22")])
        .expect("apply");
    assert_eq!(
        store.get(b"c").expect("get"),
        Some(b"3".to_vec()),
        "unflushed writes are visible"
    );

    store.crash();
    assert_eq!(
        contents(&store),
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ],
        "a crash must drop every unflushed write and keep every flushed one"
    );
}

#[test]
fn memory_flush_after_put_and_delete_keeps_the_final_state() {
    let mut store = MemoryStore::new();
    store
        .apply(&[put(b"a", b"1"), put(b"b", b"2")])
        .expect("apply");
    store.apply(&[del(b"a")]).expect("apply");
    store
        .apply(&[StoreOp::DeleteRange {
            from: b"b".to_vec(),
            to: b"c".to_vec(),
        }])
        .expect("apply");
    store
        .apply(&[put(b"b", b"22"), put(b"d", b"4"), del(b"d")])
        .expect("apply");
    store.flush().expect("flush");
    let before = contents(&store);
    assert_eq!(
        before,
        vec![(b"b".to_vec(), b"22".to_vec())],
        "the visible final state"
    );

    store.crash();
    assert_eq!(
        contents(&store),
        before,
        "a flush must make exactly the final state durable"
    );
    assert_eq!(
        store.durable_bytes(),
        b"b".len() + b"22".len(),
        "nothing deleted before the flush may linger in the durable state"
    );
}

/// What only the on-disk store can show, and its agreement with the model.
#[cfg(feature = "store-sled")]
mod sled_store {
    use std::path::Path;

    use huddle::store::{check_format, keys, SledStore, StoreError, FORMAT_VERSION};
    use proptest::prelude::*;
    use tempfile::TempDir;

    use super::*;

    fn open(dir: &Path) -> SledStore {
        SledStore::open(dir)
            .unwrap_or_else(|e| panic!("opening a sled store in {}: {e}", dir.display()))
    }

    #[test]
    fn meets_the_contract() {
        let root = TempDir::new().expect("tempdir");
        let mut n = 0;
        contract::run_all(|| {
            n += 1;
            open(&root.path().join(format!("store-{n}")))
        });
    }

    /// The encrypted store meets the same contract (its keys outside the
    /// node's layout are kept as they are, so the contract's own keys and
    /// ranges mean the same; the layout's are covered by `atrest::names`).
    #[test]
    fn the_encrypted_store_meets_the_contract() {
        let root = TempDir::new().expect("tempdir");
        let mut n = 0;
        let keys = std::sync::Arc::new(huddle::atrest::DataKey::generate().keys());
        contract::run_all(|| {
            n += 1;
            SledStore::open_sealed(&root.path().join(format!("store-{n}")), keys.clone())
                .expect("open an encrypted store")
        });
    }

    #[test]
    fn reopen_sees_flushed_data() {
        let root = TempDir::new().expect("tempdir");
        let dir = root.path().join("data");
        {
            let mut store = open(&dir);
            store
                .apply(&[
                    put(b"k/1", b"one"),
                    put(b"k/2", b"two"),
                    put(b"k/3", b"three"),
                ])
                .expect("apply");
            store
                .apply(&[del(b"k/2"), put(b"k/3", b"THREE")])
                .expect("apply");
            store.flush().expect("flush");
            assert!(
                store.size_on_disk() > 0,
                "a store holding data must report a size on disk"
            );
        }
        let store = open(&dir);
        assert_eq!(
            store.scan_prefix(b"k/").expect("scan"),
            vec![
                (b"k/1".to_vec(), b"one".to_vec()),
                (b"k/3".to_vec(), b"THREE".to_vec())
            ],
            "a reopened store must hold exactly the flushed state"
        );
        assert_eq!(
            store.get(keys::FORMAT).expect("get"),
            Some(FORMAT_VERSION.to_be_bytes().to_vec()),
            "the format version written at the first open must survive a reopen"
        );
    }

    /// sled releases its own file lock from background threads after the `Db`
    /// is dropped (spacejam/sled#1289); `open` must wait for that rather than
    /// fail, however quickly the directory is reopened, and unflushed writes at
    /// drop time are what keep those threads busy.
    #[test]
    fn reopens_at_once_after_drop() {
        let root = TempDir::new().expect("tempdir");
        let dir = root.path().join("data");
        for i in 0..40u32 {
            let mut store = SledStore::open(&dir)
                .unwrap_or_else(|e| panic!("reopen {i} right after a drop must succeed: {e}"));
            store
                .apply(&[put(&i.to_be_bytes(), &[7; 4096])])
                .expect("apply");
            if i % 2 == 0 {
                store.flush().expect("flush");
            }
        }
        let store = open(&dir);
        for i in (0..40u32).step_by(2) {
            assert!(
                store.get(&i.to_be_bytes()).expect("get").is_some(),
                "the write flushed in round {i} must survive every later reopen"
            );
        }
    }

    #[test]
    fn second_open_is_refused_while_the_first_lives() {
        let root = TempDir::new().expect("tempdir");
        let dir = root.path().join("data");
        let mut first = open(&dir);
        first.apply(&[put(b"k", b"v")]).expect("apply");
        first.flush().expect("flush");

        let pid = std::process::id();
        match SledStore::open(&dir) {
            Err(e @ StoreError::Locked { .. }) => {
                assert!(
                    matches!(e, StoreError::Locked { pid: Some(p) } if p == pid),
                    "the refusal must name the holder's pid {pid}, got {e:?}"
                );
                let text = e.to_string();
                assert!(
                    text.contains("locked by another huddle process (pid ")
                        && text.contains(&pid.to_string()),
                    "the refusal must say who holds the lock in one sentence, got {text:?}"
                );
            }
            Err(e) => panic!("a second open must fail with Locked, got {e:?}"),
            Ok(_) => panic!("a second open of a locked data directory must fail"),
        }
        assert_eq!(
            first.get(b"k").expect("get"),
            Some(b"v".to_vec()),
            "a refused second open must not disturb the first"
        );

        drop(first);
        let again = open(&dir);
        assert_eq!(
            again.get(b"k").expect("get"),
            Some(b"v".to_vec()),
            "once the first store is dropped the directory must open again, with its data"
        );
    }

    #[test]
    fn open_refuses_a_newer_format() {
        let root = TempDir::new().expect("tempdir");
        let dir = root.path().join("data");
        {
            let mut store = open(&dir);
            store
                .apply(&[put(keys::FORMAT, &(FORMAT_VERSION + 1).to_be_bytes())])
                .expect("apply");
            store.flush().expect("flush");
        }
        match SledStore::open(&dir) {
            Err(e @ StoreError::NewerFormat { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("newer huddle")
                        && text.contains(&format!("format {}", FORMAT_VERSION + 1)),
                    "the refusal must say a newer huddle wrote the data, got {text:?}"
                );
            }
            Err(e) => panic!("a newer format must be refused with NewerFormat, got {e:?}"),
            Ok(_) => panic!("a store with format {} must be refused", FORMAT_VERSION + 1),
        }
    }

    #[test]
    fn open_on_a_file_fails_with_a_readable_io_error() {
        let root = TempDir::new().expect("tempdir");
        let file = root.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        match SledStore::open(&file) {
            Err(StoreError::Io(text)) => assert!(
                text.contains("cannot create the data directory") && text.contains("not-a-dir"),
                "the error must say what failed and where, got {text:?}"
            ),
            Err(e) => panic!("expected an Io error, got {e:?}"),
            Ok(_) => panic!("a regular file cannot be a data directory"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn creates_the_data_directory_private() {
        use std::os::unix::fs::PermissionsExt;

        let root = TempDir::new().expect("tempdir");
        let dir = root.path().join("new").join("data");
        let _store = open(&dir);
        let mode = std::fs::metadata(&dir)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "the data directory must be readable by its owner only"
        );
    }

    /// huddle issue 18, hole 8, for a library user (no umask set): a store
    /// in a readable directory is made owner-only, sled's files included,
    /// and one in a directory others can write is refused untouched.
    #[cfg(unix)]
    #[test]
    fn open_makes_the_store_owner_only_or_refuses() {
        use std::fs::{self, Permissions};
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o7777;

        let root = TempDir::new().expect("tempdir");
        let dir = root.path().join("data");
        drop(open(&dir));
        // Fresh: sled created its files with this test's umask.
        for file in ["db/db", "db/conf", "huddle.lock"] {
            assert_eq!(mode(&dir.join(file)), 0o600, "new {file}");
        }
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
        for file in ["db/db", "db/conf", "huddle.lock"] {
            fs::set_permissions(dir.join(file), Permissions::from_mode(0o644)).expect("chmod");
        }
        let _store = open(&dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("db")), 0o700);
        for file in ["db/db", "db/conf", "huddle.lock"] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }

        let shared = root.path().join("shared");
        fs::create_dir(&shared).expect("mkdir");
        fs::set_permissions(&shared, Permissions::from_mode(0o770)).expect("chmod");
        match SledStore::open(&shared) {
            Err(e @ StoreError::NotPrivate(_)) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("chmod 700 {}", shared.display())),
                    "the refusal must say what to run, got {text:?}"
                );
            }
            Err(e) => panic!("expected NotPrivate, got {e:?}"),
            Ok(_) => panic!("a group-writable data directory must be refused"),
        }
        assert_eq!(fs::read_dir(&shared).expect("read_dir").count(), 0);
    }

    /// Keys from a tiny alphabet, so ops collide, overwrite and fall in ranges.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0x00u8, 0x01, b'm', 0xff]), 0..3)
    }

    fn op() -> impl Strategy<Value = StoreOp> {
        prop_oneof![
            3 => (key(), prop::collection::vec(any::<u8>(), 0..3)).prop_map(|(key, value)| StoreOp::Put { key, value }),
            1 => key().prop_map(|key| StoreOp::Delete { key }),
            1 => (key(), key()).prop_map(|(from, to)| StoreOp::DeleteRange { from, to }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn memory_and_sled_agree(batches in prop::collection::vec(prop::collection::vec(op(), 1..5), 1..8)) {
            let root = TempDir::new().expect("tempdir");
            let mut sled = open(&root.path().join("data"));
            let mut memory = MemoryStore::new();
            // The sled store wrote its format version at open; start level.
            check_format(&mut memory).expect("check_format");
            prop_assert_eq!(contents(&memory), contents(&sled), "the stores must start equal");

            for batch in &batches {
                memory.apply(batch).expect("memory apply");
                sled.apply(batch).expect("sled apply");
                prop_assert_eq!(contents(&memory), contents(&sled), "after batch {:?}", batch);
            }
            for prefix in [&b"\xff"[..], b"\x00", b"\x01\xff"] {
                prop_assert_eq!(
                    memory.scan_prefix(prefix).expect("memory scan"),
                    sled.scan_prefix(prefix).expect("sled scan"),
                    "scan_prefix({:?})", prefix
                );
            }
        }
    }
}
