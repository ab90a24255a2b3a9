//! Completion at a byte offset: names in scope, keywords and globals; members after `.` and `:`
//! (standard library, string methods, table fields the code gives, `require`d modules, the live
//! session); state keys inside `state.get("`.

use super::lexer::KEYWORDS;
use super::model::{LocalKind, Target, Value};
use super::resolve::{function, function_label, target_at, visible_locals, word_at, FieldInfo, Resolver};
use super::{stdlib, LiveValue, SourceFile, World};
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

/// Candidates for the word ending at `offset`, filtered to those containing the typed characters
/// in order (clients rank and filter further).
pub fn complete(file: &SourceFile, offset: usize, world: &dyn World) -> Vec<Completion> {
    let text = file.text();
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    if let Some(partial) = state_key_partial(text, offset) {
        return state_keys(world, partial);
    }
    if inside(&file.model.comments, offset) || inside(&file.model.strings, offset) {
        return Vec::new();
    }
    let word = word_at(text, offset);
    let replace = word.start..offset;
    let typed = &text[replace.clone()];
    let mut out = Vec::new();
    let mut sink = |label: &str, kind, detail: Option<String>, doc: Option<&str>| {
        if is_subsequence(typed, label) && !out.iter().any(|c: &Completion| c.label == label) {
            out.push(Completion {
                label: label.to_string(),
                kind,
                detail,
                documentation: doc.map(str::to_string),
                replace: replace.clone(),
            });
        }
    };
    match member_context(text, replace.start) {
        Some((chain, method)) => members(file, world, offset, &chain, method, &mut sink),
        None => names(file, world, offset, &mut sink),
    }
    out
}

type Sink<'a> = dyn FnMut(&str, CompletionKind, Option<String>, Option<&str>) + 'a;

/// Inside a comment or a string literal (not at its very start).
fn inside(ranges: &[Range<usize>], offset: usize) -> bool {
    let i = ranges.partition_point(|r| r.end < offset);
    ranges.get(i).is_some_and(|r| r.start < offset && (offset < r.end || unterminated_at(r, offset)))
}

fn unterminated_at(r: &Range<usize>, offset: usize) -> bool {
    // A line comment or an unfinished string ends at the end of its line: the cursor there is inside.
    r.end == offset
}

/// Case-insensitive: every character of `typed` appears in `label` in order.
fn is_subsequence(typed: &str, label: &str) -> bool {
    let mut chars = label.chars().map(|c| c.to_ascii_lowercase());
    typed.chars().all(|t| chars.any(|c| c == t.to_ascii_lowercase()))
}

/// Before `start` (the partial word): `a.b.` or `a:`; returns the chain `["a", "b"]` and whether `:`.
fn member_context(text: &str, start: usize) -> Option<(Vec<String>, bool)> {
    let b = text.as_bytes();
    let mut i = start;
    let sep = *b.get(i.checked_sub(1)?)?;
    if sep != b'.' && sep != b':' {
        return None;
    }
    if i >= 2 && (b[i - 2] == sep) {
        return None; // `..` concatenation or `::` label
    }
    i -= 1;
    let mut chain = Vec::new();
    loop {
        let end = i;
        while i > 0 && super::resolve::is_name_byte(b[i - 1]) {
            i -= 1;
        }
        if i == end || b[i].is_ascii_digit() {
            return None;
        }
        chain.push(text[i..end].to_string());
        if i > 0 && b[i - 1] == b'.' && !(i >= 2 && b[i - 2] == b'.') {
            i -= 1;
        } else {
            break;
        }
    }
    chain.reverse();
    Some((chain, sep == b':'))
}

fn names(file: &SourceFile, world: &dyn World, offset: usize, sink: &mut Sink) {
    let m = &file.model;
    for id in visible_locals(file, offset) {
        let l = &m.locals[id];
        let (kind, detail) = match (&l.value, l.kind) {
            (Value::Function(f), _) => (CompletionKind::Function, function_label(&l.name, &m.functions[*f])),
            (_, LocalKind::Param | LocalKind::SelfParam) => {
                (CompletionKind::Variable, "parameter".to_string())
            }
            (v, _) => (CompletionKind::Variable, format!("local {}", type_of(v))),
        };
        let doc = match &l.value {
            Value::Function(f) => m.functions[*f].doc.as_deref(),
            _ => None,
        };
        sink(&l.name, kind, Some(detail.trim_end().to_string()), doc);
    }
    for (name, _, value) in &m.global_values {
        let (kind, detail) = match value {
            Value::Function(f) => (CompletionKind::Function, function_label(name, &m.functions[*f])),
            v => (CompletionKind::Variable, format!("global {}", type_of(v)).trim_end().to_string()),
        };
        sink(name, kind, Some(detail), None);
    }
    if let Some(live) = world.live() {
        for (name, v) in &live.globals {
            sink(name, live_kind(v, false), Some(live_detail(v)), None);
        }
    }
    for name in stdlib::known_globals() {
        let kind = if stdlib::is_library(name) { CompletionKind::Module } else { CompletionKind::Function };
        let doc = stdlib::doc(name);
        sink(name, kind, doc.and_then(|d| d.lines().next()).map(str::to_string), doc);
    }
    for (kw, _) in KEYWORDS {
        sink(kw, CompletionKind::Keyword, None, None);
    }
}

fn members(
    file: &SourceFile,
    world: &dyn World,
    offset: usize,
    chain: &[String],
    method: bool,
    sink: &mut Sink,
) {
    let r = Resolver { file, world };
    let target = target_at(file, &chain[0], offset);
    let value = Value::Path(target.clone(), chain[1..].to_vec());
    for f in r.fields(None, value.clone(), 0) {
        if !method || matches!(f.value, Value::Function(_) | Value::Unknown | Value::Path(..)) {
            field_completion(file, &f, method, sink);
        }
    }
    let global = matches!(target, Target::Global(_));
    if global && chain.len() == 1 {
        let lib = &chain[0];
        for (m, doc) in stdlib::members(lib) {
            let kind = if doc.lines().next().is_some_and(|l| l.contains('(')) {
                CompletionKind::Function
            } else {
                CompletionKind::Constant
            };
            sink(m, kind, doc.lines().next().map(str::to_string), Some(doc));
        }
    }
    if global {
        if let Some(live) = r.live(&chain[0], &chain[1..]) {
            for (name, v) in &live.fields {
                sink(name, live_kind(v, method), Some(live_detail(v)), None);
            }
        }
    }
    let (_, settled) = r.settle(None, value, 0);
    if method && matches!(settled, Value::Str | Value::Unknown | Value::Path(..)) {
        for (m, doc) in stdlib::string_methods() {
            sink(m, CompletionKind::Method, doc.lines().next().map(str::to_string), Some(doc));
        }
    }
}

fn field_completion(file: &SourceFile, f: &FieldInfo, method: bool, sink: &mut Sink) {
    let (kind, detail, doc) = match &f.value {
        Value::Function(fid) => {
            let func = function(file, &f.origin, *fid);
            let kind = if method || f.is_method { CompletionKind::Method } else { CompletionKind::Function };
            (kind, function_label(&f.name, func), func.doc.clone())
        }
        Value::Require(m) => (CompletionKind::Module, format!("module '{m}'"), None),
        v => (CompletionKind::Field, type_of(v).to_string(), None),
    };
    let detail = (!detail.is_empty()).then_some(detail);
    sink(&f.name, kind, detail, doc.as_deref());
}

/// Lua's type name of a value as the parser inferred it ("" when unknown).
pub(crate) fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean => "boolean",
        Value::Number => "number",
        Value::Str => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Require(_) => "module",
        Value::Unknown | Value::Path(..) | Value::Call => "",
    }
}

fn live_kind(v: &LiveValue, method: bool) -> CompletionKind {
    match v.type_name.as_str() {
        "function" if method => CompletionKind::Method,
        "function" => CompletionKind::Function,
        "table" => CompletionKind::Module,
        _ => CompletionKind::Variable,
    }
}

/// `function(a, b)` for a live function with known parameters, else `type: summary`.
pub(crate) fn live_detail(v: &LiveValue) -> String {
    match &v.params {
        Some(p) if v.type_name == "function" => format!("function({})", p.join(", ")),
        _ if v.summary.is_empty() => v.type_name.clone(),
        _ => format!("{}: {}", v.type_name, v.summary),
    }
}

/// Inside the string argument of `state.get(` / `state.set(` / `state.delete(`: the typed part.
/// Inside `state.get("…` (or set, delete, update): the byte range of the key typed so far.
pub fn state_key_partial(text: &str, offset: usize) -> Option<Range<usize>> {
    let b = text.as_bytes();
    let mut i = offset;
    while i > 0 && !matches!(b[i - 1], b'"' | b'\'' | b'\n' | b'(' | b')') {
        i -= 1;
    }
    let partial = i..offset;
    let before = text[..i.checked_sub(1)?].trim_end();
    if !matches!(b.get(i - 1), Some(b'"' | b'\'')) {
        return None;
    }
    let before = before.strip_suffix('(')?.trim_end();
    let call =
        ["state.get", "state.set", "state.delete", "state.update"].iter().find(|c| before.ends_with(*c))?;
    let head = &before[..before.len() - call.len()];
    head.bytes().last().is_none_or(|c| !super::resolve::is_name_byte(c) && c != b'.').then_some(partial)
}

fn state_keys(world: &dyn World, partial: Range<usize>) -> Vec<Completion> {
    let Some(live) = world.live() else { return Vec::new() };
    live.state_keys
        .iter()
        .map(|k| Completion {
            label: k.clone(),
            kind: CompletionKind::Constant,
            detail: Some("state key".into()),
            documentation: None,
            replace: partial.clone(),
        })
        .collect()
}
