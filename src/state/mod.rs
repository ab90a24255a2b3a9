//! The persistent key/value store behind the Lua `state` global and the `llmspell state` CLI.
//!
//! The store is one JSON object in one file (`$LLMSPELL_HOME/state.json`): pretty-printed, keys
//! sorted, mode 0600, shared by every kernel of the user and by the CLI. Values are
//! `serde_json::Value`s; integers stay integers and floats stay floats (`1.0` is written `1.0`).
//! Keys are non-empty strings of at most [`MAX_KEY_LEN`] bytes. A top-level JSON `null` is never
//! stored: `set(key, Null)` deletes the key, like `state.key = nil` in Lua.
//!
//! # Batching policy
//!
//! `set`, `delete`, `clear` and `import` only record changes in memory (the *pending* change set).
//! `get`, `keys` and `export` see the pending changes laid over the latest committed file.
//! `flush` commits all pending changes in one write; without pending changes it does nothing (no
//! lock, no write, no error). The kernel calls `flush` once before each execute reply, so a cell
//! that sets 100 000 keys writes the file once, and a cell's changes are on disk before its reply is
//! sent. `update` is the exception: it is an atomic read-modify-write across processes and writes
//! immediately, together with anything pending.
//!
//! # Commit protocol
//!
//! A commit takes an exclusive lock on `state.json.lock` (never on the data file: the rename below
//! replaces its inode), re-reads the latest committed file, applies only this store's pending
//! changes (keys it did not touch stay as other writers left them; a pending `clear` deletes every
//! key present at commit time, then later sets apply), writes the result to a fresh temporary file
//! in the same directory, fsyncs it, renames it over `state.json`, fsyncs the directory and
//! releases the lock. A writer killed at any moment leaves either the old or the new file; its
//! temporary file is ignored and removed by a later commit once it is a minute old. If the write
//! fails (disk full, read-only directory) the error names the file, the old file stays as it was,
//! and the pending changes are kept so a later `flush` can retry.
//!
//! # Reads
//!
//! Reads take no lock (rename is atomic). The parsed map is cached together with a stamp of the
//! file (device, inode, size, mtime, ctime) and re-read only when the stamp changes, so a `get` on
//! an unchanged store costs one `stat`. The store keeps the cached version's file open so its inode
//! number cannot be recycled for a newer version while it is cached, which makes the stamp reliable.
//!
//! # Failures
//!
//! A missing file is an empty store. A corrupt or unreadable file is never replaced: every
//! operation that reads it fails with [`StateError::Corrupt`] (or [`StateError::Io`]) naming the
//! file, and pending changes are never written over it; [`repair`] moves it aside. A state file or
//! directory writable by group or others is refused ([`StateError::Insecure`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::ops::Bound;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fs2::FileExt;
use serde_json::Value;

use crate::private_files;

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 4096;

/// Temporary files older than this, found while holding the lock, belong to a dead writer.
const STALE_TMP_AGE: Duration = Duration::from_secs(60);

/// Why a state operation failed; `Display` is one actionable line naming the file.
#[derive(Debug)]
pub enum StateError {
    /// The key is empty or longer than [`MAX_KEY_LEN`]; the text says which.
    BadKey(String),
    /// The state file exists but is not a JSON object; it was left untouched.
    Corrupt { path: PathBuf, problem: String },
    /// The state file or its directory is writable by group or others.
    Insecure { path: PathBuf, mode: u32 },
    /// A filesystem operation `op` on `path` failed.
    Io { path: PathBuf, op: &'static str, err: io::Error },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::BadKey(why) => write!(f, "bad state key: {why}"),
            StateError::Corrupt { path, problem } => write!(
                f,
                "state file {} is corrupt ({problem}); it was left untouched: run `llmspell state repair` to move it aside and start empty",
                path.display()
            ),
            StateError::Insecure { path, mode } => write!(
                f,
                "refusing to use {}: it is writable by other users (mode {:03o}); fix it with `chmod go-w {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            StateError::Io { path, op, err } => {
                write!(f, "cannot {op} {}: {err}", path.display())?;
                if *op == OP_READ {
                    write!(f, "; if it cannot be fixed, `llmspell state repair` moves it aside")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StateError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

/// The op of an unreadable state file: [`repair`] moves such a file aside.
const OP_READ: &str = "read";

fn io_err(path: &Path, op: &'static str, err: io::Error) -> StateError {
    StateError::Io { path: path.to_owned(), op, err }
}

/// Identifies one version of the state file; any write by our protocol changes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            // ctime catches a chmod, so a file made insecure is re-checked.
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// What the cached map corresponds to.
enum Loaded {
    /// Never read, last read failed, or the map was changed in memory: the next access re-reads.
    No,
    /// There was no file: the map is empty.
    Missing,
    /// The map is this version of the file; `_open` keeps its inode number from being reused.
    File { stamp: Stamp, _open: File },
}

/// A handle on the state file: cached committed map plus this handle's pending changes.
pub struct Store {
    path: PathBuf,
    lock_path: PathBuf,
    map: BTreeMap<String, Value>,
    loaded: Loaded,
    /// Pending changes: `Some` sets, `None` deletes.
    pending: BTreeMap<String, Option<Value>>,
    /// A pending `clear`: applied before `pending` at commit time.
    cleared: bool,
    /// Stale temporary files are swept once per store, on its first commit.
    swept: bool,
    /// Number of times the file was read and parsed (for tests and debug logs).
    reads: u64,
    /// Number of versions written (for tests and debug logs).
    writes: u64,
}

impl Store {
    /// A store on the file at `path`; never fails, errors surface on each call.
    pub fn open(path: impl Into<PathBuf>) -> Store {
        let path = path.into();
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        Store {
            path,
            lock_path: lock_path.into(),
            map: BTreeMap::new(),
            loaded: Loaded::No,
            pending: BTreeMap::new(),
            cleared: false,
            swept: false,
            reads: 0,
            writes: 0,
        }
    }

    /// The value of `key`, pending changes included.
    pub fn get(&mut self, key: &str) -> Result<Option<Value>, StateError> {
        check_key(key)?;
        self.reload()?;
        Ok(self.view(key).cloned())
    }

    /// Records `key = value` as pending; a `Null` value deletes the key.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), StateError> {
        check_key(key)?;
        if value.is_null() {
            return self.delete(key).map(|_| ());
        }
        // No stat per set: a loop of sets must stay cheap; flush re-checks the file under the lock.
        self.ensure_loaded()?;
        self.pending.insert(key.to_owned(), Some(value));
        Ok(())
    }

    /// Records the deletion of `key` as pending; returns whether it existed.
    pub fn delete(&mut self, key: &str) -> Result<bool, StateError> {
        check_key(key)?;
        self.reload()?;
        let existed = self.view(key).is_some();
        if !self.cleared && self.map.contains_key(key) {
            self.pending.insert(key.to_owned(), None);
        } else {
            // Only our own pending set to undo: recording a delete would also remove a key that
            // another writer adds before our commit, which we never saw.
            self.pending.remove(key);
        }
        Ok(existed)
    }

    /// All keys (starting with `prefix` if given), sorted, pending changes included.
    pub fn keys(&mut self, prefix: Option<&str>) -> Result<Vec<String>, StateError> {
        self.reload()?;
        Ok(self.known_keys(prefix))
    }

    /// The keys as last read, with no file access (the editors' snapshot after every cell).
    pub fn known_keys(&self, prefix: Option<&str>) -> Vec<String> {
        let prefix = prefix.unwrap_or("");
        let mut keys = BTreeSet::new();
        if !self.cleared {
            let committed = self
                .map
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix));
            keys.extend(committed.map(|(k, _)| k).filter(|k| !self.pending.contains_key(*k)));
        }
        let pending = self
            .pending
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        keys.extend(pending.filter(|(_, v)| v.is_some()).map(|(k, _)| k));
        keys.into_iter().cloned().collect()
    }

    /// Records "delete every key" as pending; sets made after it still apply.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.ensure_loaded()?;
        self.pending.clear();
        self.cleared = true;
        Ok(())
    }

    /// Atomically replaces `key` with `f(current)` across processes (`None` deletes) and writes at
    /// once, with any pending changes; if `f` fails nothing of its doing is written. `f` runs under
    /// the cross-process lock: keep it short.
    pub fn update<E: From<StateError>>(
        &mut self,
        key: &str,
        f: impl FnOnce(Option<Value>) -> Result<Option<Value>, E>,
    ) -> Result<Option<Value>, E> {
        check_key(key)?;
        let _lock = self.lock()?;
        self.reload()?;
        let had_pending = self.apply_pending();
        let old = self.map.get(key).cloned();
        match f(old.clone()) {
            Ok(new) => {
                let new = new.filter(|v| !v.is_null());
                let changed = new != old;
                if changed {
                    self.loaded = Loaded::No; // the map no longer matches the file
                    match &new {
                        Some(v) => self.map.insert(key.to_owned(), v.clone()),
                        None => self.map.remove(key),
                    };
                }
                if changed || had_pending {
                    self.write_map()?;
                }
                Ok(new)
            }
            Err(e) => {
                if had_pending {
                    self.write_map()?;
                }
                Err(e)
            }
        }
    }

    /// Whether there are changes not yet committed.
    pub fn has_pending(&self) -> bool {
        self.cleared || !self.pending.is_empty()
    }

    /// Drops the pending changes: the caller reported them as not saved, so they must not reach
    /// the file later. The next access re-reads the file.
    pub fn discard_pending(&mut self) {
        self.pending.clear();
        self.cleared = false;
        self.loaded = Loaded::No;
    }

    /// Commits the pending changes in one atomic, durable write; no-op when nothing is pending.
    pub fn flush(&mut self) -> Result<(), StateError> {
        if !self.has_pending() {
            return Ok(());
        }
        let _lock = self.lock()?;
        self.reload()?;
        self.apply_pending();
        self.write_map()
    }

    /// The whole map, pending changes included.
    pub fn export(&mut self) -> Result<BTreeMap<String, Value>, StateError> {
        self.reload()?;
        let mut out = if self.cleared { BTreeMap::new() } else { self.map.clone() };
        for (k, v) in &self.pending {
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    /// Sets every key of `map` (`Null` deletes), then flushes; a bad key changes nothing.
    pub fn import(&mut self, map: BTreeMap<String, Value>) -> Result<(), StateError> {
        for key in map.keys() {
            check_key(key)?;
        }
        self.reload()?;
        for (key, value) in map {
            self.set(&key, value)?;
        }
        self.flush()
    }

    /// The visible value of `key`: pending change, else committed value unless cleared.
    fn view(&self, key: &str) -> Option<&Value> {
        match self.pending.get(key) {
            Some(change) => change.as_ref(),
            None if self.cleared => None,
            None => self.map.get(key),
        }
    }

    /// Directory holding the state file.
    fn dir(&self) -> &Path {
        private_files::parent_dir(&self.path)
    }

    /// Reads the file unless a good read is cached (no stat: used by cheap pending-only calls).
    fn ensure_loaded(&mut self) -> Result<(), StateError> {
        match self.loaded {
            Loaded::No => self.reload(),
            _ => Ok(()),
        }
    }

    /// Brings the cached map up to the latest committed file: one stat when nothing changed.
    fn reload(&mut self) -> Result<(), StateError> {
        match fs::metadata(&self.path) {
            Ok(meta) => {
                if let Loaded::File { stamp, .. } = &self.loaded {
                    if *stamp == Stamp::of(&meta) {
                        return Ok(());
                    }
                }
                self.read_file()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.map.clear();
                self.loaded = Loaded::Missing;
                Ok(())
            }
            Err(e) => {
                self.forget();
                Err(io_err(&self.path, "inspect", e))
            }
        }
    }

    /// Drops the cache so nothing stale is served after a failure.
    fn forget(&mut self) {
        self.map.clear();
        self.loaded = Loaded::No;
    }

    /// Reads and parses the file into the cache, checking its permissions first.
    fn read_file(&mut self) -> Result<(), StateError> {
        self.forget();
        check_secure(self.dir())?;
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.loaded = Loaded::Missing; // removed between the stat and the open
                return Ok(());
            }
            Err(e) => return Err(io_err(&self.path, OP_READ, e)),
        };
        // Stamp and checks come from the open file, so they describe exactly what is parsed.
        let meta = file.metadata().map_err(|e| io_err(&self.path, OP_READ, e))?;
        if !meta.is_file() {
            return Err(self.corrupt("it is not a regular file".into()));
        }
        if private_files::writable_by_others(&meta) {
            return Err(StateError::Insecure { path: self.path.clone(), mode: meta.mode() });
        }
        let mut bytes = Vec::with_capacity(meta.size() as usize);
        file.read_to_end(&mut bytes).map_err(|e| io_err(&self.path, OP_READ, e))?;
        self.reads += 1;
        let map = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                let kind = match other {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Array(_) => "an array",
                    Value::Object(_) => unreachable!(),
                };
                return Err(self.corrupt(format!("the top-level value is {kind}, not an object")));
            }
            Err(e) => return Err(self.corrupt(format!("not valid JSON: {e}"))),
        };
        self.map = map.into_iter().collect();
        self.loaded = Loaded::File { stamp: Stamp::of(&meta), _open: file };
        Ok(())
    }

    fn corrupt(&self, problem: String) -> StateError {
        StateError::Corrupt { path: self.path.clone(), problem }
    }

    /// Creates the directory if needed and takes the exclusive commit lock (released on drop).
    fn lock(&mut self) -> Result<File, StateError> {
        let dir = self.dir().to_owned();
        if !dir.exists() {
            private_files::create_private_dir(&dir).map_err(|e| io_err(&dir, "create directory", e))?;
        }
        check_secure(&dir)?;
        let file = private_files::open_lock_file(&self.lock_path)
            .map_err(|e| io_err(&self.lock_path, "open lock file", e))?;
        file.lock_exclusive().map_err(|e| io_err(&self.lock_path, "lock", e))?;
        if !self.swept {
            self.swept = true;
            self.sweep_stale_tmp();
        }
        Ok(file)
    }

    /// Removes temporary files of dead writers. Called under the lock: writers create, write and
    /// rename their temporary file while holding it, so any we see was abandoned; the age margin
    /// only guards filesystems where the lock is not honoured.
    fn sweep_stale_tmp(&self) {
        let prefix = private_files::tmp_prefix(&self.path);
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if age.is_some_and(|age| age > STALE_TMP_AGE) {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => log::info!("removed stale temporary state file {}", path.display()),
                    Err(e) => log::warn!("cannot remove stale temporary state file {}: {e}", path.display()),
                }
            }
        }
    }

    /// Applies the pending changes to the cached map (under the lock); returns whether any were.
    /// Pending changes are kept until `write_map` succeeds, so a failed write can be retried.
    fn apply_pending(&mut self) -> bool {
        if !self.has_pending() {
            return false;
        }
        self.loaded = Loaded::No; // the map no longer matches the file
        if self.cleared {
            self.map.clear();
        }
        for (k, v) in &self.pending {
            match v {
                Some(v) => self.map.insert(k.clone(), v.clone()),
                None => self.map.remove(k),
            };
        }
        true
    }

    /// Writes the cached map as the new version (under the lock): temp file, fsync, rename, fsync
    /// directory. On success the pending changes are done; on failure they are kept.
    fn write_map(&mut self) -> Result<(), StateError> {
        let written = self.write_new_version();
        let file = match written {
            Ok(file) => file,
            Err(e) => {
                self.forget(); // the map holds unwritten changes: re-read before the next use
                return Err(e);
            }
        };
        self.pending.clear();
        self.cleared = false;
        self.writes += 1;
        // fstat after the rename, which changed the ctime; our lock keeps others from replacing it.
        self.loaded = match file.metadata() {
            Ok(meta) => Loaded::File { stamp: Stamp::of(&meta), _open: file },
            Err(_) => Loaded::No,
        };
        Ok(())
    }

    fn write_new_version(&self) -> Result<File, StateError> {
        let mut bytes = serde_json::to_vec_pretty(&self.map)
            .map_err(|e| io_err(&self.path, "encode", io::Error::new(io::ErrorKind::InvalidData, e)))?;
        bytes.push(b'\n');
        let file = private_files::replace_atomic(&self.path, &bytes)
            .map_err(|e| io_err(&self.path, "write a new version of", e))?;
        // The rename is the commit: from here on readers see the new version. A failed directory
        // fsync only weakens durability against power loss, so it is reported in the log rather
        // than as an error (which would make callers retry a change that was already made).
        if let Err(e) = private_files::sync_dir(self.dir()) {
            log::warn!("cannot sync directory {}: {e}", self.dir().display());
        }
        Ok(file)
    }
}

/// Refuses keys the store cannot hold: empty or longer than [`MAX_KEY_LEN`] bytes.
fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() {
        return Err(StateError::BadKey("keys must not be empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StateError::BadKey(format!(
            "key is {} bytes long; the limit is {MAX_KEY_LEN} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// Refuses a directory that group or others can write (they could replace the state file).
fn check_secure(dir: &Path) -> Result<(), StateError> {
    match fs::metadata(dir) {
        Ok(meta) if private_files::writable_by_others(&meta) => {
            Err(StateError::Insecure { path: dir.to_owned(), mode: meta.mode() })
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir, "inspect", e)),
    }
}

/// Moves a corrupt or unreadable state file aside to `<path>.corrupt-<unix-seconds>` under the
/// lock, so a fresh empty store starts; returns where it went, or `None` if the file was fine or
/// absent.
pub fn repair(path: &Path) -> Result<Option<PathBuf>, StateError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "inspect", e)),
        Ok(_) => {}
    }
    let mut store = Store::open(path);
    let _lock = store.lock()?;
    match store.reload() {
        Ok(()) => return Ok(None),
        Err(StateError::Corrupt { .. }) => {}
        Err(StateError::Io { path: p, op: OP_READ, .. }) if p == path => {}
        // An insecure file is not broken: moving it aside would hide the real problem.
        Err(e) => return Err(e),
    }
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while fs::symlink_metadata(&aside).is_ok() {
        n += 1;
        aside = PathBuf::from(format!("{base}-{n}"));
    }
    fs::rename(path, &aside).map_err(|e| io_err(path, "move aside", e))?;
    if let Err(e) = private_files::sync_dir(store.dir()) {
        log::warn!("cannot sync directory {}: {e}", store.dir().display());
    }
    Ok(Some(aside))
}

#[cfg(test)]
mod tests;
