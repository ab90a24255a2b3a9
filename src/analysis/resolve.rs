//! Queries shared by the features: what is at an offset, which locals are visible there, and what
//! a name or a field path (`cfg.a.b`) holds, following aliases, table constructors, field stores,
//! `require`d modules, the standard library and the live session.

use super::model::{Function, LocalId, Target, Value};
use super::{LiveValue, Module, SourceFile, World};
use std::ops::Range;
use std::sync::Arc;

/// How far aliases and modules are followed (guards against `a = b; b = a` cycles).
const MAX_HOPS: usize = 8;

/// The file a value lives in: the current one (None) or a `require`d module.
pub(crate) type Origin = Option<Arc<Module>>;

/// A field of a table, as far as the code shows it.
#[derive(Clone)]
pub(crate) struct FieldInfo {
    pub name: String,
    pub value: Value,
    pub range: Range<usize>,
    pub origin: Origin,
    pub is_method: bool,
}

pub(crate) fn file_of<'a>(file: &'a SourceFile, origin: &'a Origin) -> &'a SourceFile {
    origin.as_ref().map_or(file, |m| &m.file)
}

/// True for bytes that can be part of a Lua name.
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The name under or just before `offset`.
pub(crate) fn word_at(text: &str, offset: usize) -> Range<usize> {
    let b = text.as_bytes();
    let offset = offset.min(b.len());
    let mut s = offset;
    while s > 0 && is_name_byte(b[s - 1]) {
        s -= 1;
    }
    let mut e = offset;
    while e < b.len() && is_name_byte(b[e]) {
        e += 1;
    }
    s..e
}

/// The index (into `model.uses`) of the name occurrence at `offset` (cursor inside or at its end).
pub(crate) fn use_at(file: &SourceFile, offset: usize) -> Option<usize> {
    file.model
        .uses
        .iter()
        .position(|u| u.range.start <= offset && offset <= u.range.end && !u.range.is_empty())
}

/// Locals visible at `offset`, innermost first, one per name.
pub(crate) fn visible_locals(file: &SourceFile, offset: usize) -> Vec<LocalId> {
    let mut out: Vec<LocalId> = Vec::new();
    for (id, l) in file.model.locals.iter().enumerate().rev() {
        if l.visible.start <= offset
            && offset <= l.visible.end
            && !out.iter().any(|&o| file.model.locals[o].name == l.name)
        {
            out.push(id);
        }
    }
    out
}

/// What `name` refers to at `offset`: the innermost visible local, or a global.
pub(crate) fn target_at(file: &SourceFile, name: &str, offset: usize) -> Target {
    file.model
        .locals
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| l.name == name && l.visible.start <= offset && offset <= l.visible.end)
        .map_or_else(|| Target::Global(name.to_string()), |(id, _)| Target::Local(id))
}

pub(crate) struct Resolver<'a> {
    pub file: &'a SourceFile,
    pub world: &'a dyn World,
}

impl Resolver<'_> {
    /// The value a target holds: a local's declared value, or a global's first assignment here.
    pub fn target_value(&self, origin: &Origin, target: &Target) -> Value {
        let f = file_of(self.file, origin);
        match target {
            Target::Local(id) => f.model.locals[*id].value.clone(),
            Target::Global(name) => f
                .model
                .global_values
                .iter()
                .find(|(n, _, v)| n == name && !matches!(v, Value::Unknown | Value::Nil))
                .map_or(Value::Unknown, |(_, _, v)| v.clone()),
        }
    }

    /// Follows aliases (`local s = string`), paths and `require` to a value that is not a path.
    pub fn settle(&self, origin: Origin, value: Value, hops: usize) -> (Origin, Value) {
        if hops > MAX_HOPS {
            return (origin, Value::Unknown);
        }
        match value {
            Value::Path(target, path) if path.is_empty() => {
                let v = self.target_value(&origin, &target);
                match v {
                    Value::Unknown => (origin, Value::Path(target, path)),
                    v => self.settle(origin, v, hops + 1),
                }
            }
            Value::Path(target, mut path) => {
                let last = path.pop().unwrap_or_default();
                let fields = self.fields(origin.clone(), Value::Path(target.clone(), path.clone()), hops + 1);
                match fields.into_iter().find(|f| f.name == last) {
                    Some(f) => self.settle(f.origin, f.value, hops + 1),
                    None => {
                        path.push(last);
                        (origin, Value::Path(target, path))
                    }
                }
            }
            Value::Require(name) => match self.world.module(&name) {
                Some(m) => {
                    let ret = m.file.model.returns.clone().unwrap_or_default();
                    self.settle(Some(m), ret, hops + 1)
                }
                None => (origin, Value::Require(name)),
            },
            v => (origin, v),
        }
    }

    /// The fields the code gives a value: constructor fields, stores through the name that holds it
    /// (`cfg.x = 1`, `function M.f()`), and for a module the fields of what it returns.
    pub fn fields(&self, origin: Origin, value: Value, hops: usize) -> Vec<FieldInfo> {
        if hops > MAX_HOPS {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Value::Path(target, path) = &value {
            self.stores_into(&origin, target, path, &mut out);
        }
        let (origin, settled) = self.settle(origin, value, hops);
        let f = file_of(self.file, &origin);
        match &settled {
            Value::Table(tid) => {
                for fld in &f.model.tables[*tid].fields {
                    out.push(FieldInfo {
                        name: fld.name.clone(),
                        value: fld.value.clone(),
                        range: fld.range.clone(),
                        origin: origin.clone(),
                        is_method: false,
                    });
                }
                // Stores through the local or global that holds this table.
                for (target, _) in holders(f, *tid) {
                    self.stores_into(&origin, &target, &[], &mut out);
                }
            }
            Value::Path(target, path) if !path.is_empty() || matches!(target, Target::Global(_)) => {
                self.stores_into(&origin, target, path, &mut out);
            }
            _ => {}
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|f| seen.insert(f.name.clone()));
        out
    }

    fn stores_into(&self, origin: &Origin, target: &Target, path: &[String], out: &mut Vec<FieldInfo>) {
        let f = file_of(self.file, origin);
        for s in &f.model.stores {
            if &s.base == target && s.path == path && !out.iter().any(|o: &FieldInfo| o.name == s.field.name)
            {
                out.push(FieldInfo {
                    name: s.field.name.clone(),
                    value: s.field.value.clone(),
                    range: s.field.range.clone(),
                    origin: origin.clone(),
                    is_method: s.is_method,
                });
            }
        }
    }

    /// A live global's value following a field path.
    pub fn live(&self, name: &str, path: &[String]) -> Option<&LiveValue> {
        let mut v = self.world.live()?.globals.get(name)?;
        for p in path {
            v = v.fields.get(p)?;
        }
        Some(v)
    }
}

/// A function of the file `origin` names.
pub(crate) fn function<'a>(file: &'a SourceFile, origin: &'a Origin, fid: usize) -> &'a Function {
    &file_of(file, origin).model.functions[fid]
}

/// `name(a, b, ...)` for a function.
pub(crate) fn function_label(name: &str, f: &Function) -> String {
    let mut params = f.params.clone();
    if f.vararg {
        params.push("...".into());
    }
    format!("{name}({})", params.join(", "))
}

/// The locals and globals whose declared value is the table constructor `tid`.
fn holders(f: &SourceFile, tid: usize) -> Vec<(Target, ())> {
    let mut out = Vec::new();
    for (id, l) in f.model.locals.iter().enumerate() {
        if l.value == Value::Table(tid) {
            out.push((Target::Local(id), ()));
        }
    }
    for (n, _, v) in &f.model.global_values {
        if *v == Value::Table(tid) {
            out.push((Target::Global(n.clone()), ()));
        }
    }
    out
}

/// The name uses of a target (declaration included), in text order.
pub(crate) fn occurrences(file: &SourceFile, target: &Target) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = file
        .model
        .uses
        .iter()
        .filter(|u| &u.target == target && !u.range.is_empty())
        .map(|u| u.range.clone())
        .collect();
    out.sort_by_key(|r| r.start);
    out
}
