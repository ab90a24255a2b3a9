//! A client's end without process fds or the proc file system: the client holds an exclusive flock on a file of
//! its own for as long as it lives (the system releases it when the process ends, however it ends),
//! and names the file. The kernel tries a shared lock: refused means alive. To watch, a thread of
//! the kernel waits for the shared lock and then closes a pipe; one such thread per client, shared
//! by all its requests. No pid is polled, and a reused pid means nothing.

use super::common;
use fs2::FileExt;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Every client's lock file name starts so; nothing else is ever removed by a kernel.
const PREFIX: &str = "llmspell-client-";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientMark {
    lock: PathBuf,
}

/// This process's lock: taken once, held until the process ends.
fn own_lock() -> Option<&'static PathBuf> {
    static LOCK: OnceLock<Option<(PathBuf, File)>> = OnceLock::new();
    LOCK.get_or_init(|| {
        let dir = std::env::temp_dir();
        remove_stale(&dir);
        let mut seed = [0u8; 8];
        super::imp::random_bytes(&mut seed).ok()?;
        let name = format!("{}-{:x}", std::process::id(), u64::from_ne_bytes(seed));
        // Locked under a name no other client removes, and only then given its findable name: a
        // client starting at the same moment, clearing stale files, would otherwise take a file
        // created but not yet locked for one whose client has ended, and remove it.
        let unready = dir.join(format!(".{PREFIX}{name}"));
        let path = dir.join(format!("{PREFIX}{name}"));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&unready).ok()?;
        let locked = file.try_lock_exclusive().and_then(|_| std::fs::rename(&unready, &path));
        if locked.is_err() {
            let _ = std::fs::remove_file(&unready);
            return None;
        }
        Some((path, file))
    })
    .as_ref()
    .map(|(p, _)| p)
}

/// Lock files of clients that have ended (a kernel removes those it watched; not the others).
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(PREFIX) {
            let _ = released(&e.path());
        }
    }
}

/// True if nobody holds the lock (the client has ended; its file is then removed).
fn released(path: &Path) -> bool {
    let Ok(file) = File::open(path) else { return true };
    if file.try_lock_shared().is_err() {
        return false;
    }
    if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(PREFIX)) {
        let _ = std::fs::remove_file(path);
    }
    true
}

impl ClientMark {
    pub(crate) fn current() -> serde_json::Value {
        let pid = std::process::id();
        match own_lock() {
            Some(lock) => serde_json::json!({ "pid": pid, "lock": lock }),
            None => serde_json::json!({ "pid": pid }),
        }
    }

    pub(crate) fn of(owner: &serde_json::Value) -> Option<ClientMark> {
        let lock = PathBuf::from(owner["lock"].as_str()?);
        let named = lock.file_name().is_some_and(|n| n.to_string_lossy().starts_with(PREFIX));
        named.then_some(ClientMark { lock })
    }

    pub(crate) fn alive(&self, _pid: i32) -> bool {
        !released(&self.lock)
    }

    pub(crate) fn watch_end(&self, _pid: i32) -> io::Result<Option<OwnedFd>> {
        static WATCHED: OnceLock<Mutex<HashMap<PathBuf, OwnedFd>>> = OnceLock::new();
        let mut watched = WATCHED.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
        // Forget the watches of clients that have ended (their pipe reads as closed).
        watched.retain(|_, fd| common::wait_readable(&[fd.as_raw_fd()], Some(Default::default())).is_none());
        if let Some(fd) = watched.get(&self.lock) {
            return fd.try_clone().map(Some);
        }
        let Ok(file) = File::open(&self.lock) else { return Ok(None) };
        if file.try_lock_shared().is_ok() {
            released(&self.lock);
            return Ok(None);
        }
        let (read, write) = common::pipe()?;
        let path = self.lock.clone();
        std::thread::Builder::new().name("client-watch".into()).spawn(move || {
            let _ = file.lock_shared(); // returns when the client's process has ended
            drop(write);
            released(&path);
        })?;
        let mine = read.try_clone()?;
        watched.insert(self.lock.clone(), read);
        Ok(Some(mine))
    }

    #[cfg(test)]
    pub(crate) fn other(&self) -> ClientMark {
        ClientMark { lock: self.lock.with_file_name(format!("{PREFIX}none")) }
    }
}
