//! Identifier newtypes. Each id has one text form, used by the CLI, the API
//! and logs; parsing accepts exactly what `Display` prints.
//!
//! A [`DeviceId`] is a device's Ed25519 public key. Its text form is the
//! libp2p `PeerId` of that key (`12D3KooW…`), computed here without libp2p so
//! that the core stays free of networking crates; the network layer checks
//! the two agree.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what} must be {expected}")]
pub struct ParseIdError {
    what: &'static str,
    expected: &'static str,
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            pub fn random(rng: &mut dyn rand_core::RngCore) -> Self {
                let mut b = [0u8; $len];
                rng.fill_bytes(&mut b);
                $name(b)
            }

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                data_encoding::HEXLOWER.encode(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..8])
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = ParseIdError {
                    what: $what,
                    expected: concat!(stringify!($len), " bytes of lowercase hex"),
                };
                let v = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(s.trim().as_bytes())
                    .map_err(|_| err.clone())?;
                let a: [u8; $len] = v.try_into().map_err(|_| err)?;
                Ok($name(a))
            }
        }
    };
}

hex_id!(
    /// A person: stable across their devices, random, chosen once.
    MemberId, 16, "a member id"
);
hex_id!(
    /// A conversation's stable id, derived from its header (protocol/wire.md §2).
    ConversationId, 16, "a conversation id"
);
hex_id!(
    /// A message id: the first 16 bytes of SHA-256 of the message's signature,
    /// so it is fixed by the signed content and cannot be chosen by a relay.
    MessageId, 16, "a message id"
);
hex_id!(
    /// A team: the team authority's Ed25519 public key.
    TeamId, 32, "a team id"
);

impl TeamId {
    /// Short, non-secret fingerprint used in mDNS TXT records and prompts.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let d = sha2::Sha256::digest([b"huddle/team-fingerprint/v1".as_slice(), &self.0].concat());
        data_encoding::HEXLOWER.encode(&d[..8])
    }
}

/// A device: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub [u8; 32]);

/// Multihash "identity" code, length 36, then the protobuf encoding of a
/// libp2p `PublicKey { Type: Ed25519, Data: <32 bytes> }`.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

impl DeviceId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The libp2p PeerId bytes (identity multihash of the protobuf public key).
    pub fn peer_id_bytes(&self) -> [u8; 38] {
        let mut out = [0u8; 38];
        out[..6].copy_from_slice(&PEER_ID_PREFIX);
        out[6..].copy_from_slice(&self.0);
        out
    }

    pub fn from_peer_id_bytes(b: &[u8]) -> Option<DeviceId> {
        if b.len() != 38 || b[..6] != PEER_ID_PREFIX {
            return None;
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&b[6..]);
        Some(DeviceId(k))
    }

    /// A short form for logs and tables: the last 8 characters of the PeerId.
    pub fn short(&self) -> String {
        let s = self.to_string();
        s[s.len() - 8..].to_string()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.peer_id_bytes()).into_string())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId(…{})", self.short())
    }
}

impl FromStr for DeviceId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = ParseIdError {
            what: "a device id",
            expected: "a libp2p Ed25519 peer id such as 12D3KooW…",
        };
        let b = bs58::decode(s.trim()).into_vec().map_err(|_| err.clone())?;
        DeviceId::from_peer_id_bytes(&b).ok_or(err)
    }
}

/// Milliseconds since the Unix epoch. The core never reads a clock: the shell
/// (or the simulator) passes `now` in.
pub type Millis = u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let d = DeviceId([7u8; 32]);
        let s = d.to_string();
        assert!(s.starts_with("12D3KooW"), "{s}");
        assert_eq!(s.parse::<DeviceId>().unwrap(), d);
        let m = MemberId([0xab; 16]);
        assert_eq!(m.to_string().parse::<MemberId>().unwrap(), m);
        assert!("zz".parse::<MemberId>().is_err());
        assert!("12D3KooWnotreally".parse::<DeviceId>().is_err());
    }
}

macro_rules! text_serde {
    ($($name:ident),*) => {$(
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

text_serde!(MemberId, ConversationId, MessageId, TeamId, DeviceId);
