//! Hover text at a byte offset: the standard library's documentation (from lua_docs.lua), a user
//! function's signature and `---` doc comment (with `@param` / `@return`), the inferred kind of a
//! name, and for live globals their type and short value.

use super::complete::{live_detail, type_of};
use super::model::{LocalKind, Target, Value};
use super::resolve::{function, function_label, use_at, Origin, Resolver};
use super::{stdlib, SourceFile, World};
use std::ops::Range;

#[derive(Clone, Debug, PartialEq)]
pub struct Hover {
    pub range: Range<usize>,
    pub markdown: String,
}

pub fn hover(file: &SourceFile, offset: usize, world: &dyn World) -> Option<Hover> {
    let r = Resolver { file, world };
    if let Some(idx) = use_at(file, offset) {
        let u = &file.model.uses[idx];
        let markdown = match &u.target {
            Target::Local(id) => local_text(&r, *id)?,
            Target::Global(name) => global_text(&r, name)?,
        };
        return Some(Hover { range: u.range.clone(), markdown });
    }
    let (base, path, range) = field_at(file, offset)?;
    Some(Hover { markdown: field_text(&r, &base, &path)?, range })
}

/// The field name at `offset` in `a.b.c` (a use or a store), with its base and path.
pub(crate) fn field_at(file: &SourceFile, offset: usize) -> Option<(Target, Vec<String>, Range<usize>)> {
    let m = &file.model;
    let hit = |r: &Range<usize>| r.start <= offset && offset <= r.end;
    if let Some(f) = m.field_uses.iter().find(|f| hit(&f.range)) {
        return Some((f.base.clone(), f.path.clone(), f.range.clone()));
    }
    let s = m.stores.iter().find(|s| hit(&s.field.range))?;
    let mut path = s.path.clone();
    path.push(s.field.name.clone());
    Some((s.base.clone(), path, s.field.range.clone()))
}

fn code(s: &str) -> String {
    format!("```lua\n{s}\n```")
}

fn with_doc(head: String, doc: Option<&str>) -> String {
    match doc {
        Some(d) if !d.trim().is_empty() => format!("{head}\n\n{}", render_doc(d)),
        _ => head,
    }
}

/// `---` comment text with `@param` / `@return` lines set out for reading.
fn render_doc(doc: &str) -> String {
    let mut out = Vec::new();
    for line in doc.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("@param") {
            let mut words = rest.trim().splitn(2, ' ');
            let name = words.next().unwrap_or("");
            out.push(format!("- `{name}` {}", words.next().unwrap_or("").trim()));
        } else if let Some(rest) = t.strip_prefix("@return") {
            out.push(format!("- returns {}", rest.trim()));
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\n")
}

/// A standard entry's doc: its signature line as code, then the text.
fn std_text(doc: &str) -> String {
    let (first, rest) = doc.split_once('\n').unwrap_or((doc, ""));
    with_doc(code(first), Some(rest.trim_start()))
}

fn function_text(r: &Resolver, origin: &Origin, name: &str, fid: usize) -> String {
    let f = function(r.file, origin, fid);
    let label = function_label(name, f);
    let head = code(&format!("function {label}"));
    let head = match origin {
        Some(m) => format!("{head}\n\n*{}*", m.path.display()),
        None => head,
    };
    with_doc(head, f.doc.as_deref())
}

fn local_text(r: &Resolver, id: usize) -> Option<String> {
    let l = &r.file.model.locals[id];
    if let Value::Function(fid) = l.value {
        return Some(function_text(r, &None, &l.name, fid));
    }
    let (origin, settled) = r.settle(None, l.value.clone(), 0);
    if let Value::Function(fid) = settled {
        return Some(function_text(r, &origin, &l.name, fid));
    }
    let what = match l.kind {
        LocalKind::Param => "(parameter) ",
        LocalKind::SelfParam => "(self) ",
        LocalKind::ForVar => "(loop variable) ",
        _ => "local ",
    };
    let attrib = l.attrib.as_ref().map(|a| format!(" <{a}>")).unwrap_or_default();
    let ty = describe(&settled, &l.value);
    Some(code(&format!("{what}{}{attrib}{ty}", l.name)))
}

/// `: type` as the code shows it (`: module 'pl.path'` for a require).
fn describe(settled: &Value, declared: &Value) -> String {
    match (declared, type_of(settled)) {
        (Value::Require(m), _) => format!(": module '{m}'"),
        (_, "") => String::new(),
        (_, t) => format!(": {t}"),
    }
}

fn global_text(r: &Resolver, name: &str) -> Option<String> {
    if let Some((_, _, v)) = r.file.model.global_values.iter().find(|(n, _, _)| n == name) {
        return Some(match v {
            Value::Function(fid) => function_text(r, &None, name, *fid),
            v => code(&format!("global {name}{}", describe(v, v))),
        });
    }
    if let Some(live) = r.live(name, &[]) {
        return Some(format!(
            "{}\n\nlive value: `{}`",
            code(&format!("global {name}: {}", live.type_name)),
            live_detail(live)
        ));
    }
    stdlib::doc(name).map(std_text)
}

fn field_text(r: &Resolver, base: &Target, path: &[String]) -> Option<String> {
    let dotted = |sep: &str| -> Option<String> {
        let Target::Global(g) = base else { return None };
        Some(format!("{g}{sep}{}", path.join(".")))
    };
    if let Some(doc) = dotted(".").and_then(|n| stdlib::doc(&n)) {
        return Some(std_text(doc));
    }
    let name = path.last()?;
    let (origin, value) = r.settle(None, Value::Path(base.clone(), path.to_vec()), 0);
    match value {
        Value::Function(fid) => return Some(function_text(r, &origin, name, fid)),
        Value::Path(..) | Value::Unknown => {}
        v => return Some(code(&format!("(field) {name}{}", describe(&v, &v)))),
    }
    // `s:upper` on a string value.
    let (_, owner) = r.settle(None, Value::Path(base.clone(), path[..path.len() - 1].to_vec()), 0);
    if owner == Value::Str {
        return stdlib::doc(&format!("string.{name}")).map(std_text);
    }
    if let Target::Global(g) = base {
        if let Some(live) = r.live(g, path) {
            return Some(format!(
                "{}\n\nlive value: `{}`",
                code(&format!("(field) {name}: {}", live.type_name)),
                live_detail(live)
            ));
        }
    }
    None
}
