//! `llmspell run`: a script in a process of its own, as `lua SCRIPT` (`runner/`), or on a remote
//! kernel (`commands/remote.rs`).

use super::help::RUN_HELP;
use super::{CommandError, Target};
use crate::{client, runner};
use std::ffi::OsString;
use std::process::ExitCode;

pub fn exec(t: &Target, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    if args.first().is_some_and(|a| a == "-h" || a == "--help") {
        print!("{RUN_HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(r) = &t.remote {
        return super::remote::run(r, &t.kernel, args);
    }
    // The run reads lua's options (-e, -l, -i, -v, -E, -W) from the words after `run` (or from the
    // first word, when llmspell was given lua's command line directly); its `arg` is lua's: this
    // binary, those words, the script at index 0 (runner::client::lua_arg).
    let argv: Vec<OsString> = std::env::args_os().collect();
    let first_arg = argv.len() - args.len();
    // The ZeroMQ client find_or_spawn returns is not needed: the run goes to the kernel's runner.
    let start = || client::find_or_spawn(&t.kernel, t.idle_timeout).map(drop).map_err(|e| e.to_string());
    let target = match &t.connect {
        Some(path) => runner::client::Target::ConnectionFile(path),
        None => runner::client::Target::Kernel { id: &t.kernel, start: &start },
    };
    let outcome = runner::client::run(&target, argv, first_arg)?;
    runner::client::exit_like(outcome)
}
