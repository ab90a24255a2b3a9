//! Registering `llmspell lsp` with jupyter-lsp (JupyterLab's language-server bridge): a
//! `jupyter_server_config.d/llmspell-lsp.json` holding
//! `LanguageServerManager.language_servers.llmspell-lsp`, matched to notebook cells through the
//! kernel's `language_info` (name `lua`, mimetype `text/x-lua`).

use serde_json::json;
use std::path::{Path, PathBuf};

/// The jupyter-lsp spec that starts this binary's language server.
pub fn spec(exe: &Path) -> serde_json::Value {
    json!({
        "LanguageServerManager": {
            "language_servers": {
                "llmspell-lsp": {
                    "version": 2,
                    "argv": [exe, "lsp"],
                    "languages": ["lua"],
                    "mime_types": ["text/x-lua"],
                    "display_name": "llmspell (Lua 5.4)",
                }
            }
        }
    })
}

/// Where the spec goes: `<prefix>/etc/jupyter` with a prefix, else the user's Jupyter config
/// directory (`$JUPYTER_CONFIG_DIR`, default `~/.jupyter`).
pub fn config_dir(prefix: Option<&Path>) -> Option<PathBuf> {
    let base = match prefix {
        Some(p) => p.join("etc/jupyter"),
        None => match std::env::var_os("JUPYTER_CONFIG_DIR") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".jupyter"),
        },
    };
    Some(base.join("jupyter_server_config.d"))
}

/// Writes the spec; the file written.
pub fn install(prefix: Option<&Path>, exe: &Path) -> Result<PathBuf, String> {
    let dir = config_dir(prefix).ok_or("HOME is not set")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("llmspell-lsp.json");
    let text = serde_json::to_vec_pretty(&spec(exe)).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
