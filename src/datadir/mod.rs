//! The data directory: where one device keeps its identity, its team
//! credentials, the local API's address, and (through the store) its
//! conversations.
//!
//! Layout (every file owner-only, `0600`; the directory `0700`, refused if
//! another user owns it or can write it: see [`crate::private_dir`]):
//!
//! | file | holds |
//! |---|---|
//! | `key.wrap` | the data key, wrapped by the passphrase (`atrest::wrap`) |
//! | `device.key` | the device's Ed25519 secret, hex |
//! | `profile.json` | member id, display name, roles |
//! | `certificate` | the membership certificate, as its text token |
//! | `team.key` | the team authority's secret, hex (administrators only) |
//! | `pin` | the screen's PIN as an Argon2id hash, hex (only if one is set: `pin.rs`) |
//! | `api.json` | url and bearer token of the running node's local API |
//! | `sealed/` (`db/` if unencrypted), `blobs/`, `huddle.lock` | the store (see `store::SledStore`) |
//!
//! In an encrypted data directory (one with `key.wrap`: storage.md §8) the
//! identity's files (and the PIN) are sealed with the data key (`unlock.rs`),
//! and so is everything in the store; `api.json` is not (it lives only
//! while the node runs, and tells other commands where to find it).
//!
//! Invariants: the CLI reads and writes only a directory that
//! [`DataDir::protect`] has passed; a secret is never overwritten (creating
//! an identity or an authority key where one exists is refused); every file
//! is written whole (temporary file, fsync, rename) so a crash never leaves
//! half a key; an encrypted directory is never written a plain secret.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::{AuthorityKey, DeviceKey};
use crate::ids::{DeviceId, MemberId};
use crate::membership::{Certificate, TokenError};

/// The PIN's record (public for the fuzz target).
pub mod pin;
mod unlock;

pub use pin::{PinError, MAX_PIN, MIN_PIN};
pub use unlock::{source as passphrase_source, Passphrase};

const DEVICE_KEY: &str = "device.key";
const PROFILE: &str = "profile.json";
const CERTIFICATE: &str = "certificate";
const TEAM_KEY: &str = "team.key";
const API: &str = "api.json";

/// Why the data directory could not be used. Each message is one sentence
/// that says what to do.
#[derive(Debug, Error)]
pub enum DataDirError {
    #[error("no identity in {0}: run `huddle init --name \"Your Name\" --role your-role` first")]
    NoIdentity(PathBuf),
    #[error("{dir} already holds the identity of {}; refusing to overwrite it (use another --data-dir for a second identity)", device.map(|d| format!("device {d}")).unwrap_or_else(|| "a device".into()))]
    IdentityExists {
        dir: PathBuf,
        /// Named when it could be read (an encrypted directory needs its
        /// passphrase for that, and is not asked for it here).
        device: Option<DeviceId>,
    },
    #[error("this device already holds a team authority key ({0}); refusing to overwrite it")]
    AuthorityExists(PathBuf),
    #[error("{0} holds a membership certificate from an older huddle: ask your team admin for a new token and install it with `huddle team join` (on the admin's own device, `huddle team show` renews it)")]
    OutdatedCertificate(PathBuf),
    #[error("{path} is damaged ({why}): restore it from a backup, or move the data directory aside and start again with `huddle init`")]
    Damaged { path: PathBuf, why: String },
    #[error(transparent)]
    NotPrivate(#[from] crate::private_dir::PrivateDirError),
    #[error("{0}")]
    Locked(String),
    #[error("wrong passphrase for {0}")]
    WrongPassphrase(PathBuf),
    #[error("{0}")]
    Passphrase(String),
    #[error("cannot {doing} {path}: {error}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Who this device's user is, as entered at `huddle init`. Once the device
/// joins a team, the certificate's member id, name and roles replace these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub member: MemberId,
    pub name: String,
    pub roles: Vec<String>,
}

/// The device key and the profile.
#[derive(Clone, Debug)]
pub struct Identity {
    pub key: DeviceKey,
    pub profile: Profile,
}

impl Identity {
    pub fn device_id(&self) -> DeviceId {
        self.key.device_id()
    }
}

/// Where the running node's local API listens, and its bearer token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiInfo {
    /// e.g. `http://127.0.0.1:43117`
    pub url: String,
    pub token: String,
    /// The process serving it.
    pub pid: u32,
}

/// One device's data directory. Clones share its unlocked keys.
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
    unlock: Arc<unlock::Unlock>,
}

impl DataDir {
    /// A data directory that asks for no passphrase (an encrypted one
    /// then refuses to open: see [`DataDir::with_passphrase`]).
    pub fn new(path: impl Into<PathBuf>) -> DataDir {
        DataDir::with_passphrase(path, Passphrase::None)
    }

    /// The platform default: `<data dir>/huddle` (e.g.
    /// `~/.local/share/huddle` on Linux).
    pub fn default_path() -> Option<PathBuf> {
        dirs::data_dir().map(|d| d.join("huddle"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates the directory (owner-only) if it does not exist yet, and
    /// makes an existing one owner-only ([`DataDir::protect`]).
    pub fn create(&self) -> Result<(), DataDirError> {
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&self.path).map_err(|error| DataDirError::Io {
            doing: "create the data directory",
            path: self.path.clone(),
            error,
        })?;
        self.protect()
    }

    /// Refuses a directory another user owns or can write, and takes every
    /// group and other permission off the directory and everything in it
    /// (a missing directory is fine: it is created owner-only).
    pub fn protect(&self) -> Result<(), DataDirError> {
        Ok(crate::private_dir::protect(&self.path)?)
    }

    pub fn has_identity(&self) -> bool {
        self.file(DEVICE_KEY).exists()
    }

    /// [`DataDirError::NoIdentity`] unless an identity is there (without
    /// reading it, so an encrypted directory is not unlocked for this).
    pub fn identity_exists(&self) -> Result<(), DataDirError> {
        if self.has_identity() {
            Ok(())
        } else {
            Err(DataDirError::NoIdentity(self.path.clone()))
        }
    }

    /// Writes a new identity; refuses if one is there already.
    pub fn create_identity(&self, key: &DeviceKey, profile: &Profile) -> Result<(), DataDirError> {
        if self.has_identity() {
            let device = match self.is_encrypted() {
                true => None,
                false => Some(self.identity()?.device_id()),
            };
            return Err(DataDirError::IdentityExists {
                dir: self.path.clone(),
                device,
            });
        }
        self.create()?;
        self.save_profile(profile)?;
        self.write_secret(DEVICE_KEY, &hex_secret(&key.secret()))
    }

    /// Reads the device key and profile.
    pub fn identity(&self) -> Result<Identity, DataDirError> {
        let key_path = self.file(DEVICE_KEY);
        let Some(text) = self.read_secret(DEVICE_KEY)? else {
            return Err(DataDirError::NoIdentity(self.path.clone()));
        };
        let key = DeviceKey::from_secret(parse_secret(&key_path, &text)?);
        let profile_path = self.file(PROFILE);
        let profile_text = self
            .read_secret(PROFILE)?
            .ok_or_else(|| DataDirError::Damaged {
                path: profile_path.clone(),
                why: "the file is missing".into(),
            })?;
        let profile = serde_json::from_str(&profile_text).map_err(|e| DataDirError::Damaged {
            path: profile_path,
            why: e.to_string(),
        })?;
        Ok(Identity { key, profile })
    }

    pub fn save_profile(&self, profile: &Profile) -> Result<(), DataDirError> {
        let text = serde_json::to_string_pretty(profile).expect("a profile serializes");
        self.write_secret(PROFILE, &(text + "\n"))
    }

    /// Whether this device holds the team authority key (without reading
    /// it, so an encrypted directory is not unlocked for this).
    pub fn has_authority(&self) -> bool {
        self.file(TEAM_KEY).exists()
    }

    /// The team authority key, if this device holds one.
    pub fn authority(&self) -> Result<Option<AuthorityKey>, DataDirError> {
        let path = self.file(TEAM_KEY);
        match self.read_secret(TEAM_KEY)? {
            None => Ok(None),
            Some(text) => Ok(Some(AuthorityKey::from_secret(parse_secret(&path, &text)?))),
        }
    }

    /// Stores a new authority key; refuses if one is there already.
    pub fn save_authority(&self, key: &AuthorityKey) -> Result<(), DataDirError> {
        let path = self.file(TEAM_KEY);
        if path.exists() {
            return Err(DataDirError::AuthorityExists(path));
        }
        self.write_secret(TEAM_KEY, &hex_secret(&key.secret()))
    }

    /// The installed membership certificate, if any.
    pub fn certificate(&self) -> Result<Option<Certificate>, DataDirError> {
        let path = self.file(CERTIFICATE);
        match self.read_secret(CERTIFICATE)? {
            None => Ok(None),
            Some(text) => Certificate::from_token(&text)
                .map(Some)
                .map_err(|e| match e {
                    TokenError::Outdated(_) => DataDirError::OutdatedCertificate(path),
                    e => DataDirError::Damaged {
                        path,
                        why: e.to_string(),
                    },
                }),
        }
    }

    /// The installed certificate's token as it is stored (opened if it is
    /// sealed), even when it does not parse as a current certificate.
    pub fn certificate_token(&self) -> Result<Option<String>, DataDirError> {
        Ok(self.read_secret(CERTIFICATE)?.map(|t| t.to_string()))
    }

    pub fn save_certificate(&self, cert: &Certificate) -> Result<(), DataDirError> {
        self.write_secret(CERTIFICATE, &(cert.to_token() + "\n"))
    }

    /// The running node's API, as it recorded it (the node may have died
    /// since: callers check that it answers).
    pub fn api_info(&self) -> Result<Option<ApiInfo>, DataDirError> {
        let path = self.file(API);
        match read_optional(&path)? {
            None => Ok(None),
            // A half-written or foreign file just means "no usable API".
            Some(text) => Ok(serde_json::from_str(&text).ok()),
        }
    }

    pub fn write_api_info(&self, info: &ApiInfo) -> Result<(), DataDirError> {
        let text = serde_json::to_string_pretty(info).expect("api info serializes");
        write_private(&self.file(API), &(text + "\n"))
    }

    /// Removes `api.json` if it still names this process's API.
    pub fn remove_api_info(&self, pid: u32) {
        if let Ok(Some(info)) = self.api_info() {
            if info.pid == pid {
                let _ = fs::remove_file(self.file(API));
            }
        }
    }
}

fn hex_secret(secret: &[u8; 32]) -> String {
    data_encoding::HEXLOWER.encode(secret) + "\n"
}

fn parse_secret(path: &Path, text: &str) -> Result<[u8; 32], DataDirError> {
    let damaged = |why: &str| DataDirError::Damaged {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .map_err(|_| damaged("it is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| damaged("it is not a 32-byte key"))
}

fn read_optional(path: &Path) -> Result<Option<String>, DataDirError> {
    read_bytes(path)?
        .map(String::from_utf8)
        .transpose()
        .map_err(|_| DataDirError::Io {
            doing: "read",
            path: path.to_owned(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
        })
}

/// A file's bytes, or `None` if it is not there.
fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, DataDirError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(DataDirError::Io {
            doing: "read",
            path: path.to_owned(),
            error,
        }),
    }
}

/// Writes `text` to `path` owner-only, whole or not at all.
fn write_private(path: &Path, text: &str) -> Result<(), DataDirError> {
    write_private_bytes(path, text.as_bytes())
}

/// Writes `bytes` to `path` owner-only, whole or not at all.
fn write_private_bytes(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let io = |doing: &'static str, error: std::io::Error| DataDirError::Io {
        doing,
        path: path.to_owned(),
        error,
    };
    let _ = fs::remove_file(&tmp);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(|e| io("write", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("write", e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io("write", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn identity_round_trips_and_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("d"));
        assert!(matches!(dir.identity(), Err(DataDirError::NoIdentity(_))));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let key = DeviceKey::generate(&mut rng);
        let profile = Profile {
            member: MemberId([1; 16]),
            name: "Ana Silva".into(),
            roles: vec!["nurse".into()],
        };
        dir.create_identity(&key, &profile).unwrap();
        let back = dir.identity().unwrap();
        assert_eq!(back.device_id(), key.device_id());
        assert_eq!(back.profile, profile);
        let other = DeviceKey::generate(&mut rng);
        assert!(matches!(
            dir.create_identity(&other, &profile),
            Err(DataDirError::IdentityExists { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(dir.path()), 0o700);
            assert_eq!(mode(&dir.path().join(DEVICE_KEY)), 0o600);
        }
    }
}
