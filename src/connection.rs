//! Connection files, the kernels directory, and the files a kernel keeps beside its connection file.
//!
//! `$LLMSPELL_HOME/kernels/<id>.json` is a plain Jupyter connection file; `<id>.lock` is held with an
//! exclusive lock by the live kernel for its whole life, so "can I take the lock?" answers "is it dead?"
//! without guessing from pids; `<id>.log` is its log.

use crate::private_files::{self, check_private, write_private_atomic};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

// src/kernel/ takes these from here.
pub use crate::private_files::{make_private_dir, open_lock_file};

/// The Jupyter connection file (kernels.rst), plus the fields we add for our own clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub ip: String,
    pub transport: String,
    pub shell_port: u16,
    pub iopub_port: u16,
    pub stdin_port: u16,
    pub control_port: u16,
    pub hb_port: u16,
    pub key: String,
    pub signature_scheme: String,
    #[serde(default)]
    pub kernel_name: String,
    /// Our own kernels record their pid so `kernel list` can show it; absent in foreign files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl ConnectionInfo {
    pub fn endpoint(&self, port: u16) -> String {
        match self.transport.as_str() {
            "ipc" => format!("ipc://{}-{}", self.ip, port),
            _ => format!("tcp://{}:{}", self.ip, port),
        }
    }

    /// Reads a connection file, refusing one that other users could have rewritten.
    pub fn read(path: &Path) -> Result<ConnectionInfo, String> {
        let meta =
            fs::metadata(path).map_err(|e| format!("cannot read connection file {}: {e}", path.display()))?;
        check_private(path, &meta)?;
        let text =
            fs::read(path).map_err(|e| format!("cannot read connection file {}: {e}", path.display()))?;
        let info: ConnectionInfo = serde_json::from_slice(&text)
            .map_err(|e| format!("connection file {} is not valid: {e}", path.display()))?;
        if info.signature_scheme != "hmac-sha256" && !info.key.is_empty() {
            return Err(format!(
                "connection file {}: signature_scheme {:?} is not supported (use hmac-sha256)",
                path.display(),
                info.signature_scheme
            ));
        }
        Ok(info)
    }

    /// Writes the file atomically (temporary file, fsync, rename), mode 0600.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("connection info serialises");
        write_private_atomic(path, &text)
    }
}

/// `$LLMSPELL_HOME`, default `~/.llmspell`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("LLMSPELL_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join(".llmspell")
}

/// `$LLMSPELL_HOME/kernels` as it is, for commands that only look (a missing one has no kernels):
/// they must not create the home directory.
pub fn kernels_dir_to_look_in() -> PathBuf {
    home().join("kernels")
}

/// `$LLMSPELL_HOME/kernels`, created 0700 if missing.
pub fn kernels_dir() -> Result<PathBuf, String> {
    let dir = home().join("kernels");
    make_private_dir(&dir)?;
    Ok(dir)
}

/// The paths of kernel `id`.
pub struct KernelFiles {
    pub id: String,
    pub connection: PathBuf,
    pub lock: PathBuf,
    pub spawn_lock: PathBuf,
    pub log: PathBuf,
    /// Left by a kernel that stopped after its idle timeout: the next command says so once.
    pub idle_marker: PathBuf,
    /// The runner's socket (src/runner).
    pub runner_socket: PathBuf,
}

/// How long the log of a kernel that has ended is kept (for a look at why it ended).
const DEAD_LOG_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// A log larger than this is moved to `<id>.log.1` when its kernel starts (one old log is kept).
pub const LOG_ROTATE_BYTES: u64 = 1 << 20;

impl KernelFiles {
    pub fn new(dir: &Path, id: &str) -> KernelFiles {
        KernelFiles {
            id: id.to_string(),
            connection: dir.join(format!("{id}.json")),
            lock: dir.join(format!("{id}.lock")),
            spawn_lock: dir.join(format!("{id}.spawn")),
            log: dir.join(format!("{id}.log")),
            idle_marker: dir.join(format!("{id}.idle")),
            runner_socket: dir.join(format!("{id}.run")),
        }
    }

    /// Every kernel id that has any file in `dir`.
    pub fn all(dir: &Path) -> Vec<KernelFiles> {
        let mut ids: Vec<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = [".json", ".lock", ".log", ".log.1", ".spawn", ".run", ".idle"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))?;
                Some(id.to_string())
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids.iter().map(|id| KernelFiles::new(dir, id)).collect()
    }

    /// Whether a live kernel holds the lock. Taking it ourselves means nobody does.
    pub fn is_alive(&self) -> bool {
        private_files::lock_is_held(&self.lock)
    }

    /// Removes the files of a kernel known to be dead (the lock file last, so a half-cleaned
    /// kernel still looks dead, never alive).
    pub fn remove_stale(&self) {
        let _ = fs::remove_file(&self.connection);
        let _ = fs::remove_file(&self.runner_socket);
        let _ = fs::remove_file(&self.lock);
    }

    /// Cleans the kernels directory of what dead kernels left: their connection, lock and socket
    /// files at once, a spawn lock nobody holds, and logs and markers a day after their last write.
    pub fn sweep(dir: &Path) {
        let old = |p: &Path| {
            fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
                > Some(DEAD_LOG_KEPT)
        };
        for files in KernelFiles::all(dir) {
            if files.is_alive() {
                continue;
            }
            files.remove_stale();
            if !private_files::lock_is_held(&files.spawn_lock) {
                let _ = fs::remove_file(&files.spawn_lock);
            }
            let rotated = files.log.with_extension("log.1");
            for p in [&files.log, &rotated, &files.idle_marker] {
                if old(p) {
                    let _ = fs::remove_file(p);
                }
            }
        }
    }
}

/// Kernel ids become file names: keep them to a safe alphabet.
pub fn valid_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid kernel id {id:?}: use 1-64 letters, digits, '-', '_' or '.'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs2::FileExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("llmspell-conn-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        make_private_dir(&d).unwrap();
        d
    }

    #[test]
    fn connection_file_round_trips_and_is_private() {
        let d = tempdir("rt");
        let p = d.join("k.json");
        let info = ConnectionInfo {
            ip: "127.0.0.1".into(),
            transport: "tcp".into(),
            shell_port: 1,
            iopub_port: 2,
            stdin_port: 3,
            control_port: 4,
            hb_port: 5,
            key: "abc".into(),
            signature_scheme: "hmac-sha256".into(),
            kernel_name: "llmspell".into(),
            pid: Some(7),
        };
        info.write(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        let back = ConnectionInfo::read(&p).unwrap();
        assert_eq!(back.key, "abc");
        assert_eq!(back.endpoint(back.shell_port), "tcp://127.0.0.1:1");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        let err = ConnectionInfo::read(&p).unwrap_err();
        assert!(err.contains("writable by other users"), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn lock_held_by_another_open_file_means_alive() {
        let d = tempdir("lock");
        let files = KernelFiles::new(&d, "k");
        assert!(!files.is_alive());
        let held = open_lock_file(&files.lock).unwrap();
        held.try_lock_exclusive().unwrap();
        assert!(files.is_alive());
        drop(held);
        assert!(!files.is_alive());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ids_are_restricted_to_file_name_safe_characters() {
        assert!(valid_id("default").is_ok());
        assert!(valid_id("a-b_c.1").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(valid_id(bad).is_err(), "{bad}");
        }
    }
}
