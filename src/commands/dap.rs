//! `llmspell dap`: a Debug Adapter Protocol server on stdio (`src/dap/`), or, with `--terminal`, the
//! helper that lends the editor's terminal to the script it debugs.

use super::help::DAP_HELP;
use super::{no_more, CommandError};
use pico_args::Arguments;
use std::ffi::OsString;
use std::process::ExitCode;

pub fn exec(args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let mut a = Arguments::from_vec(args);
    if a.contains(["-h", "--help"]) {
        print!("{DAP_HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(socket) = a.opt_value_from_str::<_, String>("--terminal")? {
        no_more(a)?;
        let code = crate::dap::lend_terminal(&socket).map_err(CommandError::Failed)?;
        return Ok(ExitCode::from(code));
    }
    no_more(a)?;
    let code = crate::dap::serve().map_err(CommandError::Failed)?;
    Ok(ExitCode::from(code))
}
