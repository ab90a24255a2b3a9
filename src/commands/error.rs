//! What a command of the `llmspell` binary returns when it fails, and the exit code for it: one
//! type for every subcommand (`run`, `exec`, `repl`, `kernel`, `state`).

use crate::client::ClientError;
use crate::state::StateError;
use std::fmt;

/// A command's failure. `Display` is the one line shown after `llmspell: `.
#[derive(Debug)]
pub enum CommandError {
    /// A bad command line: exit 2, with a pointer to `--help`.
    Usage(String),
    /// Anything else the user can act on: exit 1.
    Failed(String),
    /// The kernel client failed: exit 130 when the user interrupted, 1 otherwise.
    Client(ClientError),
}

/// Said after a client failure that ends the session we were on.
pub const FRESH_KERNEL: &str = "the next command starts a fresh kernel";

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_) => 2,
            CommandError::Client(ClientError::Interrupted) => 130,
            CommandError::Failed(_) | CommandError::Client(_) => 1,
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            CommandError::Usage(m) => write!(f, "{m} (see llmspell --help)"),
            CommandError::Failed(m) => write!(f, "{m}"),
            CommandError::Client(e @ ClientError::KernelDied { .. }) => write!(f, "{e}; {FRESH_KERNEL}"),
            CommandError::Client(e) => write!(f, "{e}"),
        }
    }
}

impl From<pico_args::Error> for CommandError {
    fn from(e: pico_args::Error) -> Self {
        CommandError::Usage(e.to_string())
    }
}

impl From<String> for CommandError {
    fn from(e: String) -> Self {
        CommandError::Failed(e)
    }
}

impl From<StateError> for CommandError {
    fn from(e: StateError) -> Self {
        CommandError::Failed(e.to_string())
    }
}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> Self {
        CommandError::Client(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn exit_codes_and_messages() {
        let cases = [
            (CommandError::Usage("exec needs CODE".into()), 2, "exec needs CODE (see llmspell --help)"),
            (CommandError::Failed("cannot read x".into()), 1, "cannot read x"),
            (ClientError::Interrupted.into(), 130, "interrupted (the kernel did not stop the code)"),
            (
                ClientError::KernelDied { running: true }.into(),
                1,
                "the kernel died while running the code; the next command starts a fresh kernel",
            ),
            (
                ClientError::NotRunning { connection_file: PathBuf::from("/k/a.json") }.into(),
                1,
                "the kernel of /k/a.json is not running",
            ),
        ];
        for (e, code, text) in cases {
            assert_eq!((e.exit_code(), e.to_string()), (code, text.to_string()));
        }
    }
}
