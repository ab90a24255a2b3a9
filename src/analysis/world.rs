//! What the analysis knows from outside the file: other modules, workspace globals, the live session.

use super::SourceFile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything outside the file.
pub trait World {
    /// `require(name)` resolved as package.path would (the adapter decides the search path).
    fn module(&self, name: &str) -> Option<Arc<Module>>;
    /// A global assigned by another workspace file.
    fn is_workspace_global(&self, name: &str) -> bool;
    /// The live session's last snapshot, if a session is known.
    fn live(&self) -> Option<&LiveSnapshot>;
}

/// The files `require(name)` tries, in order, for `package.path` templates (`?` is the name, its
/// dots as slashes); none for a name that could leave them (empty, `..`, `/`). The adapters decide
/// the templates and read the file.
pub fn module_files<'a>(templates: impl IntoIterator<Item = &'a String>, name: &str) -> Vec<PathBuf> {
    if name.is_empty() || name.contains("..") || name.contains('/') {
        return Vec::new();
    }
    let rel = name.replace('.', "/");
    templates.into_iter().map(|t| PathBuf::from(t.replace('?', &rel))).collect()
}

/// A file found by `require`.
pub struct Module {
    pub path: PathBuf,
    pub file: SourceFile,
}

/// A world with nothing in it: a file alone.
pub struct NoWorld;

impl World for NoWorld {
    fn module(&self, _name: &str) -> Option<Arc<Module>> {
        None
    }
    fn is_workspace_global(&self, _name: &str) -> bool {
        false
    }
    fn live(&self) -> Option<&LiveSnapshot> {
        None
    }
}

/// Produced by the kernel after each execution (serde JSON), read by the LSP and kernel completion.
#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub struct LiveSnapshot {
    pub generation: u64,
    pub globals: BTreeMap<String, LiveValue>,
    pub state_keys: Vec<String>,
    pub truncated: bool,
}

#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub struct LiveValue {
    /// Lua's `type()` of the value.
    pub type_name: String,
    /// A short rendering of the value.
    pub summary: String,
    #[serde(default)]
    pub fields: BTreeMap<String, LiveValue>,
    /// Lua functions: parameter names, vararg as "...".
    #[serde(default)]
    pub params: Option<Vec<String>>,
}
