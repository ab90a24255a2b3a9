//! Undefined globals (luacheck's W113) and unused locals (W211), following luacheck's rules with
//! `--allow-defined`: a global assigned anywhere in the file is defined everywhere in it.

use super::model::{Access, LocalKind, Target, Value};
use super::stdlib;
use super::{SourceFile, World};
use std::collections::HashSet;
use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Hint,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub range: Range<usize>,
    pub severity: Severity,
    /// luacheck's code: "W113", "W211".
    pub code: &'static str,
    pub message: String,
}

pub fn diagnostics(file: &SourceFile, world: &dyn World) -> Vec<Diagnostic> {
    let mut out = undefined_globals(file, world);
    out.extend(unused_locals(file));
    out.sort_by_key(|d| d.range.start);
    out
}

fn undefined_globals(file: &SourceFile, world: &dyn World) -> Vec<Diagnostic> {
    let m = &file.model;
    let defined: HashSet<&str> = m.global_values.iter().map(|(n, _, _)| n.as_str()).collect();
    let live = world.live();
    let mut out = Vec::new();
    for u in &m.uses {
        let Target::Global(name) = &u.target else { continue };
        if u.access != Access::Read
            || defined.contains(name.as_str())
            || stdlib::is_known_global(name)
            || live.is_some_and(|l| l.globals.contains_key(name))
            || world.is_workspace_global(name)
        {
            continue;
        }
        out.push(Diagnostic {
            range: u.range.clone(),
            severity: Severity::Warning,
            code: "W113",
            message: format!("accessing undefined variable '{name}'"),
        });
    }
    out
}

fn unused_locals(file: &SourceFile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (id, l) in file.model.locals.iter().enumerate() {
        if !matches!(l.kind, LocalKind::Local | LocalKind::LocalFunction) || l.name == "_" {
            continue;
        }
        if l.reads > 0 || l.writes > 0 {
            continue;
        }
        let what = match (&l.value, l.kind) {
            (Value::Function(_), LocalKind::LocalFunction) if is_recursive(file, id) => "recursive function",
            (Value::Function(_), _) => "function",
            _ => "variable",
        };
        out.push(Diagnostic {
            range: l.decl.clone(),
            severity: Severity::Warning,
            code: "W211",
            message: format!("unused {what} '{}'", l.name),
        });
    }
    out
}

/// A local function whose only uses are inside its own body.
fn is_recursive(file: &SourceFile, id: usize) -> bool {
    file.model.uses.iter().any(|u| u.target == Target::Local(id) && u.access != Access::Decl)
}
