//! `llmspell lsp`: the language server on stdio (`src/lsp/`). Its live part follows the kernel the
//! global options name (`--kernel`, `--connect`, `--remote`) and never starts one.

use super::help::LSP_HELP;
use super::{no_more, CommandError, Target};
use crate::lsp::live;
use pico_args::Arguments;
use std::ffi::OsString;
use std::process::ExitCode;

pub fn exec(t: &Target, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let mut a = Arguments::from_vec(args);
    if a.contains(["-h", "--help"]) {
        print!("{LSP_HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let _ = a.contains("--stdio"); // what VS Code's clients pass; stdio is the only transport
    no_more(a)?;
    let follow = match (&t.remote, &t.connect) {
        (Some(r), _) => live::Target::Remote(r.clone(), t.kernel.clone()),
        (None, Some(path)) => live::Target::ConnectionFile(path.clone()),
        (None, None) => live::Target::Local(t.kernel.clone()),
    };
    init_logging();
    Ok(ExitCode::from(crate::lsp::serve(follow)))
}

/// The log goes to stderr (editors show or keep it): warnings unless LLMSPELL_LOG says otherwise.
fn init_logging() {
    let mut b = env_logger::Builder::new();
    b.parse_filters(&std::env::var("LLMSPELL_LOG").unwrap_or_else(|_| "warn".into()));
    b.target(env_logger::Target::Stderr);
    let _ = b.try_init();
}
