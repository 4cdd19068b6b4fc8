//! The offline generator: writes a team's stores directly, for the
//! catch-up, scale and cold-start workloads.

use super::*;

/// Writes messages into a device's store through the pure core (no shell,
/// no network): the store then looks exactly as if the device had written
/// them itself. Flushes every 1,000 commands and at the end.
pub(crate) struct Gen {
    pub(crate) node: Node,
    pub(crate) store: SledStore,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) pending: usize,
    /// Bytes of change chunks written for conversations (the raw Automerge
    /// changes, one chunk per command, except where a snapshot replaced one).
    pub(crate) chunk_bytes: u64,
    pub(crate) chunks: u64,
}

impl Gen {
    pub(crate) fn open(id: &Ident, dir: &Path) -> Gen {
        Gen::open_with(id, dir, None)
    }

    /// [`Gen::open`] on an encrypted store when given its keys.
    pub(crate) fn open_with(
        id: &Ident,
        dir: &Path,
        seal: Option<Arc<huddle::atrest::Keys>>,
    ) -> Gen {
        let store = match seal {
            Some(keys) => SledStore::open_sealed(dir, keys),
            None => SledStore::open(dir),
        }
        .expect("open store");
        let stored = huddle::store::load(&store).expect("load store");
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let node = Node::new(
            id.key.clone(),
            Some(id.cert.clone()),
            stored,
            NodeConfig::default(),
            &mut rng,
        )
        .expect("node");
        let mut g = Gen {
            node,
            store,
            rng,
            pending: 0,
            chunk_bytes: 0,
            chunks: 0,
        };
        let outs = g.node.handle(now_ms(), Input::Start);
        g.carry_out(outs, false);
        g
    }

    pub(crate) fn carry_out(&mut self, outs: Vec<Output>, count: bool) {
        for o in outs {
            if let Output::Persist(ops) = o {
                if count {
                    for op in &ops {
                        if let StoreOp::Put { key, value } = op {
                            let is_conv_chunk = key.starts_with(keys::DOC_PREFIX)
                                && key.len() > keys::DOC_PREFIX.len() + 16
                                && key[keys::DOC_PREFIX.len() + 16..].starts_with(b"/c");
                            if is_conv_chunk {
                                self.chunk_bytes += value.len() as u64;
                                self.chunks += 1;
                            }
                        }
                    }
                }
                self.store.apply(&ops).expect("apply");
                self.pending += 1;
            }
        }
        if self.pending >= 1000 {
            self.store.flush().expect("flush");
            self.pending = 0;
        }
    }

    pub(crate) fn command(&mut self, cmd: Command, count: bool) -> Reply {
        let (r, outs) = self.node.command(now_ms(), &mut self.rng, cmd);
        self.carry_out(outs, count);
        r.expect("command")
    }

    pub(crate) fn group(&mut self, i: usize, members: &[MemberId]) -> ConversationId {
        match self.command(
            Command::CreateConversation {
                kind: ConversationKind::Group {
                    title: format!("bench {i}"),
                    members: members.iter().copied().collect(),
                },
            },
            false,
        ) {
            Reply::Conversation(c) => c,
            r => panic!("unexpected {r:?}"),
        }
    }

    /// `n` messages round-robin over `convs`.
    pub(crate) fn messages(&mut self, convs: &[ConversationId], n: usize, seed: usize) {
        for i in 0..n {
            self.command(send_cmd(convs[i % convs.len()], seed + i), true);
        }
    }

    /// Full saves of the given conversations (compressed columnar form).
    pub(crate) fn saved_bytes(&self, convs: &[ConversationId]) -> u64 {
        convs
            .iter()
            .filter_map(|c| self.node.conversation(c))
            .map(|c| c.replica().save().len() as u64)
            .sum()
    }

    pub(crate) fn close(mut self) {
        self.store.flush().expect("flush");
    }
}
