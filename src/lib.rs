//! llmspell: a Lua 5.4 kernel speaking the Jupyter messaging protocol, and the client that drives it.
//! The layering (which module may use which) is in ARCHITECTURE.md.
pub mod analysis;
pub mod client;
pub mod commands;
pub mod connection;
pub mod dap;
pub mod kernel;
pub mod lsp;
pub mod lua;
pub mod private_files;
pub mod request_owner;
pub mod runner;
pub mod state;
pub mod sys;
pub mod wire;
