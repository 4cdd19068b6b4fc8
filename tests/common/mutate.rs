//! Corruptions of a byte string, for the tests that feed damaged frames or
//! stored records to a node: bits flipped, the tail cut off, bytes
//! overwritten, inserted or cut out. Positions are taken modulo the length,
//! so any `usize` is a valid one.

use proptest::prelude::*;

#[derive(Clone, Debug)]
pub enum Mutation {
    Flip { at: usize, bit: u8 },
    Truncate { at: usize },
    Overwrite { at: usize, bytes: Vec<u8> },
    Insert { at: usize, bytes: Vec<u8> },
    Cut { at: usize, len: usize },
}

impl Mutation {
    pub fn apply(&self, f: &mut Vec<u8>) {
        let pos = |at: usize, f: &Vec<u8>| if f.is_empty() { 0 } else { at % f.len() };
        match self {
            Mutation::Flip { at, bit } => {
                if !f.is_empty() {
                    let i = pos(*at, f);
                    f[i] ^= 1 << (bit % 8);
                }
            }
            Mutation::Truncate { at } => {
                let i = pos(*at, f);
                f.truncate(i);
            }
            Mutation::Overwrite { at, bytes } => {
                let i = pos(*at, f);
                for (k, b) in bytes.iter().enumerate() {
                    if let Some(x) = f.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
            Mutation::Insert { at, bytes } => {
                let i = pos(*at, f);
                f.splice(i..i, bytes.iter().copied());
            }
            Mutation::Cut { at, len } => {
                let i = pos(*at, f);
                let end = (i + len).min(f.len());
                f.drain(i..end);
            }
        }
    }
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        4 => (at, any::<u8>()).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => at.prop_map(|at| Mutation::Truncate { at }),
        2 => (at, prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        1 => (at, prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (at, 1..16usize).prop_map(|(at, len)| Mutation::Cut { at, len }),
    ]
}

/// One to three picks (an index, taken modulo the number of candidates:
/// frames, records), each with one to three mutations.
pub fn corruptions() -> impl Strategy<Value = Vec<(usize, Vec<Mutation>)>> {
    prop::collection::vec(
        (any::<usize>(), prop::collection::vec(mutation(), 1..4)),
        1..4,
    )
}
