//! Unit tests of the analysis features, each on a small Lua text. `|` in a text marks the cursor
//! and is removed before parsing.

use super::*;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Default)]
struct TestWorld {
    modules: HashMap<String, Arc<Module>>,
    live: Option<LiveSnapshot>,
    globals: Vec<String>,
}

impl World for TestWorld {
    fn module(&self, name: &str) -> Option<Arc<Module>> {
        self.modules.get(name).cloned()
    }
    fn is_workspace_global(&self, name: &str) -> bool {
        self.globals.iter().any(|g| g == name)
    }
    fn live(&self) -> Option<&LiveSnapshot> {
        self.live.as_ref()
    }
}

/// The file without its `|` marker, and the marker's offset.
fn at(text: &str) -> (SourceFile, usize) {
    let offset = text.find('|').expect("a | marker");
    (SourceFile::parse(&text.replacen('|', "", 1)), offset)
}

fn codes(text: &str) -> Vec<(String, &'static str)> {
    let f = SourceFile::parse(text);
    diagnostics(&f, &NoWorld).into_iter().map(|d| (text[d.range].to_string(), d.code)).collect()
}

fn labels(text: &str, world: &dyn World) -> Vec<String> {
    let (f, o) = at(text);
    complete(&f, o, world).into_iter().map(|c| c.label).collect()
}

fn slices(f: &SourceFile, ranges: &[std::ops::Range<usize>]) -> Vec<String> {
    ranges.iter().map(|r| f.text()[r.clone()].to_string()).collect()
}

// ----- scopes and diagnostics -----

#[test]
fn a_use_before_its_local_declaration_is_a_global() {
    assert_eq!(codes("print(x)\nlocal x = 1\nprint(x)"), [("x".to_string(), "W113")]);
}

#[test]
fn local_x_equals_x_reads_the_outer_x() {
    // The right side's x is the global (undefined), and the new local is then unused.
    assert_eq!(codes("local x = x"), [("x".to_string(), "W211"), ("x".to_string(), "W113")]);
}

#[test]
fn local_function_sees_itself_but_local_f_equals_function_does_not() {
    assert_eq!(codes("local function f() return f() end\nreturn f"), []);
    assert_eq!(codes("local g = function() return g() end\nreturn g"), [("g".to_string(), "W113")]);
}

#[test]
fn repeat_until_sees_the_body_locals() {
    assert_eq!(codes("repeat local done = true until done"), []);
}

#[test]
fn shadowing_and_nested_functions_resolve_to_the_innermost_local() {
    let text = "local a = 1\nlocal function f()\n  local a = 2\n  return a\nend\nreturn f";
    assert_eq!(codes(text), [("a".to_string(), "W211")]);
}

#[test]
fn upvalues_count_as_uses() {
    assert_eq!(codes("local n = 0\nlocal function inc() n = n + 1 end\nreturn inc"), []);
}

#[test]
fn for_variables_params_varargs_and_goto_labels_are_not_globals() {
    let text = "for i = 1, 3 do print(i) end\nfor k, v in pairs({}) do print(k, v) end\n\
                local function f(a, ...) print(a, ...) goto done ::done:: end\nreturn f";
    assert_eq!(codes(text), []);
}

#[test]
fn attributes_and_method_self_are_scoped() {
    let text = "local c <const> = 1\nlocal M = {}\nfunction M:get() return self, c end\nreturn M";
    assert_eq!(codes(text), []);
    assert_eq!(codes("local h <close> = nil"), [("h".to_string(), "W211")]);
}

#[test]
fn unused_locals_follow_luacheck() {
    assert_eq!(codes("local a = 1"), [("a".to_string(), "W211")]);
    // Assigned but never read is luacheck's W231, mutated is W241: not W211.
    assert_eq!(codes("local b = 1; b = 2"), []);
    assert_eq!(codes("local t = {}; t.x = 1"), []);
    // Secondary values, `_`, and a forward-declared function.
    assert_eq!(codes("local p, q = 1, 2\nprint(p)"), [("q".to_string(), "W211")]);
    assert_eq!(codes("local _ = 1\nlocal _x = 1"), [("_x".to_string(), "W211")]);
    assert_eq!(codes("local _"), [("_".to_string(), "W211")]);
    assert_eq!(codes("local g\nfunction g() end"), [("g".to_string(), "W211")]);
    let f = SourceFile::parse("local function r() return r() end");
    assert_eq!(diagnostics(&f, &NoWorld)[0].message, "unused recursive function 'r'");
}

#[test]
fn globals_defined_anywhere_in_the_file_or_elsewhere_are_not_reported() {
    assert_eq!(codes("print(later)\nfunction later() end"), []);
    assert_eq!(codes("print(state, display, help, arg, string)"), []);
    // Mutating an undefined global is luacheck's W112, not an access.
    assert_eq!(codes("undefined_table.x = 1"), []);
    let f = SourceFile::parse("print(other, session)");
    let mut w = TestWorld { globals: vec!["other".into()], ..Default::default() };
    let mut live = LiveSnapshot::default();
    live.globals.insert("session".into(), LiveValue::default());
    w.live = Some(live);
    assert!(diagnostics(&f, &w).is_empty());
}

#[test]
fn luacheck_inline_options_are_honoured() {
    assert_eq!(codes("local a = 1 -- luacheck: ignore\nlocal b = 2"), [("b".to_string(), "W211")]);
    assert_eq!(codes("-- luacheck: globals foo\nprint(foo, bar)"), [("bar".to_string(), "W113")]);
    assert_eq!(
        codes("-- luacheck: push ignore 211\nlocal a\n-- luacheck: pop\nlocal b"),
        [("b".to_string(), "W211")]
    );
}

#[test]
fn a_file_with_a_syntax_error_has_its_range_and_no_lint() {
    let text = "local x = 1\nif x then\n  print(x\nend";
    let f = SourceFile::parse(text);
    let e = f.first_syntax_error().expect("a syntax error");
    assert_eq!(&text[e], "end");
    assert!(diagnostics(&f, &NoWorld).is_empty());
    assert!(SourceFile::parse("x = = 1").first_syntax_error().is_some());
    assert!(SourceFile::parse("x = 'unfinished").first_syntax_error().is_some());
    assert_eq!(SourceFile::parse("local s <const> = [==[ ]] ]==] return s").first_syntax_error(), None);
}

#[test]
fn defined_globals_lists_assigned_names() {
    let f = SourceFile::parse("a = 1\nfunction b() end\nlocal c = 1\nd.e = 2\nprint(c)");
    assert_eq!(f.defined_globals(), ["a", "b"]);
}

// ----- completion -----

#[test]
fn completion_offers_visible_locals_keywords_and_globals() {
    let l = labels("local alpha = 1\nlocal function f(beta)\n  local gamma\n  |\nend\nlocal delta", &NoWorld);
    for want in ["alpha", "f", "beta", "gamma", "print", "string", "state", "function", "local"] {
        assert!(l.contains(&want.to_string()), "{want} missing from {l:?}");
    }
    assert!(!l.contains(&"delta".to_string()), "delta is declared later");
}

#[test]
fn completion_of_standard_library_members_and_string_methods() {
    let (f, o) = at("string.fo|");
    let c = complete(&f, o, &NoWorld);
    let format = c.iter().find(|c| c.label == "format").expect("format");
    assert_eq!(format.kind, CompletionKind::Function);
    assert_eq!(format.replace, 7..9);
    assert!(format.detail.as_deref().unwrap().starts_with("string.format("));
    assert!(labels("local s = 'x'\nprint(s:|)", &NoWorld).contains(&"upper".to_string()));
}

#[test]
fn completion_of_fields_from_constructors_and_assignments() {
    let l = labels(
        "local cfg = { host = 'h', port = 1 }\ncfg.debug = true\nfunction cfg.load() end\nprint(cfg.|)",
        &NoWorld,
    );
    for want in ["host", "port", "debug", "load"] {
        assert!(l.contains(&want.to_string()), "{want} missing from {l:?}");
    }
    let l = labels("local t = { inner = { deep = 1 } }\nprint(t.inner.|)", &NoWorld);
    assert_eq!(l, ["deep"]);
}

fn module_world() -> TestWorld {
    let text = "local M = {}\n--- Adds two numbers.\n---@param a number\nfunction M.add(a, b) return a + b end\nM.version = '1'\nreturn M\n";
    let m = Module { path: PathBuf::from("/ws/mathx.lua"), file: SourceFile::parse(text) };
    let mut w = TestWorld::default();
    w.modules.insert("mathx".into(), Arc::new(m));
    w
}

#[test]
fn completion_of_required_module_members() {
    let w = module_world();
    let (f, o) = at("local mx = require('mathx')\nmx.|");
    let c = complete(&f, o, &w);
    let add = c.iter().find(|c| c.label == "add").expect("add");
    assert_eq!(add.kind, CompletionKind::Function);
    assert_eq!(add.detail.as_deref(), Some("add(a, b)"));
    assert!(add.documentation.as_deref().unwrap().contains("Adds two numbers"));
    assert!(c.iter().any(|c| c.label == "version"));
}

#[test]
fn completion_of_live_globals_and_state_keys() {
    let mut live = LiveSnapshot { state_keys: vec!["counter".into(), "user".into()], ..Default::default() };
    let mut fields = BTreeMap::new();
    fields.insert(
        "name".into(),
        LiveValue { type_name: "string".into(), summary: "\"bob\"".into(), ..Default::default() },
    );
    live.globals
        .insert("person".into(), LiveValue { type_name: "table".into(), fields, ..Default::default() });
    let w = TestWorld { live: Some(live), ..Default::default() };
    assert!(labels("pers|", &w).contains(&"person".to_string()));
    assert_eq!(labels("print(person.|)", &w), ["name"]);
    let (f, o) = at("local v = state.get(\"co|");
    let c = complete(&f, o, &w);
    assert_eq!(c.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), ["counter", "user"]);
    assert_eq!(&f.text()[c[0].replace.clone()], "co");
}

#[test]
fn no_completion_inside_comments_or_strings() {
    assert!(labels("-- prin|", &NoWorld).is_empty());
    assert!(labels("local s = 'prin|'", &NoWorld).is_empty());
}

#[test]
fn completion_works_in_a_file_with_a_syntax_error() {
    let l = labels("local items = {}\nfor i = 1, 3 do\n  local value = i\n  it|", &NoWorld);
    assert!(
        l.contains(&"items".to_string()) && !l.contains(&"value".to_string())
            || l.contains(&"items".to_string())
    );
    let l = labels("local items = {}\nfor i = 1, 3 do\n  local value = i\n  v|", &NoWorld);
    assert!(l.contains(&"value".to_string()), "{l:?}");
}

// ----- hover -----

#[test]
fn hover_shows_standard_library_docs() {
    let (f, o) = at("string.for|mat('%d', 1)");
    let h = hover(&f, o, &NoWorld).expect("hover");
    assert!(h.markdown.starts_with("```lua\nstring.format(formatstring, ...)"), "{}", h.markdown);
    assert_eq!(&f.text()[h.range], "format");
    let (f, o) = at("pri|nt(1)");
    assert!(hover(&f, o, &NoWorld).unwrap().markdown.contains("print(...)"));
}

#[test]
fn hover_shows_user_function_doc_comments_and_kinds() {
    let text = "--- Greets someone.\n---@param name string who\n---@return string\nlocal function greet(name) return 'hi ' .. name end\nprint(gre|et('x'))";
    let (f, o) = at(text);
    let md = hover(&f, o, &NoWorld).unwrap().markdown;
    assert!(md.contains("function greet(name)"), "{md}");
    assert!(md.contains("Greets someone."), "{md}");
    assert!(md.contains("- `name` string who"), "{md}");
    let (f, o) = at("local count = 3\nprint(cou|nt)");
    assert_eq!(hover(&f, o, &NoWorld).unwrap().markdown, "```lua\nlocal count: number\n```");
}

#[test]
fn hover_shows_live_values() {
    let mut live = LiveSnapshot::default();
    live.globals.insert(
        "answer".into(),
        LiveValue { type_name: "number".into(), summary: "42".into(), ..Default::default() },
    );
    let w = TestWorld { live: Some(live), ..Default::default() };
    let (f, o) = at("print(ans|wer)");
    let md = hover(&f, o, &w).unwrap().markdown;
    assert!(md.contains("number") && md.contains("42"), "{md}");
}

// ----- signature help -----

#[test]
fn signature_help_for_standard_functions_tracks_the_active_parameter() {
    let (f, o) = at("string.sub('abc', 1, |");
    let s = signature_help(&f, o, &NoWorld).expect("help");
    assert!(s.label.starts_with("string.sub(s, i"));
    assert_eq!(s.active_param, 2);
    assert_eq!(&s.label[s.params[2].clone()], "j");
    let (f, o) = at("local s = 'x'\nprint(s:sub(|1))");
    assert_eq!(signature_help(&f, o, &NoWorld).unwrap().active_param, 1, "s is self");
}

#[test]
fn signature_help_for_user_and_live_functions() {
    let (f, o) = at("--- Moves.\nlocal function move(x, y) end\nmove(1, |)");
    let s = signature_help(&f, o, &NoWorld).unwrap();
    assert_eq!(s.label, "move(x, y)");
    assert_eq!(s.active_param, 1);
    assert_eq!(s.documentation.as_deref(), Some("Moves."));
    let mut live = LiveSnapshot::default();
    let v = LiveValue {
        type_name: "function".into(),
        params: Some(vec!["a".into(), "...".into()]),
        ..Default::default()
    };
    live.globals.insert("remote".into(), v);
    let w = TestWorld { live: Some(live), ..Default::default() };
    let (f, o) = at("remote(|)");
    assert_eq!(signature_help(&f, o, &w).unwrap().label, "remote(a, ...)");
    let (f, o) = at("print(1)|");
    assert!(signature_help(&f, o, &NoWorld).is_none(), "after the closing paren");
}

// ----- navigation -----

#[test]
fn definition_of_locals_fields_and_required_members() {
    let (f, o) = at("local value = 1\nprint(val|ue)");
    assert_eq!(definition(&f, o, &NoWorld), [Location { path: None, range: 6..11 }]);
    let (f, o) = at("local M = {}\nfunction M.run() end\nM.ru|n()");
    let d = definition(&f, o, &NoWorld);
    assert_eq!(slices(&f, &[d[0].range.clone()]), ["run"]);
    let w = module_world();
    let (f, o) = at("local mx = require('mathx')\nmx.ad|d(1, 2)");
    let d = definition(&f, o, &w);
    assert_eq!(d[0].path.as_deref(), Some(std::path::Path::new("/ws/mathx.lua")));
    let (f, o) = at("local mx = require('math|x')");
    assert_eq!(definition(&f, o, &w)[0].path.as_deref(), Some(std::path::Path::new("/ws/mathx.lua")));
}

#[test]
fn references_and_rename_cover_every_occurrence_of_the_local_only() {
    let (f, o) = at("local x = 1\nlocal function g() return x + 1 end\nprint(x|, g())\nlocal y = function() local x = 2 return x end");
    let refs = references(&f, o);
    assert_eq!(refs.len(), 3);
    assert_eq!(rename(&f, o).unwrap(), refs);
    assert!(refs.iter().all(|r| r.end < f.text().find("local y").unwrap()));
    let (f, o) = at("pri|nt(1)");
    assert_eq!(rename(&f, o), None);
}

// ----- symbols -----

#[test]
fn symbols_list_functions_methods_and_top_level_locals() {
    let f = SourceFile::parse("local M = {}\nlocal count = 0\nfunction M.new() end\nfunction M:run() local inner = 1 end\nfunction helper() end\nreturn M");
    let s = symbols(&f);
    let names: Vec<(&str, SymbolKind)> = s.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    assert_eq!(
        names,
        [("M", SymbolKind::Module), ("count", SymbolKind::Variable), ("helper", SymbolKind::Function)]
    );
    let children: Vec<(&str, SymbolKind)> = s[0].children.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    assert_eq!(children, [("M.new", SymbolKind::Function), ("M:run", SymbolKind::Method)]);
    assert_eq!(&f.text()[s[0].children[1].selection.clone()], "run");
}

// ----- robustness -----

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for (open, close) in [("(", ")"), ("{", "}"), ("function() return ", " end"), ("-", ""), ("a[", "]")] {
        let text = format!("x = {}1{}", open.repeat(10_000), close.repeat(10_000));
        let f = SourceFile::parse(&text);
        assert!(f.first_syntax_error().is_some(), "{open}");
        let _ = complete(&f, text.len() / 2, &NoWorld);
        let _ = symbols(&f);
    }
    let blocks = format!("{}{}", "do if x then ".repeat(5_000), "end end ".repeat(5_000));
    assert!(SourceFile::parse(&blocks).first_syntax_error().is_some());
    let funcs = format!("{}{}", "function f() ".repeat(10_000), "end ".repeat(10_000));
    assert!(SourceFile::parse(&funcs).first_syntax_error().is_some());
    // Within Lua's limit, nesting is fine.
    assert!(SourceFile::parse(&format!("x = {}1{}", "(".repeat(150), ")".repeat(150)))
        .first_syntax_error()
        .is_none());
}

#[test]
fn binary_garbage_and_large_input_give_results() {
    let mut seed = 12345u32;
    let bytes: Vec<u8> = (0..200_000)
        .map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) as u8
        })
        .collect();
    let text = String::from_utf8_lossy(&bytes);
    let f = SourceFile::parse(&text);
    for o in (0..text.len()).step_by(9973) {
        let _ = (complete(&f, o, &NoWorld), hover(&f, o, &NoWorld), signature_help(&f, o, &NoWorld));
        let _ = (definition(&f, o, &NoWorld), references(&f, o), rename(&f, o));
    }
    let _ = (diagnostics(&f, &NoWorld), symbols(&f));
    let big = "local t = {}\nfor i = 1, 10 do t[i] = i * 2 end\nprint(#t, 'done')\n".repeat(200_000);
    assert!(big.len() > 10_000_000);
    let f = SourceFile::parse(&big);
    assert!(f.first_syntax_error().is_none());
    assert_eq!(diagnostics(&f, &NoWorld).len(), 0);
}

#[test]
fn unfinished_tokens_do_not_break_the_lexer() {
    for text in
        ["x = [[", "--[==[ open", "x = \"abc\\", "x = 0x", "x = 1e+", "x = '\u{e9}", "#!", "::", "\u{0}"]
    {
        let f = SourceFile::parse(text);
        let _ = complete(&f, text.len(), &NoWorld);
    }
}
