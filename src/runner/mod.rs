//! `llmspell run`: every script in a process of its own, forked per run from a pre-warmed,
//! single-threaded zygote that the kernel starts beside itself.
//!
//! - [`handle`]: the kernel's side: starts the zygote, shares a runs counter for the idle timeout.
//! - [`zygote`]: the zygote process (`llmspell kernel runner`, hidden): accepts requests on
//!   `kernels/<id>.run`, forks one runner per request, relays signals, reaps, reports the status.
//! - [`child`]: what the forked runner does: take over the caller's fds, cwd, environment and umask,
//!   then run the script the way the stock `lua` program does (plus the `state` global).
//! - [`client`]: the `llmspell run` side: find or start the kernel, send the request with fds 0-2,
//!   forward signals, end with the script's own status.
//! - [`proto`]: the few messages on the socket.

pub(crate) mod child;
pub mod client;
mod handle;
mod lua_call;
mod lua_repl;
pub(crate) mod proto;
pub mod zygote;

use std::path::{Path, PathBuf};

/// The runner socket of kernel `id` in the kernels directory `dir`.
pub fn socket_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.run"))
}

/// The runner socket of a kernel launched by Jupyter (no id of ours): named after its key.
pub fn key_socket_path(dir: &Path, key: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(key.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("key-{hex}.run"))
}

pub use handle::{activity, Zygote};
pub use zygote::zygote_main;
