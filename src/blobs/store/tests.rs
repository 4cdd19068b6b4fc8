//! The blob store's own tests.
use super::*;

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
    let dir = tmp();
    let data: Vec<u8> = (0..(3 * CHUNK_LEN as usize + 10))
        .map(|i| (i % 97) as u8)
        .collect();
    let hash = BlobHash::of(&data);
    let key = Key::new(ConversationId([1; 16]), hash);
    let msg = MessageId([2; 16]);
    let s = BlobStore::open(&dir).unwrap();
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
    let s = BlobStore::open(&dir).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(s.path(&key, "data"))
        .unwrap();
    f.write_all_at(b"X", 2 * CHUNK_LEN + 5).unwrap();
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
    let dir = tmp();
    let s = BlobStore::open(&dir).unwrap();
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
    let s = BlobStore::open(&dir).unwrap();
    assert!(s.status(&key).unwrap().unwrap().reached);
    fs::remove_dir_all(&dir).unwrap();
}
