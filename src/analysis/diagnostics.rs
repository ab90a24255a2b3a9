//! Undefined globals (luacheck's W113) and unused locals (W211), following luacheck's rules with
//! `--allow-defined`: a global assigned anywhere in the file is defined everywhere in it.

use super::inline_options::{InlineOptions, LineIndex};
use super::model::{Access, Local, LocalKind, Target, Value};
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

/// W113 and W211 warnings. A file with a syntax error gets none (as with luacheck): its scopes are
/// a guess past the error. luacheck's inline options (`-- luacheck: ignore`) are honoured.
pub fn diagnostics(file: &SourceFile, world: &dyn World) -> Vec<Diagnostic> {
    if file.model.first_error.is_some() {
        return Vec::new();
    }
    let mut out = undefined_globals(file, world);
    out.extend(unused_locals(file));
    if file.model.comments.iter().any(|c| file.text()[c.clone()].contains("luacheck:")) {
        let funcs: Vec<_> = file.model.functions.iter().map(|f| f.range.clone()).collect();
        let opts = InlineOptions::read(file.text(), &file.model.comments, &funcs);
        let lines = LineIndex::new(file.text());
        out.retain(|d| {
            let name = d.message.split('\'').nth(1).unwrap_or("");
            !opts.ignores(lines.line(d.range.start), d.code, name)
        });
    }
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
        if let Some((range, what)) = unused_local(file, id, l) {
            out.push(Diagnostic {
                range,
                severity: Severity::Warning,
                code: "W211",
                message: format!("unused {what} '{}'", l.name),
            });
        }
    }
    out
}

/// luacheck's W211 for one local: never read, never mutated, and either never assigned after its
/// declaration, or declared empty and then assigned one function (reported at that assignment).
/// `_` is exempt unless it is declared with no value.
fn unused_local(file: &SourceFile, id: usize, l: &Local) -> Option<(Range<usize>, &'static str)> {
    if !matches!(l.kind, LocalKind::Local | LocalKind::LocalFunction) || (l.name == "_" && !l.empty) {
        return None;
    }
    if l.reads > 0 || l.mutations > 0 {
        return None;
    }
    if l.writes == 0 {
        let what = match (&l.value, l.kind) {
            (Value::Function(_), LocalKind::LocalFunction) if is_recursive(file, id) => "recursive function",
            (Value::Function(_), _) => "function",
            _ => "variable",
        };
        return Some((l.decl.clone(), what));
    }
    match (&l.fn_assign, l.writes == 1 && l.empty) {
        (Some(r), true) => Some((r.clone(), "function")),
        _ => None,
    }
}

/// A local function whose only uses are inside its own body.
fn is_recursive(file: &SourceFile, id: usize) -> bool {
    file.model.uses.iter().any(|u| u.target == Target::Local(id) && u.access != Access::Decl)
}
