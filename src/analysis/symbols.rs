//! Document symbols: named functions (`function f`, `local function f`, `function M.f`,
//! `function M:m`) and top-level locals; functions stored into a top-level local table are its
//! children.

use super::model::{Target, TopItem, Value};
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
    let m = &file.model;
    let mut out: Vec<(Option<usize>, Symbol)> = Vec::new();
    for item in &m.top_level {
        match *item {
            TopItem::Local(id) => {
                let l = &m.locals[id];
                let (kind, range) = match &l.value {
                    Value::Function(f) => (SymbolKind::Function, m.functions[*f].range.clone()),
                    Value::Table(t) => {
                        (SymbolKind::Module, l.decl.start..m.tables[*t].range.end.max(l.decl.end))
                    }
                    _ => (SymbolKind::Variable, l.decl.clone()),
                };
                let sym = Symbol {
                    name: l.name.clone(),
                    kind,
                    range,
                    selection: l.decl.clone(),
                    children: Vec::new(),
                };
                out.push((Some(id), sym));
            }
            TopItem::Function(f) => {
                let func = &m.functions[f];
                let kind = if func.is_method { SymbolKind::Method } else { SymbolKind::Function };
                let name = func.name.clone().unwrap_or_default();
                let sym = Symbol {
                    name,
                    kind,
                    range: func.range.clone(),
                    selection: func.selection.clone(),
                    children: Vec::new(),
                };
                match owner_local(file, f) {
                    Some(owner) if out.iter().any(|(o, _)| *o == Some(owner)) => {
                        let parent = out.iter_mut().rev().find(|(o, _)| *o == Some(owner)).map(|(_, s)| s);
                        parent.into_iter().for_each(|p| p.children.push(sym.clone()));
                    }
                    _ => out.push((None, sym)),
                }
            }
        }
    }
    out.into_iter().map(|(_, s)| s).collect()
}

/// For `function M.f()` with `M` a local: that local.
fn owner_local(file: &SourceFile, fid: usize) -> Option<usize> {
    let s = file.model.stores.iter().find(|s| s.field.value == Value::Function(fid) && s.path.is_empty())?;
    match s.base {
        Target::Local(id) => Some(id),
        Target::Global(_) => None,
    }
}
