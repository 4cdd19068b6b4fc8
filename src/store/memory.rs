//! An in-memory [`Store`] that models the flush boundary: writes are visible
//! at once but become durable only at [`Store::flush`]. [`MemoryStore::crash`]
//! throws away whatever was not flushed, exactly as a power cut would.

use std::collections::BTreeMap;

use super::{Store, StoreError, StoreOp};

#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The visible state: durable plus unflushed writes.
    current: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Writes applied since the last flush, in order.
    pending: Vec<StoreOp>,
}

fn apply_to(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &StoreOp) {
    match op {
        StoreOp::Put { key, value } => {
            map.insert(key.clone(), value.clone());
        }
        StoreOp::Delete { key } => {
            map.remove(key);
        }
        StoreOp::DeleteRange { from, to } => {
            if from < to {
                let doomed: Vec<Vec<u8>> = map
                    .range(from.clone()..to.clone())
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    map.remove(&k);
                }
            }
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses every write not yet flushed.
    pub fn crash(&mut self) {
        self.current = self.durable.clone();
        self.pending.clear();
    }

    /// Total bytes of keys and values that are durable.
    pub fn durable_bytes(&self) -> usize {
        self.durable.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl Store for MemoryStore {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        for op in ops {
            apply_to(&mut self.current, op);
            self.pending.push(op.clone());
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        for op in std::mem::take(&mut self.pending) {
            apply_to(&mut self.durable, &op);
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.current.get(key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<super::KeyValues, StoreError> {
        Ok(self
            .current
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
