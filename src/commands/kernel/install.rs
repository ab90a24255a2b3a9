//! `llmspell kernel install`: writes the kernelspec Jupyter finds llmspell by.

use super::super::{no_more, CommandError};
use pico_args::Arguments;
use std::path::PathBuf;
use std::process::ExitCode;

/// `kernel install [--user | --prefix DIR] [--name NAME]`.
pub(super) fn exec(mut a: Arguments) -> Result<ExitCode, CommandError> {
    let user = a.contains("--user");
    let prefix: Option<PathBuf> =
        a.opt_value_from_os_str("--prefix", |s| Ok::<_, String>(PathBuf::from(s)))?;
    let name: String = a.opt_value_from_str("--name")?.unwrap_or_else(|| "llmspell".into());
    no_more(a)?;
    if user && prefix.is_some() {
        return Err(CommandError::Usage("use either --user or --prefix".into()));
    }
    let dir = install_kernelspec(prefix, &name)?;
    println!("installed kernelspec {name} in {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes `<prefix>/share/jupyter/kernels/<name>/kernel.json` (prefix default: the user's data dir).
const KERNELSPEC_LOGOS: [(&str, &[u8]); 3] = [
    ("logo-32x32.png", include_bytes!("../../../assets/logo-32x32.png")),
    ("logo-64x64.png", include_bytes!("../../../assets/logo-64x64.png")),
    ("logo-svg.svg", include_bytes!("../../../assets/logo-svg.svg")),
];

fn install_kernelspec(prefix: Option<PathBuf>, name: &str) -> Result<PathBuf, CommandError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(CommandError::Usage(format!("invalid kernelspec name {name:?}")));
    }
    let base = match prefix {
        Some(p) => p.join("share/jupyter"),
        None => match std::env::var_os("JUPYTER_DATA_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .ok_or_else(|| CommandError::Failed("HOME is not set".into()))?;
                if cfg!(target_os = "macos") {
                    home.join("Library/Jupyter")
                } else {
                    std::env::var_os("XDG_DATA_HOME")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| home.join(".local/share"))
                        .join("jupyter")
                }
            }
        },
    };
    let dir = base.join("kernels").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let spec = serde_json::json!({
        "argv": [exe, "kernel", "start", "--connection-file", "{connection_file}"],
        "display_name": "Lua 5.4 (llmspell)",
        "language": "lua",
        "interrupt_mode": "message",
        "metadata": { "debugger": true },
    });
    let path = dir.join("kernel.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // The logos JupyterLab's launcher and About dialog look for; built into the binary so an
    // installed llmspell needs no data files.
    for (name, bytes) in KERNELSPEC_LOGOS {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(dir)
}
