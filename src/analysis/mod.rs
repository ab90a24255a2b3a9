//! Static analysis of Lua 5.4 source for the language server and the kernel's completion: a
//! tolerant parser that resolves scopes, and one module per feature. Knows nothing of LSP, Jupyter,
//! sockets or mlua. All positions are byte offsets into the UTF-8 text.

mod complete;
mod diagnostics;
mod expr;
mod hover;
mod inline_options;
mod lexer;
pub mod model;
mod navigate;
mod parser;
mod resolve;
mod signature;
pub mod stdlib;
mod symbols;
mod world;

#[cfg(test)]
mod tests;

pub use complete::{complete, state_key_partial, Completion, CompletionKind};
pub use diagnostics::{diagnostics, Diagnostic, Severity};
pub use hover::{hover, Hover};
pub use navigate::{definition, references, rename, Location};
pub use signature::{signature_help, SignatureHelp};
pub use symbols::{symbols, Symbol, SymbolKind};
pub use world::{module_files, LiveSnapshot, LiveValue, Module, NoWorld, World};

use model::{Access, Model, Target};
use std::ops::Range;

/// A parsed and resolved Lua file.
pub struct SourceFile {
    text: String,
    pub(crate) model: Model,
}

impl SourceFile {
    /// Never panics; any input gives a result in bounded stack and memory. A file with a syntax
    /// error still yields scopes for completion.
    pub fn parse(text: &str) -> SourceFile {
        let (mut model, self_refs) = parser::parse(text);
        count_accesses(&mut model, &self_refs);
        SourceFile { text: text.to_string(), model }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Byte range of the first syntax error the parser met, if any.
    pub fn first_syntax_error(&self) -> Option<Range<usize>> {
        self.model.first_error.clone()
    }

    /// Global names this file assigns (for the workspace's "defined elsewhere" set).
    pub fn defined_globals(&self) -> Vec<String> {
        let mut names: Vec<String> = self.model.global_values.iter().map(|(n, _, _)| n.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Fills each local's read and write counts from the uses; reads of a local function from inside
/// its own body (`self_refs`) do not count, as in luacheck's "unused recursive function".
fn count_accesses(model: &mut Model, self_refs: &[usize]) {
    let mut skip = self_refs.iter().peekable();
    for (i, u) in model.uses.iter().enumerate() {
        if skip.peek() == Some(&&i) {
            skip.next();
            continue;
        }
        if let Target::Local(id) = u.target {
            match u.access {
                Access::Read => model.locals[id].reads += 1,
                Access::Write => model.locals[id].writes += 1,
                Access::Mutate => model.locals[id].mutations += 1,
                Access::Decl => {}
            }
        }
    }
}
