//! The blob store's own tests: each runs plain and sealed.
use std::os::unix::fs::FileExt;

use super::*;
use crate::atrest::{DataKey, Keys, OVERHEAD};

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "huddle-blobs-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_fetched_blob_survives_a_reopen_and_a_damaged_chunk_is_fetched_again() {
    fetched_blob(None);
    fetched_blob(Some(&DataKey::generate().keys()));
}

fn fetched_blob(keys: Option<&Keys>) {
    let dir = tmp();
    let data: Vec<u8> = (0..(3 * CHUNK_LEN as usize + 10))
        .map(|i| (i % 97) as u8)
        .collect();
    let hash = BlobHash::of(&data);
    let key = Key::new(ConversationId([1; 16]), hash);
    let msg = MessageId([2; 16]);
    let s = BlobStore::open(&dir, keys).unwrap();
    let (o, have) = s.begin(&key, data.len() as u64, msg).unwrap();
    assert!(o.is_none() && have == vec![false; 4]);
    s.put_outline(&key, &outline(&data)).unwrap();
    for i in [0u32, 2, 3] {
        let c = CHUNK_LEN as usize;
        let at = i as usize * c;
        s.put_chunk(&key, i, &data[at..(at + c).min(data.len())])
            .unwrap();
    }
    assert_eq!(s.status(&key).unwrap().unwrap().held_chunks, 3);
    // Another conversation holds nothing of it.
    let other = Key::new(ConversationId([9; 16]), hash);
    assert_eq!(s.status(&other).unwrap(), None);
    // No file is named by the hash.
    for e in fs::read_dir(&dir).unwrap() {
        assert!(!e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(&hash.to_hex()[..16]));
    }
    drop(s);
    // Damage chunk 2 on disk: after a reopen it is not held.
    let s = BlobStore::open(&dir, keys).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(s.path(&key, "data"))
        .unwrap();
    let stride = CHUNK_LEN + if keys.is_some() { OVERHEAD as u64 } else { 0 };
    f.write_all_at(b"X", 2 * stride + 5).unwrap();
    let (_, have) = s.begin(&key, data.len() as u64, msg).unwrap();
    assert_eq!(have, vec![true, false, false, true]);
    assert_eq!(s.unfinished().unwrap(), vec![(key, msg)]);
    // Another size for the same key is refused once a chunk verified.
    assert!(matches!(
        s.begin(&key, 1000, msg),
        Err(BlobError::SizeMismatch)
    ));
    assert_eq!(s.usage().0, data.len() as u64);
    assert!(s.remove(&key).unwrap());
    assert_eq!(s.usage().0, 0);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn own_blobs_are_whole_at_once_and_the_quota_and_limit_hold() {
    own_blobs(None);
    own_blobs(Some(&DataKey::generate().keys()));
}

fn own_blobs(keys: Option<&Keys>) {
    let dir = tmp();
    let s = BlobStore::open(&dir, keys).unwrap();
    s.set_quota(1_000_000);
    let data = vec![7u8; 600_000];
    let h = s.put_own(&data, 25 << 20).unwrap();
    let conv = ConversationId([3; 16]);
    let key = Key::new(conv, h);
    assert_eq!(
        s.status(&key).unwrap(),
        None,
        "staged, in no conversation yet"
    );
    assert_eq!(s.adopt(conv, &h).unwrap(), 600_000);
    let st = s.status(&key).unwrap().unwrap();
    assert!(st.complete() && st.own && !st.reached);
    assert_eq!(s.status(&Key::staged(h)).unwrap(), None);
    assert_eq!(s.read_range(&key, 10, 20).unwrap(), vec![7u8; 10]);
    assert!(matches!(
        s.put_own(&[1u8; 500_000], 25 << 20),
        Err(BlobError::Quota { .. })
    ));
    assert!(matches!(
        s.put_own(&[1u8; 2000], 1000),
        Err(BlobError::TooLarge { .. })
    ));
    assert!(!s.remove(&key).unwrap(), "our own blob is never removed");
    s.mark_reached(&key).unwrap();
    drop(s);
    let s = BlobStore::open(&dir, keys).unwrap();
    assert!(s.status(&key).unwrap().unwrap().reached);
    fs::remove_dir_all(&dir).unwrap();
}

/// A plain store's blobs, own and fetched in part, are sealed when the
/// data directory is encrypted: the same status and bytes after, and no
/// plain byte or naming key left.
#[test]
fn plain_blobs_are_sealed_when_the_directory_is_encrypted() {
    let dir = tmp();
    let plain = BlobStore::open(&dir, None).unwrap();
    let conv = ConversationId([5; 16]);
    let own: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let h = plain.put_own(&own, 25 << 20).unwrap();
    plain.adopt(conv, &h).unwrap();
    let part: Vec<u8> = (0..(2 * CHUNK_LEN as usize + 1))
        .map(|i| (i % 13) as u8)
        .collect();
    let part_key = Key::new(conv, BlobHash::of(&part));
    plain
        .begin(&part_key, part.len() as u64, MessageId([6; 16]))
        .unwrap();
    plain.put_outline(&part_key, &outline(&part)).unwrap();
    plain
        .put_chunk(
            &part_key,
            1,
            &part[CHUNK_LEN as usize..2 * CHUNK_LEN as usize],
        )
        .unwrap();
    drop(plain);

    let keys = DataKey::generate().keys();
    let sealed = BlobStore::open(&dir, Some(&keys)).unwrap();
    let own_key = Key::new(conv, h);
    let st = sealed.status(&own_key).unwrap().unwrap();
    assert!(st.complete() && st.own);
    assert_eq!(
        sealed.read_range(&own_key, 0, own.len() as u64).unwrap(),
        own
    );
    let (_, have) = sealed
        .begin(&part_key, part.len() as u64, MessageId([6; 16]))
        .unwrap();
    assert_eq!(have, vec![false, true, false]);
    assert_eq!(
        sealed.unfinished().unwrap(),
        vec![(part_key, MessageId([6; 16]))]
    );
    assert!(!dir.join(KEY_FILE).exists(), "the plain naming key is gone");
    for e in fs::read_dir(&dir).unwrap() {
        let bytes = fs::read(e.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(32).any(|w| w == &own[1000..1032]),
            "plain bytes left"
        );
    }
    // A tiny blob, a crash after the sealed copy was whole but before the
    // plain files went, and an upload cut before its `.meta`: nothing is
    // lost, nothing plain is left.
    drop(sealed);
    let plain_dir = tmp();
    let plain = BlobStore::open(&plain_dir, None).unwrap();
    let tiny = plain.put_own(b"Bed 4 obs", 25 << 20).unwrap();
    plain.adopt(conv, &tiny).unwrap();
    let big = plain.put_own(&own, 25 << 20).unwrap();
    plain.adopt(conv, &big).unwrap();
    fs::write(
        plain_dir.join("0123456789abcdef0123456789abcdef.data"),
        b"orphan Bed 4 obs",
    )
    .unwrap();
    drop(plain);
    let keys2 = DataKey::generate().keys();
    {
        // The crash: the sealed copy of `big` is whole, its plain `.data` zeroed.
        let p = BlobStore::open(&plain_dir, None).unwrap();
        let s = BlobStore::open_with(
            &plain_dir,
            keys2.blob_names.clone(),
            Disk::new(Some(keys2.blobs.clone())),
        )
        .unwrap();
        let k = Key::new(conv, big);
        let held = p.load(&k).unwrap().unwrap();
        migrate::seal_one(&p, &s, &k, &held).unwrap();
        fs::write(p.path(&k, "data"), vec![0u8; own.len()]).unwrap();
    }
    let s = BlobStore::open(&plain_dir, Some(&keys2)).unwrap();
    assert_eq!(
        s.read_range(&Key::new(conv, big), 0, own.len() as u64)
            .unwrap(),
        own
    );
    assert_eq!(
        s.read_range(&Key::new(conv, tiny), 0, 9).unwrap(),
        b"Bed 4 obs"
    );
    for e in fs::read_dir(&plain_dir).unwrap() {
        let bytes = fs::read(e.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(9).any(|w| w == b"Bed 4 obs"),
            "plain bytes left"
        );
    }
    assert!(s.usage().0 < 1 << 20, "no usage counted from plain files");
    fs::remove_dir_all(&plain_dir).unwrap();

    // Opened again, nothing is sealed twice.
    let sealed = BlobStore::open(&dir, Some(&keys)).unwrap();
    assert_eq!(sealed.read_range(&own_key, 5, 10).unwrap(), &own[5..10]);
    fs::remove_dir_all(&dir).unwrap();
}
