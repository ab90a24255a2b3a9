//! llmspell: a Lua 5.4 kernel speaking the Jupyter messaging protocol, and the client that drives it.
pub mod cli;
pub mod client;
pub mod connection;
pub mod dap;
pub mod help;
pub mod kernel;
pub mod lua;
pub mod private_files;
pub mod remote_cli;
pub mod repl;
pub mod runner;
pub mod state;
pub mod state_cli;
pub mod sys;
pub mod wire;
