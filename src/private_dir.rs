//! Keeping a data directory private to the user who runs huddle: the
//! directory holds patients' names, messages and the device's secret key,
//! so no other local user may read it, and no other local user may have
//! been able to write into it.
//!
//! Invariant: after [`protect`] returns `Ok`, the directory is owned by this
//! process's effective user, it is `0700`, and every file and directory in
//! it (symbolic links are neither followed nor changed) has no group or
//! other permission bits, whatever mode an earlier huddle, sled or a `mkdir`
//! left them with. A directory that another user owns or can write is
//! refused, never repaired: someone else could have planted files in it (a
//! database, a key, a link), so the user must look before trusting it. A
//! directory that others could merely read (a fresh `mkdir` is `0755`) is
//! tightened, since that is all the fix it needs.
//!
//! [`protect`] fixes what exists; files created afterwards are owner-only
//! because the binary sets its umask to `0o077` first ([`owner_only_umask`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a data directory cannot be used, as one sentence saying what to run.
#[derive(Debug, Error)]
pub enum PrivateDirError {
    #[error("the data directory {} belongs to another user (uid {owner}, you are uid {us}), so huddle will not keep its data there: use a directory of your own with --data-dir, or, if this one is yours, run `sudo chown -R {us} {}`", dir.display(), dir.display())]
    NotOurs { dir: PathBuf, owner: u32, us: u32 },
    #[error("the data directory {} can be written by other users (mode {mode:04o}), who could have put files in it: check what it holds, then run `chmod 700 {}`", dir.display(), dir.display())]
    WritableByOthers { dir: PathBuf, mode: u32 },
    #[error("cannot make {} private to its owner ({error}): run `chmod -R go-rwx {}` and try again", path.display(), dir.display())]
    Tighten {
        dir: PathBuf,
        path: PathBuf,
        error: io::Error,
    },
}

/// Makes every file the process creates from now on owner-only (`0600`
/// files, `0700` directories), including the ones sled creates by itself
/// while running. Call it first thing in `main`: the umask is per process.
pub fn owner_only_umask() {
    #[cfg(unix)]
    // SAFETY: umask(2) cannot fail and touches no memory of ours.
    unsafe {
        libc::umask(0o077);
    }
}

/// Checks that `dir` is ours and writable by us alone, then takes every
/// group and other permission off it and off everything in it.
///
/// A missing `dir` is left missing: there is nothing in it to expose, and
/// whoever creates it creates it `0700`. Something at `dir` that is not a
/// directory is left to the caller, which fails to use it with its own
/// sentence.
pub fn protect(dir: &Path) -> Result<(), PrivateDirError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;

        let meta = match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => meta,
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(tighten_error(dir, dir, error)),
        };
        // SAFETY: geteuid(2) cannot fail and touches no memory of ours.
        let us = unsafe { libc::geteuid() };
        if meta.uid() != us {
            return Err(PrivateDirError::NotOurs {
                dir: dir.to_owned(),
                owner: meta.uid(),
                us,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(PrivateDirError::WritableByOthers {
                dir: dir.to_owned(),
                mode,
            });
        }
        tighten(dir, &meta).map_err(|e| tighten_error(dir, dir, e))?;
        tighten_tree(dir)?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Tightens everything below `dir`, depth first, without following links.
#[cfg(unix)]
fn tighten_tree(dir: &Path) -> Result<(), PrivateDirError> {
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let entries = match fs::read_dir(&current) {
            Ok(entries) => entries,
            // Removed since we saw it (sled drops old snapshots as it runs).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(tighten_error(dir, &current, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| tighten_error(dir, &current, e))?;
            let path = entry.path();
            // `DirEntry::metadata` does not follow a symbolic link: a link
            // is not changed (chmod would change its target) or entered.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(tighten_error(dir, &path, e)),
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            match tighten(&path, &meta) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(tighten_error(dir, &path, e)),
            }
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(())
}

/// Leaves only the owner's permission bits (and drops set-id and sticky
/// bits, which a private directory has no use for).
#[cfg(unix)]
fn tighten(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let mode = meta.permissions().mode() & 0o7777;
    if mode & !0o700 == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))
}

fn tighten_error(dir: &Path, path: &Path, error: io::Error) -> PrivateDirError {
    PrivateDirError::Tighten {
        dir: dir.to_owned(),
        path: path.to_owned(),
        error,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_readable_tree_is_tightened_and_links_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir_all(dir.join("db/blobs")).unwrap();
        fs::write(dir.join("db/db"), b"Ana Silva, bed 4").unwrap();
        fs::write(dir.join("huddle.lock"), b"1").unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"not ours to change").unwrap();
        symlink(&outside, dir.join("db/link")).unwrap();
        chmod(&dir, 0o755);
        chmod(&dir.join("db"), 0o2755);
        chmod(&dir.join("db/blobs"), 0o755);
        chmod(&dir.join("db/db"), 0o644);
        chmod(&dir.join("huddle.lock"), 0o644);
        chmod(&outside, 0o644);

        protect(&dir).unwrap();

        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("db")), 0o700);
        assert_eq!(mode(&dir.join("db/blobs")), 0o700);
        assert_eq!(mode(&dir.join("db/db")), 0o600);
        assert_eq!(mode(&dir.join("huddle.lock")), 0o600);
        assert_eq!(mode(&outside), 0o644, "a link's target is not ours");
    }

    #[test]
    fn a_missing_directory_is_left_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("absent");
        protect(&dir).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn a_directory_others_can_write_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        for loose in [0o775, 0o757, 0o1777] {
            let dir = tmp.path().join(format!("d{loose:o}"));
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("planted"), b"x").unwrap();
            chmod(&dir.join("planted"), 0o644);
            chmod(&dir, loose);
            let err = protect(&dir).unwrap_err();
            assert!(
                matches!(err, PrivateDirError::WritableByOthers { mode, .. } if mode == loose),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("chmod 700 {}", dir.display())),
                "{text}"
            );
            assert_eq!(mode(&dir), loose, "a refused directory is not changed");
            assert_eq!(mode(&dir.join("planted")), 0o644);
        }
    }
}
