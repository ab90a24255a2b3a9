//! Document symbols: functions (including `M.name` and `M:name`) and top-level locals.

use super::SourceFile;
use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    Function,
    Method,
    Variable,
    Field,
    Module,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Symbol {
    pub name: String,
    pub kind: SymbolKind,
    /// The whole declaration.
    pub range: Range<usize>,
    /// The name.
    pub selection: Range<usize>,
    pub children: Vec<Symbol>,
}

pub fn symbols(file: &SourceFile) -> Vec<Symbol> {
    let _ = file;
    Vec::new()
}
