//! The kernel's completion and inspect through the analysis `llmspell lsp` uses (one engine): what a
//! cell's own code says (its locals, `---` doc comments), members of the modules it `require`s
//! (found as the session's `require` would: its `package.path`, from the kernel's folder) and the
//! state keys inside `state.get("`. The live session answers first (prelude.lua's `complete` and
//! `inspect_name`); this adds what only the code knows. Runs on the Lua thread between cells.

use crate::analysis::{self, LiveSnapshot, Module, SourceFile, World};
use std::sync::Arc;

/// A module larger than this is not read for a completion or a tooltip.
const MAX_MODULE_BYTES: u64 = 2 << 20;

/// What a cell's analysis sees beyond the cell.
pub(super) struct CellWorld {
    /// The session's `package.path` templates.
    search: Vec<String>,
    /// Only the state keys: live values are the session's own answers.
    live: LiveSnapshot,
}

impl CellWorld {
    pub(super) fn new(package_path: &str, state_keys: Vec<String>) -> CellWorld {
        let search = package_path.split(';').filter(|t| !t.is_empty()).map(str::to_string).collect();
        CellWorld { search, live: LiveSnapshot { state_keys, ..LiveSnapshot::default() } }
    }
}

impl World for CellWorld {
    fn module(&self, name: &str) -> Option<Arc<Module>> {
        let path = analysis::module_files(&self.search, name).into_iter().find(|p| p.is_file())?;
        if std::fs::metadata(&path).ok()?.len() > MAX_MODULE_BYTES {
            return None;
        }
        let text = std::fs::read(&path).ok()?;
        Some(Arc::new(Module { path, file: SourceFile::parse(&String::from_utf8_lossy(&text)) }))
    }
    fn is_workspace_global(&self, _name: &str) -> bool {
        false
    }
    fn live(&self) -> Option<&LiveSnapshot> {
        Some(&self.live)
    }
}

/// Inside `state.get("…` (and set, delete, update): the state keys starting with what is typed, and
/// the byte where the typed key starts.
pub(super) fn state_keys(code: &str, cursor: usize, world: &CellWorld) -> Option<(Vec<String>, usize)> {
    let partial = analysis::state_key_partial(code, cursor)?;
    let typed = &code[partial.clone()];
    let mut keys: Vec<String> =
        world.live.state_keys.iter().filter(|k| k.starts_with(typed)).cloned().collect();
    keys.sort();
    Some((keys, partial.start))
}

/// What the analysis completes at `cursor`, each as the text replacing `code[start..cursor]` (the
/// token the session completes, `base.partial`): only names that start with what is typed, as the
/// session's own matches.
pub(super) fn matches(code: &str, cursor: usize, start: usize, world: &CellWorld) -> Vec<String> {
    let file = SourceFile::parse(code);
    analysis::complete(&file, cursor, world)
        .into_iter()
        .filter(|c| c.replace.start >= start && c.replace.end == cursor)
        .filter(|c| c.label.starts_with(&code[c.replace.clone()]))
        .map(|c| format!("{}{}", &code[start..c.replace.start], c.label))
        .collect()
}

/// The analysis' tooltip for the name at `cursor` (a user function's signature and doc comment, a
/// required module's member, a local's kind), as plain text.
pub(super) fn inspect(code: &str, cursor: usize, world: &CellWorld) -> Option<String> {
    let file = SourceFile::parse(code);
    let hover = analysis::hover(&file, cursor, world)?;
    let text: Vec<&str> = hover.markdown.lines().filter(|l| !l.starts_with("```")).collect();
    Some(text.join("\n").trim().to_string()).filter(|t| !t.is_empty())
}
