//! `--kernel NAME` on a server: the remote kernel id remembered in
//! `$LLMSPELL_HOME/remotes/<host>-<hash of the URL>/NAME`, started when missing or gone. A lock file
//! beside it makes concurrent first calls end on one kernel, as the local spawn lock does.

use super::http::Server;
use crate::client::ClientError;
use crate::connection;
use crate::private_files;
use fs2::FileExt;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The directory of one server's names: readable (`127.0.0.1_8888-1a2b3c4d`) and unique per URL.
pub fn server_dir(base: &str) -> PathBuf {
    let host = base.split("://").nth(1).unwrap_or(base).split('/').next().unwrap_or("");
    let host: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
    let hash = Sha256::digest(base.as_bytes());
    let hex: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    connection::home().join("remotes").join(format!("{host}-{hex}"))
}

fn lifecycle(m: String) -> ClientError {
    ClientError::Lifecycle(m)
}

/// The remembered kernel id of `name`, if any.
pub fn remembered(server: &Server, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(server_dir(&server.base).join(name)).ok()?;
    let id = text.trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// Forgets `name` (its kernel was stopped or is gone).
pub fn forget(server: &Server, name: &str) {
    let _ = std::fs::remove_file(server_dir(&server.base).join(name));
}

/// Every remembered name on this server.
pub fn all(server: &Server) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(server_dir(&server.base)) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && !n.ends_with(".lock"))
        .collect();
    names.sort();
    names
}

/// The id of `name`'s live kernel, starting one (and remembering it) if there is none. True in the
/// second place if it was started now.
pub fn find_or_start(server: &Server, name: &str) -> Result<(String, bool), ClientError> {
    connection::valid_id(name).map_err(lifecycle)?;
    // The common case needs no lock: the remembered kernel is there (an unreachable server fails
    // here, before any directory is made for it).
    if let Some(id) = remembered(server, name) {
        if server.kernel(&id)?.is_some() {
            return Ok((id, false));
        }
    }
    let dir = server_dir(&server.base);
    if !dir.exists() {
        server.kernelspecs()?; // no directory for a server that is not there or refuses us
    }
    private_files::make_private_dir(&dir).map_err(lifecycle)?;
    let lock_path = dir.join(format!(".{name}.lock"));
    let lock = private_files::open_lock_file(&lock_path)
        .map_err(|e| lifecycle(format!("cannot open {}: {e}", lock_path.display())))?;
    lock.lock_exclusive().map_err(|e| lifecycle(format!("cannot lock {}: {e}", lock_path.display())))?;
    if let Some(id) = remembered(server, name) {
        if server.kernel(&id)?.is_some() {
            return Ok((id, false));
        }
    }
    let id = server.start_kernel()?;
    let path = dir.join(name);
    private_files::write_private_atomic(&path, format!("{id}\n").as_bytes())
        .map_err(|e| lifecycle(format!("cannot write {}: {e}", path.display())))?;
    Ok((id, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_directory_per_url_named_after_its_host() {
        let a = server_dir("http://127.0.0.1:8888");
        let b = server_dir("http://127.0.0.1:8888/prefix");
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("127.0.0.1_8888-"), "{name}");
    }
}
