//! Load time: a conversation as the appends left it and compacted, with
//! the breakdown of where the time goes.

use super::*;

/// The load of a conversation as the appends left it (a snapshot plus every
/// chunk written since), measured piecewise: loading chunk by chunk is slow
/// enough at 100k that a full load is only timed when it is affordable.
/// Returns true if the full load is affordable (criterion then times it).
pub(super) fn load_as_written(w: &Writer) -> bool {
    let n = w.conversation().len();
    let stored = store::load(&w.dev.store).expect("store loads");
    let doc = stored.docs.get(&w.conv.0).expect("stored conversation");
    let k = doc.chunks.len();
    let actor = automerge::ActorId::from([7u8; 16].as_slice());
    let snapshot = doc.snapshot.as_deref();

    let t = Cpu::now();
    let (r, _) = Replica::load(&w.conv.0, SCHEMA, &actor, snapshot, &[]).expect("loads");
    let t_snapshot = t.elapsed();
    drop(r);
    let probe = k.min(20);
    let t = Cpu::now();
    let (r, _) =
        Replica::load(&w.conv.0, SCHEMA, &actor, snapshot, &doc.chunks[..probe]).expect("loads");
    let t_probe = t.elapsed();
    drop(r);
    let per_chunk = t_probe.saturating_sub(t_snapshot) / probe.max(1) as u32;
    let projected = t_snapshot + per_chunk * k as u32;
    report(&format!(
        "load/{} as written (on-CPU times): the store holds a snapshot of {} messages ({} B) and {k} chunks (one per message written since); Replica::load of the snapshot alone {:.1} ms; each chunk then costs {:.2} ms (load_incremental one chunk at a time, measured on {probe}), so a full load is projected at {:.1} s",
        label(n),
        n - k,
        snapshot.map_or(0, <[u8]>::len),
        ms(t_snapshot),
        ms(per_chunk),
        projected.as_secs_f64(),
    ));

    // The proposed fix: hand Automerge every chunk in one load_incremental
    // call, so the changes are applied in one batch.
    let t = Cpu::now();
    let mut am = automerge::Automerge::load(snapshot.unwrap_or_default()).expect("loads");
    let mut all = Vec::with_capacity(doc.chunks.iter().map(|(_, b)| b.len()).sum());
    for (_, b) in &doc.chunks {
        all.extend_from_slice(b);
    }
    am.load_incremental(&all).expect("chunks load");
    let t_batched = t.elapsed();
    // The messages are in `msgs` and its pages `msgs.1`, `msgs.2`, ...
    let t = Cpu::now();
    let items: usize = am
        .keys(automerge::ROOT)
        .filter(|k| k == "msgs" || k.starts_with("msgs."))
        .map(|k| {
            let (_, page) = am
                .get(automerge::ROOT, k.as_str())
                .expect("ok")
                .expect("page");
            am.list_range(&page, ..).count()
        })
        .sum();
    let t_items = t.elapsed();
    assert_eq!(items, n);
    assert_eq!(
        am.get_heads(),
        w.conversation().replica().heads(),
        "batched load reaches the same heads"
    );
    report(&format!(
        "load/{} as written, proposed fix: Automerge::load(snapshot) + ONE load_incremental of all {k} chunks concatenated = {:.1} ms (+ {:.1} ms to walk the {n} list items), same heads",
        label(n),
        ms(t_batched),
        ms(t_items),
    ));
    projected < Duration::from_secs(2)
}

/// Where the time goes when loading a compacted conversation.
pub(super) fn load_breakdown(dev: &Device, conv: &ConversationId) {
    let n = dev.node.conversation(conv).expect("conversation").len();
    let t = Cpu::now();
    let stored = store::load(&dev.store).expect("store loads");
    let t_scan = t.elapsed();
    let doc = stored.docs.get(&conv.0).expect("stored conversation");
    let header = ConversationHeader::decode(doc.header.as_deref().expect("header")).expect("ok");
    let actor = automerge::ActorId::from([7u8; 16].as_slice());
    let snapshot = doc.snapshot.as_deref();

    let t = Cpu::now();
    let am = automerge::Automerge::load(snapshot.unwrap_or_default()).expect("snapshot loads");
    let t_am = t.elapsed();
    let plain = am.save_nocompress();
    drop(am);
    let t = Cpu::now();
    let am = automerge::Automerge::load(&plain).expect("uncompressed snapshot loads");
    let t_plain = t.elapsed();
    drop(am);

    let t = Cpu::now();
    let (replica, entries) =
        Replica::load(&conv.0, SCHEMA, &actor, snapshot, &doc.chunks).expect("replica loads");
    let t_replica = t.elapsed();
    drop(replica);

    let t = Cpu::now();
    let messages: Vec<Message> = entries
        .iter()
        .filter_map(|e| match e {
            huddle::replica::Entry::Item { value, .. } => Message::decode(value).ok(),
            _ => None,
        })
        .collect();
    let t_decode = t.elapsed();
    // Verifying is not part of a load; a sample shows what it would cost.
    let sample = messages.len().min(2_000);
    let t = Cpu::now();
    let ok = messages[..sample].iter().filter(|m| m.verify(conv)).count();
    let t_verify = t.elapsed() / sample as u32;
    assert_eq!(ok, sample);

    let t = Cpu::now();
    let (c, applied) = Conversation::load(header, &actor, snapshot, &doc.chunks, &doc.rejected)
        .expect("conversation loads");
    let t_conv = t.elapsed();
    assert_eq!(applied.messages.len(), n);
    drop(c);

    let mut rng = ChaCha8Rng::seed_from_u64(98);
    let mut node_new: Vec<(Duration, Duration)> = (0..3)
        .map(|_| {
            let (t, c) = (Instant::now(), Cpu::now());
            let node = open(dev, &mut rng);
            let r = (c.elapsed(), t.elapsed());
            drop(node);
            r
        })
        .collect();
    node_new.sort();
    report(&format!(
        "load/{} compacted: store::load + Node::new, 3 runs: on-CPU {} ms; wall {} ms",
        label(n),
        node_new
            .iter()
            .map(|(c, _)| format!("{:.0}", ms(*c)))
            .collect::<Vec<_>>()
            .join(", "),
        node_new
            .iter()
            .map(|(_, w)| format!("{:.0}", ms(*w)))
            .collect::<Vec<_>>()
            .join(", "),
    ));

    report(&format!(
        "load/{} compacted, breakdown (on-CPU, one run): store::load scan {:.1} ms; Replica::load {:.1} ms (Automerge::load of the {}-byte snapshot alone {:.1} ms; the rest is genesis merge and copying out {} entries); Conversation::load {:.1} ms, so indexing {:.1} ms. Automerge::load of the same document saved without deflate ({} B) {:.1} ms. For scale: Message::decode of every entry {:.1} ms; Ed25519 verify_strict {:.1} µs/message (measured on {sample}), i.e. {:.0} ms for all (not paid at load)",
        label(n),
        ms(t_scan),
        ms(t_replica),
        snapshot.map_or(0, <[u8]>::len),
        ms(t_am),
        entries.len(),
        ms(t_conv),
        ms(t_conv.saturating_sub(t_replica)),
        plain.len(),
        ms(t_plain),
        ms(t_decode),
        us(t_verify),
        ms(t_verify * n as u32),
    ));
}

pub(super) fn bench_load(c: &mut Criterion, cases: &[(String, &Device, ConversationId)]) {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut g = c.benchmark_group("load");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(4));
    for (name, dev, conv) in cases {
        let n = dev.node.conversation(conv).map(Conversation::len);
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                let node = open(dev, &mut rng);
                assert_eq!(node.conversation(conv).map(Conversation::len), n);
                node
            })
        });
    }
    g.finish();
}
