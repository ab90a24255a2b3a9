//! Completion at a byte offset.

use super::{SourceFile, World};
use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionKind {
    Variable,
    Function,
    Field,
    Method,
    Keyword,
    Module,
    Constant,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub label: String,
    pub kind: CompletionKind,
    pub detail: Option<String>,
    pub documentation: Option<String>,
    /// The partial word being completed.
    pub replace: Range<usize>,
}

pub fn complete(file: &SourceFile, offset: usize, world: &dyn World) -> Vec<Completion> {
    let _ = (file, offset, world);
    Vec::new()
}
