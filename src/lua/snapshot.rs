//! The live session's names for editors: after each execution the kernel takes a bounded snapshot of
//! the session's globals (`analysis::LiveSnapshot`'s JSON shape), which the language server reads
//! through the control channel without ever waiting on the Lua thread.
//!
//! Reading must never run user code: tables are walked with raw `next` (no `__pairs`, `__index`),
//! nothing is `tostring`ed (no `__tostring`), and only plain functions' parameter names are read
//! (the session's original `debug` library, captured before any cell ran).

use mlua::{Function, Table, Value};
use serde_json::{json, Map, Value as Json};
use std::collections::HashSet;
use std::ffi::c_void;

/// Globals taken at most (the rest: `truncated`).
const MAX_GLOBALS: usize = 300;
/// Fields taken per table.
const MAX_FIELDS: usize = 200;
/// Tables below a global that are described: its fields (1) and theirs (2).
const MAX_DEPTH: usize = 2;
/// The JSON's size stays under this (roughly counted as it is built).
const MAX_BYTES: usize = 256 << 10;
/// Characters of a string value shown in its summary.
const STRING_CHARS: usize = 40;

/// What the walk carries: what to skip, what is left of the budget, what was left out.
struct Walk<'a> {
    /// The standard library's and the kernel's own tables: never described again.
    builtin_tables: HashSet<*const c_void>,
    getlocal: Option<Function>,
    getinfo: Option<Function>,
    bytes: usize,
    truncated: bool,
    builtins: &'a Table,
}

/// The snapshot of `globals` without the session's built-in names (`builtins`: the globals before any
/// cell ran, the same values), and with the store's keys.
pub fn take(globals: &Table, builtins: &Table, state_keys: Vec<String>) -> Json {
    let debug: Option<Table> = builtins.raw_get("debug").ok();
    let mut walk = Walk {
        builtin_tables: HashSet::new(),
        getlocal: debug.as_ref().and_then(|d| d.raw_get("getlocal").ok()),
        getinfo: debug.as_ref().and_then(|d| d.raw_get("getinfo").ok()),
        bytes: 0,
        truncated: false,
        builtins,
    };
    for (_, v) in builtins.pairs::<Value, Value>().flatten() {
        if let Value::Table(t) = v {
            walk.builtin_tables.insert(t.to_pointer());
        }
    }
    let mut out = Map::new();
    for (k, v) in globals.pairs::<Value, Value>().flatten() {
        let Value::String(name) = &k else { continue };
        let Ok(name) = name.to_str().map(|s| s.to_string()) else { continue };
        if walk.is_builtin(&name, &v) {
            continue;
        }
        if out.len() >= MAX_GLOBALS || walk.bytes >= MAX_BYTES {
            walk.truncated = true;
            break;
        }
        walk.bytes += name.len() + 40;
        out.insert(name, walk.describe(&v, 1));
    }
    json!({ "globals": out, "state_keys": state_keys, "truncated": walk.truncated })
}

impl Walk<'_> {
    /// A global the session started with, still holding its first value.
    fn is_builtin(&self, name: &str, v: &Value) -> bool {
        match self.builtins.raw_get::<Value>(name) {
            Ok(b) if !b.is_nil() => b.to_pointer() == v.to_pointer() && b.type_name() == v.type_name(),
            _ => false,
        }
    }

    /// One value: `type_name`, `summary`, and a table's `fields` (to MAX_DEPTH) or a function's `params`.
    fn describe(&mut self, v: &Value, depth: usize) -> Json {
        let type_name = match v {
            Value::Integer(_) | Value::Number(_) => "number",
            Value::LightUserData(_) | Value::UserData(_) => "userdata",
            other => other.type_name(),
        };
        let mut d = Map::new();
        d.insert("type_name".into(), Json::from(type_name));
        let summary = match v {
            Value::Table(t) => {
                let described = depth <= MAX_DEPTH && !self.builtin_tables.contains(&t.to_pointer());
                let (summary, fields) = self.table(t, described.then_some(depth));
                if let Some(fields) = fields {
                    d.insert("fields".into(), Json::Object(fields));
                }
                summary
            }
            Value::Function(f) => {
                if let Some(params) = self.params(f) {
                    d.insert("params".into(), json!(params));
                }
                "function".into()
            }
            other => summary(other),
        };
        self.bytes += summary.len() + 30;
        d.insert("summary".into(), Json::from(summary));
        Json::Object(d)
    }

    /// A table's summary ("table (3 fields)") and, at `depth` if given, its fields: one raw walk.
    fn table(&mut self, t: &Table, depth: Option<usize>) -> (String, Option<Map<String, Json>>) {
        const COUNTED: usize = 1000;
        let mut fields = depth.map(|_| Map::new());
        let mut count = 0usize;
        for (k, v) in t.pairs::<Value, Value>().take(COUNTED).flatten() {
            count += 1;
            let (Some(depth), Value::String(name)) = (depth, &k) else { continue };
            let Ok(name) = name.to_str().map(|s| s.to_string()) else { continue };
            if fields.as_ref().is_some_and(|f| f.len() >= MAX_FIELDS) || self.bytes >= MAX_BYTES {
                self.truncated = true;
                continue;
            }
            self.bytes += name.len() + 10;
            let described = self.describe(&v, depth + 1);
            if let Some(out) = fields.as_mut() {
                out.insert(name, described);
            }
        }
        let more = if count >= COUNTED { "+" } else { "" };
        let summary = match t.raw_len() {
            0 => format!("table ({count}{more} fields)"),
            n if n == count => format!("table (list of {n})"),
            n => format!("table (list of {n}, {count}{more} entries)"),
        };
        (summary, fields)
    }

    /// A Lua function's parameter names (`...` for a vararg); None for a C function.
    fn params(&self, f: &Function) -> Option<Vec<String>> {
        let (getlocal, getinfo) = (self.getlocal.as_ref()?, self.getinfo.as_ref()?);
        let info: Table = getinfo.call((f, "Su")).ok()?;
        if info.raw_get::<String>("what").ok()? == "C" {
            return None;
        }
        let count: usize = info.raw_get("nparams").unwrap_or(0);
        let mut names: Vec<String> = (1..=count.min(50))
            .filter_map(|i| getlocal.call::<Option<String>>((f, i)).ok().flatten())
            .collect();
        if info.raw_get::<bool>("isvararg").unwrap_or(false) {
            names.push("...".into());
        }
        Some(names)
    }
}

/// A short text for a value that is neither a table nor a function; never through a metamethod.
fn summary(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => format!("{n}"),
        Value::String(s) => {
            let text = s.to_string_lossy();
            let mut shown: String = text.chars().take(STRING_CHARS).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            format!("{shown:?}")
        }
        other => other.type_name().to_string(),
    }
}
