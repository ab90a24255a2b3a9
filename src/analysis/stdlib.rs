//! Knowledge of Lua 5.4's standard library and of llmspell's kernel globals. Documentation comes
//! from the kernel's own `src/lua/lua_docs.lua` (one source for `help()`, Jupyter inspect and this),
//! read here with a small scanner for its `D["name"] = [==[text]==]` entries.

use std::sync::OnceLock;

/// Globals of Lua 5.4 (luacheck's `--std lua54` set).
const STD_GLOBALS: &[&str] = &[
    "_ENV",
    "_G",
    "_VERSION",
    "arg",
    "assert",
    "collectgarbage",
    "coroutine",
    "debug",
    "dofile",
    "error",
    "getmetatable",
    "io",
    "ipairs",
    "load",
    "loadfile",
    "math",
    "next",
    "os",
    "package",
    "pairs",
    "pcall",
    "print",
    "rawequal",
    "rawget",
    "rawlen",
    "rawset",
    "require",
    "select",
    "setmetatable",
    "string",
    "table",
    "tonumber",
    "tostring",
    "type",
    "utf8",
    "warn",
    "xpcall",
];

/// Globals the llmspell kernel defines in every session (see src/lua/prelude.lua).
pub const KERNEL_GLOBALS: &[&str] = &["state", "display", "help", "arg"];

const LUA_DOCS: &str = include_str!("../lua/lua_docs.lua");

pub fn is_std_global(name: &str) -> bool {
    STD_GLOBALS.contains(&name)
}

pub fn is_known_global(name: &str) -> bool {
    is_std_global(name) || KERNEL_GLOBALS.contains(&name)
}

/// All standard and kernel globals.
pub fn known_globals() -> impl Iterator<Item = &'static str> {
    STD_GLOBALS.iter().chain(KERNEL_GLOBALS.iter()).copied().filter(|n| *n != "_ENV")
}

/// `(name, text)` pairs of lua_docs.lua, sorted by name.
fn docs() -> &'static [(&'static str, &'static str)] {
    static DOCS: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut out = parse_docs(LUA_DOCS);
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    })
}

/// Reads `D["name"] = [==[text]==]` entries of a Lua chunk.
fn parse_docs(src: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("D[\"") {
        rest = &rest[i + 3..];
        let Some(name_end) = rest.find('"') else { break };
        let name = &rest[..name_end];
        rest = &rest[name_end..];
        let Some(open) = rest.find("[==[") else { break };
        let body = &rest[open + 4..];
        let Some(close) = body.find("]==]") else { break };
        out.push((name, body[..close].trim_start_matches('\n')));
        rest = &body[close..];
    }
    out
}

/// The documentation of a standard or kernel name (`print`, `string.format`, `file:read`).
pub fn doc(name: &str) -> Option<&'static str> {
    let d = docs();
    d.binary_search_by(|e| e.0.cmp(name)).ok().map(|i| d[i].1)
}

/// The signature line of a documented function (its doc's first line), when it is one.
pub fn signature(name: &str) -> Option<&'static str> {
    let first = doc(name)?.lines().next()?;
    first.contains('(').then_some(first)
}

/// Members of a standard library table (`string` → `format`, ...), with their docs.
pub fn members(lib: &str) -> Vec<(&'static str, &'static str)> {
    let prefix = format!("{lib}.");
    docs()
        .iter()
        .filter_map(|(n, d)| n.strip_prefix(prefix.as_str()).map(|m| (m, *d)))
        .filter(|(m, _)| !m.contains(['.', ':']))
        .collect()
}

/// Methods callable on a string value (`s:upper()`): the string library.
pub fn string_methods() -> Vec<(&'static str, &'static str)> {
    members("string")
}

/// Methods of a file handle (`f:read`).
pub fn file_methods() -> Vec<(&'static str, &'static str)> {
    docs().iter().filter_map(|(n, d)| n.strip_prefix("file:").map(|m| (m, *d))).collect()
}

/// Whether `lib` is a standard library table with members.
pub fn is_library(name: &str) -> bool {
    matches!(
        name,
        "string"
            | "table"
            | "math"
            | "io"
            | "os"
            | "coroutine"
            | "debug"
            | "utf8"
            | "package"
            | "state"
            | "display"
    )
}

/// Parameter names of a signature line `name(a, b [, c]) -> r`: `["a", "b", "c"]`, with their ranges.
pub fn signature_params(sig: &str) -> Vec<std::ops::Range<usize>> {
    let Some(open) = sig.find('(') else { return Vec::new() };
    let close = sig[open..].find(')').map_or(sig.len(), |k| open + k);
    let mut out = Vec::new();
    let mut i = open + 1;
    let bytes = sig.as_bytes();
    while i < close {
        let c = bytes[i];
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            let s = i;
            while i < close && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.') {
                i += 1;
            }
            out.push(s..i);
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_are_read_from_lua_docs() {
        assert!(doc("string.format").unwrap().starts_with("string.format("));
        assert!(signature("print").unwrap().starts_with("print("));
        assert!(members("string").iter().any(|(m, _)| *m == "format"));
        assert!(file_methods().iter().any(|(m, _)| *m == "read"));
    }

    #[test]
    fn signature_params_are_found() {
        let sig = "string.sub(s, i [, j]) -> string";
        let ps: Vec<&str> = signature_params(sig).into_iter().map(|r| &sig[r]).collect();
        assert_eq!(ps, ["s", "i", "j"]);
    }
}
