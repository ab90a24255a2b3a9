//! The commands of the `llmspell` binary, one module each (cargo's model): a command's module reads
//! its own arguments (after the global options, which `src/main.rs` takes) and does its work, in a
//! `pub fn exec([target: &Target,] args: Vec<OsString>) -> Result<ExitCode, CommandError>` (the
//! target when it needs a kernel).
//! A new command is a new file here, a `pub mod` line below, and a line in `main.rs`'s dispatch
//! (and in `COMMANDS` there, for "did you mean") and in `help.rs`.

pub mod dap;
mod error;
pub mod exec;
pub mod help;
pub mod kernel;
pub mod remote;
pub mod repl;
pub mod run;
pub mod state;

pub use error::CommandError;

use crate::client::remote::RemoteOptions;
use crate::client::{self, Client, Session};
use pico_args::Arguments;
use std::path::PathBuf;
use std::time::Duration;

/// The kernel a command works on, from the global options.
pub struct Target {
    pub kernel: String,
    pub connect: Option<PathBuf>,
    pub idle_timeout: u64,
    /// `--remote URL`: the kernel runs under a Jupyter Server (nothing local is started).
    pub remote: Option<RemoteOptions>,
}

/// A session on the kernel of `t` (started when it is ours and none is alive).
pub fn connect(t: &Target) -> Result<Box<dyn Session>, CommandError> {
    if let Some(r) = &t.remote {
        return Ok(Box::new(client::remote::RemoteClient::connect(r, &t.kernel)?));
    }
    Ok(match &t.connect {
        Some(path) => Box::new(Client::connect_file(path, Duration::from_secs(10))?),
        None => Box::new(client::find_or_spawn(&t.kernel, t.idle_timeout)?),
    })
}

/// Fails on arguments left over after a command took its own.
pub fn no_more(a: Arguments) -> Result<(), CommandError> {
    let rest = a.finish();
    match rest.first() {
        Some(x) => Err(CommandError::Usage(format!("unexpected argument {x:?}"))),
        None => Ok(()),
    }
}
