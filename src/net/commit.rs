//! Group commit: many core steps, one store flush.
//!
//! The `Output` contract lets a shell delay a `Flush` only by also delaying
//! everything after it. A [`Batch`] does exactly that across the outputs of
//! several core steps (the commands taken off the request queue together,
//! or the frames taken off the stream queue together):
//! the writes of every `Persist` are gathered, in order, and applied as one
//! store batch at commit (so a key written by every step — a conversation's
//! index entry — is written once); the first `Flush` opens the batch, and
//! from then on every other output, and every command reply, is held in
//! order; [`Batch::commit`] applies the writes, flushes once, and then
//! carries out what it held, in the original order. A step that writes
//! without a `Flush` (a peer's changes taken in, which claim nothing) adds
//! its writes to the batch and opens nothing: they are applied at commit
//! and become durable with the next flush, or sled's own.
//!
//! Invariants:
//! - nothing that came after a `Flush` (an event such as "sent", a reply to
//!   a caller, a frame to a peer, a disconnect, a timer) is carried out
//!   before a store flush that followed every `Persist` staged so far; the
//!   only reordering is of writes against effects that need no flush, and
//!   a core step puts its `Flush` right after its `Persist`, so none comes
//!   between; the writes themselves keep their order;
//! - a document read from the store (the lazy loader) is never one with
//!   gathered writes: the core reads a document before it writes to it;
//! - outputs that need no flush and come before the batch opens are carried
//!   out at once, so nothing is ever reordered relative to something held;
//! - carrying out an effect never feeds the core, so staging cannot recurse;
//! - a failure to apply or flush returns the error and drops what is held:
//!   its replies are never sent (callers see the node stop), so nothing is
//!   claimed that may not be on disk.

use tokio::sync::oneshot;

use super::ShellError;
use crate::node::CommandError;
use crate::store::StoreOp;
use crate::{Output, Reply};

pub(super) type CommandResult = Result<Reply, CommandError>;
pub(super) type ReplyTo = oneshot::Sender<CommandResult>;

/// What a batch needs from its owner (the loop; a recorder in tests).
pub(super) trait Effects {
    /// Applies store writes; they are durable only after [`Effects::flush`].
    fn persist(&mut self, ops: &[StoreOp]) -> Result<(), ShellError>;
    fn flush(&mut self) -> Result<(), ShellError>;
    /// Carries out one output (a batch hands over none but `Send`,
    /// `Disconnect`, `Emit` and `SetTimer`).
    fn effect(&mut self, out: Output) -> Result<(), ShellError>;
    /// Answers a command's caller.
    fn reply(&mut self, to: ReplyTo, result: CommandResult);
}

enum Held {
    Output(Output),
    Reply(ReplyTo, CommandResult),
}

/// Outputs staged since the last commit. Dropping a batch drops what it
/// holds (used only on the way out after a store error).
#[derive(Default)]
pub(super) struct Batch {
    /// A `Flush` was staged and has not been done: everything from it on is
    /// held until [`Batch::commit`].
    open: bool,
    /// Writes gathered since the last commit, in order.
    writes: Vec<StoreOp>,
    held: Vec<Held>,
}

impl Batch {
    /// Stages one core step's outputs.
    pub fn stage<E: Effects>(
        &mut self,
        fx: &mut E,
        outputs: Vec<Output>,
    ) -> Result<(), ShellError> {
        for out in outputs {
            match out {
                Output::Persist(ops) => self.writes.extend(ops),
                // Covered by the one flush in `commit`, which follows every
                // `Persist` staged before it.
                Output::Flush => self.open = true,
                other if self.open => self.held.push(Held::Output(other)),
                // A reload reads the store: it must see every write staged
                // before it (they claim nothing, so applying them early
                // reorders nothing a caller sees).
                reload @ Output::Reload { .. } => {
                    let writes = std::mem::take(&mut self.writes);
                    if !writes.is_empty() {
                        fx.persist(&writes)?;
                    }
                    fx.effect(reload)?;
                }
                other => fx.effect(other)?,
            }
        }
        Ok(())
    }

    /// Stages a command's reply, which comes after all of its outputs.
    pub fn reply<E: Effects>(&mut self, fx: &mut E, to: ReplyTo, result: CommandResult) {
        if self.open {
            self.held.push(Held::Reply(to, result));
        } else {
            fx.reply(to, result);
        }
    }

    /// Flushes once if any step asked for a flush, then carries out what
    /// was held, in order.
    pub fn commit<E: Effects>(&mut self, fx: &mut E) -> Result<(), ShellError> {
        let writes = std::mem::take(&mut self.writes);
        if !writes.is_empty() {
            fx.persist(&writes)?;
        }
        if !self.open {
            debug_assert!(self.held.is_empty());
            return Ok(());
        }
        fx.flush()?;
        self.open = false;
        for h in std::mem::take(&mut self.held) {
            match h {
                Held::Output(out) => fx.effect(out)?,
                Held::Reply(to, result) => fx.reply(to, result),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConversationId, MessageId};
    use crate::store::StoreOp;
    use crate::Event;

    /// What the recorder saw, in order.
    #[derive(Debug, PartialEq, Eq)]
    enum Did {
        Persist(Vec<u8>),
        Flush,
        Sent(u8),
        Reply(u8),
        Reload(u8),
    }

    #[derive(Default)]
    struct Recorder {
        log: Vec<Did>,
        fail_flush: bool,
    }

    fn msg(n: u8) -> MessageId {
        MessageId([n; MessageId::LEN])
    }

    impl Effects for Recorder {
        fn persist(&mut self, ops: &[StoreOp]) -> Result<(), ShellError> {
            for op in ops {
                if let StoreOp::Put { key, .. } = op {
                    self.log.push(Did::Persist(key.clone()));
                }
            }
            Ok(())
        }
        fn flush(&mut self) -> Result<(), ShellError> {
            if self.fail_flush {
                return Err(ShellError::Store(crate::store::StoreError::Io(
                    "disk".into(),
                )));
            }
            self.log.push(Did::Flush);
            Ok(())
        }
        fn effect(&mut self, out: Output) -> Result<(), ShellError> {
            match out {
                Output::Emit(Event::Sent { message, .. }) => self.log.push(Did::Sent(message.0[0])),
                Output::Reload { doc } => self.log.push(Did::Reload(doc[0])),
                other => panic!("unexpected effect {other:?}"),
            }
            Ok(())
        }
        fn reply(&mut self, to: ReplyTo, result: CommandResult) {
            match &result {
                Ok(Reply::Message(m)) => self.log.push(Did::Reply(m.0[0])),
                other => panic!("unexpected reply {other:?}"),
            }
            let _ = to.send(result);
        }
    }

    /// What the core returns for one sent message `n`.
    fn send_outputs(n: u8) -> Vec<Output> {
        vec![
            Output::Persist(vec![StoreOp::Put {
                key: vec![n],
                value: vec![n],
            }]),
            Output::Flush,
            Output::Emit(Event::Sent {
                conversation: ConversationId([0; ConversationId::LEN]),
                message: msg(n),
            }),
        ]
    }

    #[test]
    fn a_reload_reads_a_store_holding_every_write_staged_before_it() {
        let mut fx = Recorder::default();
        let mut batch = Batch::default();
        // A peer's changes taken in (no flush), then a reload of that document.
        let lazy = vec![Output::Persist(vec![StoreOp::Put {
            key: vec![1],
            value: vec![1],
        }])];
        batch.stage(&mut fx, lazy).expect("stage");
        batch
            .stage(&mut fx, vec![Output::Reload { doc: [4; 16] }])
            .expect("stage");
        assert_eq!(fx.log, vec![Did::Persist(vec![1]), Did::Reload(4)]);
        batch.commit(&mut fx).expect("commit");
        assert_eq!(fx.log.len(), 2, "nothing is written twice");
    }

    #[test]
    fn one_flush_covers_a_batch_and_nothing_visible_precedes_it() {
        let mut fx = Recorder::default();
        let mut batch = Batch::default();
        let mut answers = Vec::new();
        for n in 1..=3u8 {
            batch.stage(&mut fx, send_outputs(n)).expect("stage");
            let (tx, rx) = oneshot::channel();
            batch.reply(&mut fx, tx, Ok(Reply::Message(msg(n))));
            answers.push(rx);
        }
        // Nothing before the commit: no write, no event, no reply.
        assert_eq!(fx.log, vec![]);
        assert!(answers.iter_mut().all(|rx| rx.try_recv().is_err()));
        batch.commit(&mut fx).expect("commit");
        assert_eq!(
            fx.log,
            [
                // One store batch, the writes in order, then one flush.
                Did::Persist(vec![1]),
                Did::Persist(vec![2]),
                Did::Persist(vec![3]),
                Did::Flush,
                Did::Sent(1),
                Did::Reply(1),
                Did::Sent(2),
                Did::Reply(2),
                Did::Sent(3),
                Did::Reply(3)
            ]
        );
        for (n, mut rx) in (1..=3u8).zip(answers) {
            assert_eq!(rx.try_recv().expect("answered"), Ok(Reply::Message(msg(n))));
        }
        // An empty commit does nothing.
        batch.commit(&mut fx).expect("commit");
        assert_eq!(fx.log.len(), 10);
    }

    #[test]
    fn outputs_before_any_flush_are_not_held() {
        let mut fx = Recorder::default();
        let mut batch = Batch::default();
        let mut outs = vec![Output::Emit(Event::Sent {
            conversation: ConversationId([0; ConversationId::LEN]),
            message: msg(9),
        })];
        outs.extend(send_outputs(1));
        batch.stage(&mut fx, outs).expect("stage");
        assert_eq!(fx.log, vec![Did::Sent(9)]);
        batch.commit(&mut fx).expect("commit");
        assert_eq!(
            fx.log[1..],
            [Did::Persist(vec![1]), Did::Flush, Did::Sent(1)]
        );
    }

    #[test]
    fn a_failed_flush_claims_nothing() {
        let mut fx = Recorder {
            fail_flush: true,
            ..Recorder::default()
        };
        let mut batch = Batch::default();
        batch.stage(&mut fx, send_outputs(1)).expect("stage");
        let (tx, mut rx) = oneshot::channel();
        batch.reply(&mut fx, tx, Ok(Reply::Message(msg(1))));
        assert!(batch.commit(&mut fx).is_err());
        drop(batch);
        assert_eq!(fx.log, vec![Did::Persist(vec![1])]);
        // The caller hears that the node stopped, never that it was sent.
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }
}
