//! PLACEHOLDER of branch `analysis` (ANALYSIS_API.md), only so the language server compiles before
//! that branch is merged; the merge replaces this file with the real analysis.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

pub struct SourceFile {
    text: String,
}
impl SourceFile {
    pub fn parse(text: &str) -> SourceFile {
        SourceFile { text: text.to_string() }
    }
    pub fn text(&self) -> &str {
        &self.text
    }
    pub fn first_syntax_error(&self) -> Option<Range<usize>> {
        None
    }
    pub fn defined_globals(&self) -> Vec<String> {
        Vec::new()
    }
}
pub trait World {
    fn module(&self, name: &str) -> Option<Arc<Module>>;
    fn is_workspace_global(&self, name: &str) -> bool;
    fn live(&self) -> Option<&LiveSnapshot>;
}
pub struct Module {
    pub path: PathBuf,
    pub file: SourceFile,
}
#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub struct LiveSnapshot {
    pub generation: u64,
    pub globals: BTreeMap<String, LiveValue>,
    pub state_keys: Vec<String>,
    pub truncated: bool,
}
#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub struct LiveValue {
    pub type_name: String,
    pub summary: String,
    #[serde(default)]
    pub fields: BTreeMap<String, LiveValue>,
    #[serde(default)]
    pub params: Option<Vec<String>>,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Hint,
}
pub struct Diagnostic {
    pub range: Range<usize>,
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
}
pub fn diagnostics(_file: &SourceFile, _world: &dyn World) -> Vec<Diagnostic> {
    Vec::new()
}
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
pub struct Completion {
    pub label: String,
    pub kind: CompletionKind,
    pub detail: Option<String>,
    pub documentation: Option<String>,
    pub replace: Range<usize>,
}
pub fn complete(_file: &SourceFile, _offset: usize, _world: &dyn World) -> Vec<Completion> {
    Vec::new()
}
pub struct Hover {
    pub range: Range<usize>,
    pub markdown: String,
}
pub fn hover(_file: &SourceFile, _offset: usize, _world: &dyn World) -> Option<Hover> {
    None
}
pub struct SignatureHelp {
    pub label: String,
    pub params: Vec<Range<usize>>,
    pub active_param: usize,
    pub documentation: Option<String>,
}
pub fn signature_help(_file: &SourceFile, _offset: usize, _world: &dyn World) -> Option<SignatureHelp> {
    None
}
pub struct Location {
    pub path: Option<PathBuf>,
    pub range: Range<usize>,
}
pub fn definition(_file: &SourceFile, _offset: usize, _world: &dyn World) -> Vec<Location> {
    Vec::new()
}
pub fn references(_file: &SourceFile, _offset: usize) -> Vec<Range<usize>> {
    Vec::new()
}
pub fn rename(_file: &SourceFile, _offset: usize) -> Option<Vec<Range<usize>>> {
    None
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    Function,
    Method,
    Variable,
    Field,
    Module,
}
pub struct Symbol {
    pub name: String,
    pub kind: SymbolKind,
    pub range: Range<usize>,
    pub selection: Range<usize>,
    pub children: Vec<Symbol>,
}
pub fn symbols(_file: &SourceFile) -> Vec<Symbol> {
    Vec::new()
}
