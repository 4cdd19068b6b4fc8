//! A node loaded straight from the store, for commands given while no
//! `huddle run` is running on the data directory.
//!
//! Invariant: this is the same core as a running node; only `Persist` and
//! `Flush` are carried out (there are no peers to send to and no timers to
//! keep), so whatever is written here is durable when a command returns and
//! goes out through the catalog exchange the next time the node runs.

use rand_core::OsRng;

use super::{now_ms, Result};
use crate::datadir::DataDir;
use crate::node::{Command, Input, Node, NodeConfig, Output, Reply};
use crate::store::{self, SledStore, Store};
use crate::trail::{Action, Via};

pub struct Offline {
    store: SledStore,
    node: Node,
}

impl Offline {
    /// Loads the node of `dir`. Fails with the store's "locked" sentence if
    /// another process has the directory open.
    pub fn open(dir: &DataDir) -> Result<Offline> {
        let id = dir.identity()?;
        let cert = dir.certificate()?;
        let store = dir.open_store()??;
        // Only what the command needs is read: the index, then the
        // conversations it touches.
        let stored = store::load_lazy(&store, store.loader())?;
        let node = Node::new(id.key, cert, stored, NodeConfig::default(), &mut OsRng)?;
        let mut offline = Offline { store, node };
        // What a node does as it starts, whether or not it then runs: the
        // upgrade of an older store's documents (the version-2 team
        // document among them), index entries, held times.
        let outputs = offline.node.handle(now_ms(), Input::Start);
        offline.carry_out(outputs)?;
        // This process asked for the passphrase: the audit trail says so.
        if dir.is_encrypted() {
            offline.record_unlock(dir, Via::Cli)?;
        }
        Ok(offline)
    }

    /// Records an unlock of the data directory, after the wrong
    /// passphrases given before it (`DataDir::failed_unlocks`), forgotten
    /// only once recorded.
    fn record_unlock(&mut self, dir: &DataDir, via: Via) -> Result<()> {
        let count = dir.failed_unlocks();
        if count > 0 {
            self.command(Command::Audit(Action::UnlockFailed { via, count }))?;
            dir.clear_failed_unlocks();
        }
        self.command(Command::Audit(Action::Unlocked { via }))?;
        Ok(())
    }

    /// The attachments' files.
    pub fn blobs(&self) -> &std::sync::Arc<crate::blobs::store::BlobStore> {
        self.store.blobs()
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Carries out a command and makes its changes durable.
    pub fn command(&mut self, cmd: Command) -> Result<Reply> {
        let (reply, outputs) = self.node.command(now_ms(), &mut OsRng, cmd);
        self.carry_out(outputs)?;
        Ok(reply?)
    }

    fn carry_out(&mut self, outputs: Vec<Output>) -> Result<()> {
        for o in outputs {
            match o {
                Output::Persist(ops) => self.store.apply(&ops)?,
                Output::Flush => self.store.flush()?,
                // No peers, no timers: the next `huddle run` catches up.
                Output::Send { .. }
                | Output::Disconnect { .. }
                | Output::SetTimer { .. }
                | Output::Reload { .. }
                | Output::Emit(_) => {}
            }
        }
        Ok(())
    }
}
