//! Append latency: per-append percentiles (wall and on-CPU), the cost
//! breakdown of one append, and criterion's mean.

use super::*;

/// Times `count` appends one by one (wall and on-CPU) and prints their
/// distribution, then what one append is made of.
pub(super) fn append_percentiles(w: &mut Writer, start: usize, count: usize) {
    // A few untimed appends first: caches, allocator.
    for _ in 0..count / 10 {
        w.append();
    }
    let mut wall = Vec::with_capacity(count);
    let mut cpu = Vec::with_capacity(count);
    let mut snapshots = Vec::new();
    for _ in 0..count {
        let c = thread_cpu();
        let t = Instant::now();
        let snap = w.append();
        let d = t.elapsed();
        cpu.push(thread_cpu().saturating_sub(c));
        wall.push(d);
        if snap {
            snapshots.push(d);
        }
    }
    report(&format!(
        "append/{}: {count} appends timed one by one (conversation {} -> {} messages): wall {}; on-CPU {}; snapshot appends among them: {}{}",
        label(start),
        w.conversation().len() - count,
        w.conversation().len(),
        distribution(&wall),
        distribution(&cpu),
        snapshots.len(),
        snapshots
            .iter()
            .map(|d| format!(" {:.1} ms", ms(*d)))
            .collect::<String>(),
    ));

    // What an append is made of, timed piece by piece on copies.
    let n = 500;
    let key = w.dev.key.clone();
    let member = w.dev.member();
    let t = Cpu::now();
    let msgs: Vec<Message> = (0..n)
        .map(|i| {
            Message::sign(
                &key,
                &w.conv,
                Draft {
                    author_member: member,
                    hlc: Hlc(w.now + i as u64),
                    priority: Priority::Routine,
                    reply_to: None,
                    body: body(i),
                    fields: Default::default(),
                },
            )
        })
        .collect();
    let t_sign = t.elapsed() / n as u32;
    let actor = automerge::ActorId::from([9u8; 16].as_slice());
    let mut replica = Replica::load(
        &w.conv.0,
        SCHEMA,
        &actor,
        Some(&w.conversation().replica().save()),
        &[],
    )
    .expect("replica loads")
    .0;
    let (mut t_insert, mut t_persist) = (Duration::ZERO, Duration::ZERO);
    for m in &msgs {
        let t = Cpu::now();
        replica.insert(w.now, 0, m.encode()).expect("insert");
        t_insert += t.elapsed();
        let t = Cpu::now();
        black_box(replica.take_persist());
        t_persist += t.elapsed();
    }
    let t = Cpu::now();
    let snapshot = black_box(w.conversation().replica().save());
    let t_save = t.elapsed();
    let every = snapshot.len().max(256 * 1024) / chunk_bytes_per_append(w);
    report(&format!(
        "append/{}: one append (on-CPU) = Message::sign {:.1} µs + Replica::insert (Automerge change, commit, and the change built once for push and store) {:.1} µs + Replica::take_persist (the chunk: that change) {:.1} µs (means over {n}, same document size); the rest of the on-CPU mean is the node and the store. Every ~{every} appends, take_persist writes a snapshot instead: a full save ({} B) of {:.1} ms, i.e. {:.1} µs per append amortized, all of it on the one append that triggers it",
        label(start),
        us(t_sign),
        us(t_insert / n as u32),
        us(t_persist / n as u32),
        snapshot.len(),
        ms(t_save),
        us(t_save) / every.max(1) as f64,
    ));
}

/// Bytes of the chunk the last append wrote (the store's newest chunk).
fn chunk_bytes_per_append(w: &Writer) -> usize {
    let stored = store::load(&w.dev.store).expect("store loads");
    stored
        .docs
        .get(&w.conv.0)
        .and_then(|d| d.chunks.last())
        .map_or(1, |(_, b)| b.len().max(1))
}

pub(super) fn bench_append(c: &mut Criterion, writers: &mut [Writer], sizes: &[usize]) {
    let mut g = c.benchmark_group("append");
    // Short: every iteration grows the conversation by one message.
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (w, &start) in writers.iter_mut().zip(sizes) {
        g.bench_function(label(start), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    w.append();
                }
                t.elapsed()
            })
        });
        report(&format!(
            "append/{}: the conversation grew to {} messages during the benchmark",
            label(start),
            w.conversation().len()
        ));
    }
    g.finish();
}
