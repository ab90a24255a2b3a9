//! llmspell: a Lua 5.4 kernel speaking the Jupyter messaging protocol, and the client that drives it.
pub mod state;
