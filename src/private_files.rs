//! Private files and locks, the one place for them: directories 0700, files 0600, atomic durable
//! writes, lock files, and the check that nobody else can rewrite what we are about to trust.
//!
//! `connection.rs` (connection files, the kernels directory, kernel locks) and `state.rs` (the store
//! and its commit lock) both build on these; each keeps its own error type and messages.

use fs2::FileExt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes temporary file names unique between writers of one process (the pid separates processes).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether group or others can write the file or directory: whoever can could run code as this user
/// (a connection file) or replace what we read (the store).
pub fn writable_by_others(meta: &fs::Metadata) -> bool {
    meta.mode() & 0o022 != 0
}

/// Refuses a file (or directory) writable by group or others.
pub fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), String> {
    if writable_by_others(meta) {
        return Err(format!(
            "{} is writable by other users (mode {:o}); refusing to use it (chmod go-w it)",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Creates `dir` and its missing parents with mode 0700 (existing ones are left as they are).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates `dir` (0700) if needed; one of our own directories that others can write is tightened
/// to 0700 rather than refused.
pub fn make_private_dir(dir: &Path) -> Result<(), String> {
    create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if writable_by_others(&meta) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{} is writable by other users and cannot be fixed: {e}", dir.display()))?;
    }
    Ok(())
}

/// Opens (creating it 0600 if missing) a file used only for its lock; its content is never touched.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
}

/// Opens a private file for appending (a log), creating it 0600 if missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// Whether someone holds the exclusive lock on `path`. A missing file means nobody, and stays
/// missing. Taking the lock ourselves (and releasing it at once) means nobody held it.
pub fn lock_is_held(path: &Path) -> bool {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => match f.try_lock_exclusive() {
            Ok(()) => {
                let _ = FileExt::unlock(&f);
                false
            }
            Err(_) => true,
        },
        Err(_) => false,
    }
}

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The name prefix of `path`'s temporary files: hidden, in the same directory, so a rename can
/// replace `path` atomically and a directory listing stays clean. A writer killed mid-write leaves
/// one behind; whoever owns the directory can recognise them by this prefix.
pub fn tmp_prefix(path: &Path) -> String {
    let name = path.file_name().map_or("file".into(), |n| n.to_string_lossy());
    format!(".{name}.tmp.")
}

fn tmp_path(path: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!("{}{}.{n}", tmp_prefix(path), std::process::id()))
}

/// Replaces `path` atomically with a 0600 file holding `bytes`: a fresh temporary file beside it,
/// written, fsynced, then renamed over `path`. Returns the new file, still open. On failure `path`
/// is as it was and no temporary file is left. The directory is not synced: see [`sync_dir`].
pub fn replace_atomic(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let tmp = tmp_path(path);
    let open = || OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp);
    let file = match open() {
        // Only a dead process with our pid can have left this name: it is garbage.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&tmp);
            open()
        }
        other => other,
    };
    let result = file
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()?; // the data must be on disk before the rename makes it the file
            Ok(f)
        })
        .and_then(|f| fs::rename(&tmp, path).map(|()| f));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename in `dir` durable (fsync of the directory).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Atomic, durable write of a private file: [`replace_atomic`], then the directory fsync, whose
/// failure is an error too.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_atomic(path, bytes)?;
    sync_dir(parent_dir(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, created private (or only named, not created), removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn named(name: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!("llmspell-private-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            Scratch(d)
        }
        fn new(name: &str) -> Scratch {
            let s = Scratch::named(name);
            create_private_dir(&s.0).unwrap();
            s
        }
        /// A file in it with `text` and `mode`.
        fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        }
        fn names(&self) -> Vec<String> {
            let entries = fs::read_dir(&self.0).unwrap();
            let mut v: Vec<String> =
                entries.map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
            v.sort();
            v
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn directories_are_0700_and_loose_ones_are_tightened() {
        let d = Scratch::named("dirs");
        let sub = d.0.join("a/b");
        make_private_dir(&sub).unwrap();
        assert_eq!((mode(&d.0.join("a")), mode(&sub)), (0o700, 0o700));
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o777)).unwrap();
        make_private_dir(&sub).unwrap();
        assert_eq!(mode(&sub), 0o700);
    }

    #[test]
    fn atomic_write_is_0600_replaces_the_file_and_leaves_no_temporary_file() {
        let d = Scratch::new("atomic");
        let p = d.file("f.json", "old", 0o644);
        write_private_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(mode(&p), 0o600, "the new version is private whatever the old one was");
        let kept = replace_atomic(&p, b"newer").unwrap();
        assert_eq!(kept.metadata().unwrap().ino(), fs::metadata(&p).unwrap().ino(), "returns the new file");
        assert_eq!(d.names(), ["f.json"], "no temporary file is left");
    }

    #[test]
    fn failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary_file() {
        let d = Scratch::new("atomic-fail");
        let p = d.file("f.json", "old", 0o600);
        // Renaming a file over a non-empty directory fails after the temporary file was written.
        let blocked = d.0.join("dir");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), "").unwrap();
        assert!(replace_atomic(&blocked, b"new").is_err());
        assert_eq!(d.names(), ["dir", "f.json"]);
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
    }

    #[test]
    fn lock_held_means_alive_a_missing_lock_stays_missing_and_lock_and_log_files_are_0600() {
        let d = Scratch::new("lock");
        let p = d.0.join("k.lock");
        assert!(!lock_is_held(&p));
        assert!(!p.exists(), "asking must not create the lock file");
        let held = open_lock_file(&p).unwrap();
        assert_eq!(mode(&p), 0o600);
        open_append(&d.0.join("k.log")).unwrap();
        assert_eq!(mode(&d.0.join("k.log")), 0o600);
        held.try_lock_exclusive().unwrap();
        assert!(lock_is_held(&p));
        drop(held);
        assert!(!lock_is_held(&p));
    }

    #[test]
    fn files_writable_by_others_are_refused() {
        let d = Scratch::new("check");
        for (m, ok) in [(0o600, true), (0o644, true), (0o620, false), (0o602, false), (0o666, false)] {
            let p = d.file("f", "", m);
            let r = check_private(&p, &fs::metadata(&p).unwrap());
            assert_eq!(r.is_ok(), ok, "mode {m:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains("writable by other users") && e.contains(&format!("{m:o}")), "{e}");
            }
        }
    }
}
