//! Go to definition (locals, globals assigned in the file, table fields, across `require`),
//! references and rename.

use super::hover::field_at;
use super::model::{LocalKind, Target, Value};
use super::resolve::{occurrences, use_at, Resolver};
use super::{SourceFile, World};
use std::ops::Range;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq)]
pub struct Location {
    /// None: this file.
    pub path: Option<PathBuf>,
    pub range: Range<usize>,
}

pub fn definition(file: &SourceFile, offset: usize, world: &dyn World) -> Vec<Location> {
    let here = |range: Range<usize>| Location { path: None, range };
    if let Some(idx) = use_at(file, offset) {
        return match &file.model.uses[idx].target {
            Target::Local(id) => {
                let l = &file.model.locals[*id];
                if l.kind == LocalKind::SelfParam {
                    return Vec::new();
                }
                vec![here(l.decl.clone())]
            }
            Target::Global(name) => file
                .model
                .global_values
                .iter()
                .filter(|(n, _, _)| n == name)
                .take(1)
                .map(|(_, r, _)| here(r.clone()))
                .collect(),
        };
    }
    if let Some(loc) = required_module(file, offset, world) {
        return vec![loc];
    }
    let Some((base, mut path, _)) = field_at(file, offset) else { return Vec::new() };
    let name = path.pop().unwrap_or_default();
    let r = Resolver { file, world };
    r.fields(None, Value::Path(base, path), 0)
        .into_iter()
        .filter(|f| f.name == name)
        .map(|f| Location { path: f.origin.as_ref().map(|m| m.path.clone()), range: f.range })
        .collect()
}

/// On the string of `require "name"`: the module's file.
fn required_module(file: &SourceFile, offset: usize, world: &dyn World) -> Option<Location> {
    let s = file.model.strings.iter().find(|s| s.start < offset && offset < s.end)?;
    let before = file.text()[..s.start].trim_end();
    let before = before.strip_suffix('(').unwrap_or(before).trim_end();
    if !before.ends_with("require") {
        return None;
    }
    let name = super::expr::string_content(&file.text()[s.clone()]);
    let m = world.module(name)?;
    Some(Location { path: Some(m.path.clone()), range: 0..0 })
}

/// Every occurrence of the name at `offset` (a local, or a global within this file), declaration
/// included, in text order.
pub fn references(file: &SourceFile, offset: usize) -> Vec<Range<usize>> {
    match use_at(file, offset) {
        Some(idx) => occurrences(file, &file.model.uses[idx].target),
        None => Vec::new(),
    }
}

/// The ranges to rewrite to rename the local at `offset`; None when it is not a local (or is the
/// implicit `self`).
pub fn rename(file: &SourceFile, offset: usize) -> Option<Vec<Range<usize>>> {
    let idx = use_at(file, offset)?;
    let target = &file.model.uses[idx].target;
    match target {
        Target::Local(id) if file.model.locals[*id].kind != LocalKind::SelfParam => {
            Some(occurrences(file, target))
        }
        _ => None,
    }
}
