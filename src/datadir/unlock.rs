//! Unlocking an encrypted data directory (storage.md §8): where the
//! passphrase comes from, the data key it unwraps, and the identity's files
//! sealed with it.
//!
//! Invariants: the passphrase is asked for once per process, only when
//! something encrypted is first read or written (a command that goes
//! through the running node's API never needs it); the data key is kept in
//! memory that is wiped when the last clone of the [`DataDir`] goes; an
//! encrypted directory is never written a plain secret; a plain secret left
//! from before encryption (or by a crash during the upgrade) is sealed as
//! soon as the directory is unlocked.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use super::{
    read_bytes, write_private_bytes, DataDir, DataDirError, CERTIFICATE, DEVICE_KEY, PROFILE,
    TEAM_KEY,
};
use crate::atrest::wrap::{self, Params, WrapError, MAX_PASSPHRASE, MIN_PASSPHRASE};
use crate::atrest::{is_sealed_file, DataKey, Keys, WRAP_FILE};
use crate::store::{SledStore, StoreError};

/// The files sealed with the data key.
const SECRETS: [&str; 5] = [
    DEVICE_KEY,
    PROFILE,
    CERTIFICATE,
    TEAM_KEY,
    super::pin::PIN_FILE,
];
/// Tries at a terminal before giving up.
const PROMPT_TRIES: usize = 3;

/// Where the passphrase comes from.
#[derive(Clone, Debug)]
pub enum Passphrase {
    /// Nowhere: an encrypted directory stays locked.
    None,
    /// A file holding it (its last newline is not part of it). A file on
    /// the same disk protects nothing against a thief: for services.
    File(PathBuf),
    /// Asked for at the terminal.
    Prompt,
}

#[derive(Debug)]
pub(super) struct Unlock {
    source: Passphrase,
    state: Mutex<Option<Arc<Unlocked>>>,
}

#[derive(Debug)]
struct Unlocked {
    key: DataKey,
    keys: Arc<Keys>,
}

impl Unlocked {
    fn new(key: DataKey) -> Arc<Unlocked> {
        let keys = Arc::new(key.keys());
        Arc::new(Unlocked { key, keys })
    }
}

/// Wrong passphrases not yet in the audit trail: a count, plain.
pub const FAILED_FILE: &str = "unlock.failed";

impl DataDir {
    /// A data directory unlocked, when it is encrypted, with the
    /// passphrase from `source`.
    pub fn with_passphrase(path: impl Into<PathBuf>, source: Passphrase) -> DataDir {
        DataDir {
            path: path.into(),
            unlock: Arc::new(Unlock {
                source,
                state: Mutex::new(None),
            }),
        }
    }

    /// Whether this data directory is encrypted at rest.
    pub fn is_encrypted(&self) -> bool {
        self.file(WRAP_FILE).exists()
    }

    fn unlocked(&self) -> Option<Arc<Unlocked>> {
        self.unlock.state.lock().expect("not poisoned").clone()
    }

    fn set_unlocked(&self, u: Arc<Unlocked>) {
        *self.unlock.state.lock().expect("not poisoned") = Some(u);
    }

    /// The data key's keys: `None` for an unencrypted directory; for an
    /// encrypted one, unlocked with the passphrase on first use.
    pub fn keys(&self) -> Result<Option<Arc<Keys>>, DataDirError> {
        if let Some(u) = self.unlocked() {
            return Ok(Some(u.keys.clone()));
        }
        let Some(wrapped) = self.read_wrap()? else {
            return Ok(None);
        };
        let key = self.unwrap_with_source(&wrapped)?;
        let u = Unlocked::new(key);
        self.set_unlocked(u.clone());
        self.seal_plain_secrets()?;
        Ok(Some(u.keys.clone()))
    }

    /// `key.wrap`, read up to one byte past its length (a longer file is
    /// refused as damaged by `wrap::params_of`, never read whole).
    pub(super) fn read_wrap(&self) -> Result<Option<Vec<u8>>, DataDirError> {
        let read = std::fs::File::open(self.file(WRAP_FILE)).and_then(|f| {
            let mut bytes = Vec::with_capacity(wrap::WRAP_LEN + 1);
            f.take(wrap::WRAP_LEN as u64 + 1).read_to_end(&mut bytes)?;
            Ok(bytes)
        });
        match read {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(DataDirError::Io {
                doing: "read",
                path: self.file(WRAP_FILE),
                error,
            }),
        }
    }

    fn unwrap_with_source(&self, wrapped: &[u8]) -> Result<DataKey, DataDirError> {
        let tries = match self.unlock.source {
            Passphrase::Prompt => PROMPT_TRIES,
            _ => 1,
        };
        for _ in 0..tries {
            let passphrase = self.passphrase(false)?;
            match wrap::unwrap(wrapped, passphrase.as_bytes()) {
                Ok(key) => return Ok(key),
                Err(WrapError::WrongPassphrase) => {
                    self.note_failed_unlock();
                    if tries > 1 {
                        eprintln!("That passphrase does not unlock {}.", self.path.display());
                    }
                }
                Err(e @ WrapError::Damaged(_)) => {
                    return Err(DataDirError::Damaged {
                        path: self.file(WRAP_FILE),
                        why: e.to_string(),
                    })
                }
            }
        }
        Err(DataDirError::WrongPassphrase(self.path.clone()))
    }

    /// Counts a wrong passphrase in [`FAILED_FILE`] (plain: nothing but the
    /// count), since without the key nothing can be written to the audit
    /// trail; the next unlock records them ([`DataDir::failed_unlocks`]).
    fn note_failed_unlock(&self) {
        let path = self.file(FAILED_FILE);
        let count = self.failed_unlocks().saturating_add(1);
        if let Err(e) = std::fs::write(&path, count.to_string()) {
            tracing::warn!("could not count a failed unlock in {}: {e}", path.display());
        }
    }

    /// Wrong passphrases given since they were last cleared
    /// ([`DataDir::clear_failed_unlocks`], once recorded in the trail).
    pub fn failed_unlocks(&self) -> u32 {
        // A count is at most 10 digits: a longer file is not one, and is
        // never read whole.
        std::fs::File::open(self.file(FAILED_FILE))
            .and_then(|f| {
                let mut bytes = Vec::with_capacity(11);
                f.take(11).read_to_end(&mut bytes)?;
                Ok(bytes)
            })
            .ok()
            .filter(|b| b.len() <= 10)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Forgets the wrong passphrases counted: called once the audit trail
    /// holds them.
    pub fn clear_failed_unlocks(&self) {
        match std::fs::remove_file(self.file(FAILED_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!("could not remove {FAILED_FILE}: {e}");
            }
            _ => {}
        }
    }

    /// The passphrase from this directory's source; `new` asks twice at a
    /// terminal and checks its length.
    fn passphrase(&self, new: bool) -> Result<Zeroizing<String>, DataDirError> {
        let text = match &self.unlock.source {
            Passphrase::None if new => {
                return Err(DataDirError::Passphrase(format!(
                    "{} needs a passphrase to be encrypted: run the command at a terminal, or give --passphrase-file FILE (or HUDDLE_PASSPHRASE_FILE); `huddle init --unencrypted` is for demonstrations and tests only",
                    self.path.display()
                )))
            }
            Passphrase::None => {
                return Err(DataDirError::Locked(format!(
                    "{} is encrypted: give its passphrase with --passphrase-file FILE (or HUDDLE_PASSPHRASE_FILE), or run the command at a terminal",
                    self.path.display()
                )))
            }
            Passphrase::File(path) => read_passphrase_file(path)?,
            Passphrase::Prompt => {
                let ask = |what: &str| {
                    rpassword::prompt_password(what)
                        .map(Zeroizing::new)
                        .map_err(|e| DataDirError::Passphrase(format!("cannot read a passphrase from the terminal ({e}): give it with --passphrase-file FILE (for a new passphrase, `passphrase change --new-file FILE`)")))
                };
                if new {
                    let first = ask(&format!("New passphrase for {} (at least {MIN_PASSPHRASE} characters): ", self.path.display()))?;
                    let again = ask("The same passphrase again: ")?;
                    if first != again {
                        return Err(DataDirError::Passphrase("the two passphrases differ; nothing was changed".into()));
                    }
                    first
                } else {
                    ask(&format!("Passphrase for {}: ", self.path.display()))?
                }
            }
        };
        if new && text.chars().count() < MIN_PASSPHRASE {
            return Err(DataDirError::Passphrase(format!(
                "a passphrase must be at least {MIN_PASSPHRASE} characters; nothing was changed"
            )));
        }
        Ok(text)
    }

    /// Encrypts this data directory with a new data key under a new
    /// passphrase from its source: at `init` (before anything is written),
    /// or to upgrade a plain one, whose store is rewritten encrypted when
    /// it is next opened ([`DataDir::open_store`]) and whose identity files
    /// are sealed now.
    pub fn encrypt(&self) -> Result<(), DataDirError> {
        if self.is_encrypted() {
            return Err(DataDirError::Passphrase(format!(
                "{} is encrypted already: `huddle passphrase change` changes its passphrase",
                self.path.display()
            )));
        }
        let passphrase = self.passphrase(true)?;
        // A plain temporary file a crash left beside a secret goes (this
        // runs at `init` and under `passphrase set`'s lock, with no other
        // writer).
        for name in SECRETS {
            let tmp = self.file(name).with_extension("tmp");
            if let Err(e) = crate::store::upgrade_sealed::scrub_file(&tmp) {
                tracing::warn!("could not remove {}: {e}", tmp.display());
            }
        }
        let key = DataKey::generate();
        self.write_wrap(&key, &passphrase)?;
        self.set_unlocked(Unlocked::new(key));
        self.seal_plain_secrets()
    }

    /// Wraps the data key under a new passphrase from `source`; no data is
    /// rewritten.
    pub fn change_passphrase(&self, source: &Passphrase) -> Result<(), DataDirError> {
        if self.keys()?.is_none() {
            return Err(DataDirError::Passphrase(format!(
                "{} is not encrypted: `huddle passphrase set` encrypts it",
                self.path.display()
            )));
        }
        let u = self.unlocked().expect("unlocked just now");
        let new = DataDir::with_passphrase(self.path.clone(), source.clone()).passphrase(true)?;
        self.write_wrap(&u.key, &new)
    }

    fn write_wrap(&self, key: &DataKey, passphrase: &str) -> Result<(), DataDirError> {
        let wrapped =
            wrap::wrap(key, passphrase.as_bytes(), Params::for_new_wrap()).map_err(|e| {
                DataDirError::Passphrase(format!("cannot derive a key from the passphrase: {e}"))
            })?;
        self.create()?;
        write_private_bytes(&self.file(WRAP_FILE), &wrapped)
    }

    /// Seals whichever identity files are still plain. The sealed copy
    /// replaces the plain one (written whole, renamed, the directory
    /// synced) before the plain bytes, through a handle opened first, are
    /// overwritten with zeros: a crash or a full disk at any point leaves
    /// one readable copy.
    fn seal_plain_secrets(&self) -> Result<(), DataDirError> {
        for name in SECRETS {
            let path = self.file(name);
            let Some(bytes) = read_bytes(&path)? else {
                continue;
            };
            if is_sealed_file(&bytes) {
                continue;
            }
            let bytes = Zeroizing::new(bytes);
            let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
            let old = std::fs::OpenOptions::new().write(true).open(&path);
            self.write_secret(name, &text)?;
            let zero = std::fs::File::open(&self.path)
                .and_then(|d| d.sync_all())
                .and(old)
                .and_then(|mut f| {
                    f.write_all(&vec![0u8; bytes.len()])
                        .and_then(|()| f.sync_all())
                });
            if let Err(e) = zero {
                tracing::warn!("could not overwrite the plain {}: {e}", path.display());
            }
        }
        Ok(())
    }

    /// A file of the identity, opened if it is sealed.
    pub(super) fn read_secret(
        &self,
        name: &str,
    ) -> Result<Option<Zeroizing<String>>, DataDirError> {
        let path = self.file(name);
        let Some(bytes) = read_bytes(&path)? else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        let damaged = |why: String| DataDirError::Damaged {
            path: path.clone(),
            why,
        };
        if !is_sealed_file(&bytes) {
            return String::from_utf8(bytes.to_vec())
                .map(|t| Some(Zeroizing::new(t)))
                .map_err(|_| damaged("it is not text".into()));
        }
        let keys = self.keys()?.ok_or_else(|| {
            damaged("it is encrypted but the data directory has no key.wrap".into())
        })?;
        let plain = keys
            .open_file(name, &bytes)
            .map_err(|e| damaged(e.to_string()))?;
        String::from_utf8(plain.to_vec())
            .map(|t| Some(Zeroizing::new(t)))
            .map_err(|_| damaged("it is not text".into()))
    }

    /// Writes a file of the identity, sealed if the directory is encrypted.
    pub(super) fn write_secret(&self, name: &str, text: &str) -> Result<(), DataDirError> {
        match self.keys()? {
            Some(keys) => {
                write_private_bytes(&self.file(name), &keys.seal_file(name, text.as_bytes()))
            }
            None => write_private_bytes(&self.file(name), text.as_bytes()),
        }
    }

    /// The store, encrypted or not as this directory is (an encrypted one
    /// is unlocked first, and a plain store left from before encryption is
    /// rewritten encrypted: `SledStore::open_sealed`).
    pub fn open_store(&self) -> Result<Result<SledStore, StoreError>, DataDirError> {
        Ok(match self.keys()? {
            Some(keys) => SledStore::open_sealed(&self.path, keys),
            None => SledStore::open(&self.path),
        })
    }
}

/// The passphrase in `path`: its text up to a last newline.
fn read_passphrase_file(path: &std::path::Path) -> Result<Zeroizing<String>, DataDirError> {
    let io = |error| DataDirError::Io {
        doing: "read the passphrase file",
        path: path.to_owned(),
        error,
    };
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_PASSPHRASE as u64 + 3)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let bad = |why: &str| DataDirError::Passphrase(format!("{}: {why}", path.display()));
    if bytes.len() > MAX_PASSPHRASE + 2 {
        return Err(bad("a passphrase file holds at most 1024 bytes"));
    }
    let mut text = Zeroizing::new(
        String::from_utf8(bytes.to_vec()).map_err(|_| bad("the passphrase is not UTF-8 text"))?,
    );
    for end in ["\r\n", "\n"] {
        if text.ends_with(end) {
            let keep = text.len() - end.len();
            text.truncate(keep);
            break;
        }
    }
    if text.is_empty() {
        return Err(bad("the passphrase file is empty"));
    }
    Ok(text)
}

/// Where a command's passphrase comes from: the file it was given, else the
/// terminal if the process has one (the prompt reads `/dev/tty`, so a
/// command whose stdin is a pipe still asks there).
pub fn source(file: Option<PathBuf>) -> Passphrase {
    let tty = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .is_ok_and(|t| t.is_terminal())
    };
    match file {
        Some(f) => Passphrase::File(f),
        None if tty() => Passphrase::Prompt,
        None => Passphrase::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DeviceKey;
    use crate::datadir::Profile;
    use crate::ids::MemberId;

    /// Sealing a plain secret that cannot be written (here its temporary
    /// file's name is taken by a directory) leaves the plain one whole.
    #[test]
    fn a_secret_that_cannot_be_sealed_is_left_readable() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("d");
        let plain = DataDir::new(&path);
        let key = DeviceKey::generate(&mut rand_core::OsRng);
        let profile = Profile {
            member: MemberId([1; 16]),
            name: "Ana Silva".into(),
            roles: vec!["nurse".into()],
        };
        plain.create_identity(&key, &profile).unwrap();
        let before = std::fs::read(path.join(DEVICE_KEY)).unwrap();
        let pass = tmp.path().join("pass");
        std::fs::write(&pass, "a long passphrase").unwrap();
        let wrapped = wrap::wrap(
            &DataKey::generate(),
            b"a long passphrase",
            Params::FAST_FOR_TESTS,
        )
        .unwrap();
        std::fs::write(path.join(WRAP_FILE), wrapped).unwrap();
        std::fs::create_dir(path.join(DEVICE_KEY).with_extension("tmp")).unwrap();

        let dir = DataDir::with_passphrase(&path, Passphrase::File(pass));
        assert!(dir.keys().is_err(), "sealing device.key cannot succeed");
        assert_eq!(std::fs::read(path.join(DEVICE_KEY)).unwrap(), before);
        // The next unlock (the next command) seals it.
        std::fs::remove_dir(path.join(DEVICE_KEY).with_extension("tmp")).unwrap();
        let again = DataDir::with_passphrase(&path, Passphrase::File(tmp.path().join("pass")));
        assert!(again.keys().unwrap().is_some());
        assert_eq!(again.identity().unwrap().device_id(), key.device_id());
        assert!(is_sealed_file(
            &std::fs::read(path.join(DEVICE_KEY)).unwrap()
        ));
    }
}
