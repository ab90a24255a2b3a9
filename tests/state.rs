//! Integration tests of the persistent `state` store: the Lua API through real kernels, sharing
//! between `repl`, `run`, `exec`, kernels and the `llmspell state` CLI, durability across
//! `kernel stop` and `kill -9`, concurrency between kernels, batching, corrupt and insecure files.
//!
//! Every test uses a private LLMSPELL_HOME (`common::Home`); its kernels are stopped on drop.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/// Lua helpers prepended to checking cells: a deep equality that also compares integer/float
/// subtypes and the sign of zero, and a readable dump for failure messages.
const LUA_LIB: &str = r#"
local function dump(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) .. "(" .. (math.type(v) or type(v)) .. ")" end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = "[" .. dump(k) .. "]=" .. dump(v[k]) end
  return "{" .. table.concat(parts, ", ") .. "}"
end
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false end
    if a ~= a then return b ~= b end
    if a == 0 and b == 0 then return 1 / a == 1 / b end
    return a == b
  end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
local function check(got, want, what)
  if not same(got, want) then
    error((what or "value") .. ": got " .. dump(got) .. ", want " .. dump(want), 2)
  end
end
"#;

fn out_text(o: &Output) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), stdout(o), stderr(o))
}

/// `llmspell ARGS` must succeed; returns its stdout.
fn ok(home: &Home, args: &[&str], stdin: &str) -> String {
    let o = home.run(args, stdin);
    assert!(o.status.success(), "llmspell {args:?} failed\n{}", out_text(&o));
    stdout(&o)
}

/// Runs a cell (`exec`) on kernel `id` with the Lua helpers in scope; it must succeed.
fn cell(home: &Home, id: &str, code: &str) -> String {
    let code = format!("{LUA_LIB}\n{code}");
    ok(home, &["--kernel", id, "exec", &code], "")
}

/// Runs a cell on kernel `id` that must fail; returns its output.
fn failing_cell(home: &Home, id: &str, code: &str) -> Output {
    let o = home.run(&["--kernel", id, "exec", code], "");
    assert_eq!(o.status.code(), Some(1), "the cell should fail with exit 1: {code}\n{}", out_text(&o));
    o
}

/// Writes `code` (with the Lua helpers) to a script in the home and `llmspell run`s it on kernel `id`.
fn script(home: &Home, id: &str, name: &str, code: &str, args: &[&str], timeout: Duration) -> Output {
    let path = write_file(&home.dir, name, &format!("{LUA_LIB}\n{code}"));
    let mut argv = vec!["--kernel", id, "run", path.to_str().unwrap()];
    argv.extend_from_slice(args);
    home.run_timeout(&argv, "", timeout)
}

/// Runs the same script at once in kernels "a" and "b" (as `NAME-ID.lua`; with `id_arg`, the kernel
/// id is its argument); their outputs, a's first.
fn script_in_kernels_a_and_b(home: &Home, name: &str, code: &str, id_arg: bool) -> Vec<Output> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|id| {
                s.spawn(move || {
                    let args: &[&str] = if id_arg { &[id] } else { &[] };
                    script(home, id, &format!("{name}-{id}.lua"), code, args, Duration::from_secs(180))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn script_ok(home: &Home, id: &str, name: &str, code: &str) -> String {
    let o = script(home, id, name, code, &[], Duration::from_secs(60));
    assert!(o.status.success(), "script {name} failed\n{}", out_text(&o));
    stdout(&o)
}

fn state_path(home: &Home) -> PathBuf {
    home.path("state.json")
}

/// The state file parsed as a JSON object (it must parse).
fn state_file(home: &Home) -> serde_json::Map<String, Value> {
    let bytes = std::fs::read(state_path(home)).expect("state.json exists");
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => m,
        other => panic!("state.json is not a JSON object: {other:?}\n{}", String::from_utf8_lossy(&bytes)),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// `kill -9` the kernel `id` and waits until it is gone; returns its pid.
fn kill9(home: &Home, id: &str) -> i32 {
    let pid = home.kernel_pid(id).expect("a kernel connection file with a pid");
    assert!(process_alive(pid), "kernel {id} (pid {pid}) is not running");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9 {pid}");
    assert!(wait_until(Duration::from_secs(30), || !process_alive(pid)), "kernel {pid} survived kill -9");
    pid
}

/// Keys of the store as the CLI lists them.
fn cli_list(home: &Home, prefix: Option<&str>) -> Vec<String> {
    let mut args = vec!["state", "list"];
    args.extend(prefix);
    ok(home, &args, "").lines().map(str::to_owned).collect()
}

/// `llmspell state get KEY` parsed as JSON (the key must exist).
fn cli_get(home: &Home, key: &str) -> Value {
    let text = ok(home, &["state", "get", key], "");
    assert_eq!(text.lines().count(), 1, "`state get` prints one line: {text:?}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("`state get {key}` is not JSON ({e}): {text:?}"))
}

/// Files in the home other than the kernels directory.
fn home_files(home: &Home) -> BTreeSet<String> {
    std::fs::read_dir(&home.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "kernels" && !n.ends_with(".lua"))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Lua API
// ------------------------------------------------------------------------------------------------

#[test]
fn lua_set_get_delete_keys_clear_update() {
    let home = Home::new("state-api");
    // Everything in one cell sees its own pending changes.
    cell(
        &home,
        "default",
        r#"
        state.set("b", 2); state.set("a", 1); state.set("c.2", 22); state.set("c.1", 21); state.set("ca", 3)
        check(state.keys(), {"a", "b", "c.1", "c.2", "ca"}, "keys() sorted")
        check(state.keys("c."), {"c.1", "c.2"}, "keys('c.')")
        check(state.keys("c"), {"c.1", "c.2", "ca"}, "keys('c')")
        check(state.keys("zz"), {}, "keys('zz')")
        check(state.get("a"), 1, "get a")
        check(state.get("missing"), nil, "get missing")
        check(state.get("missing", "dflt"), "dflt", "get with default")
        check(state.get("a", 99), 1, "get present with default")
        state.set("no", false)
        check(state.get("no", true), false, "a stored false is not replaced by the default")
        check(state.delete("b"), true, "delete existing")
        check(state.delete("b"), false, "delete again")
        check(state.delete("never"), false, "delete never set")
        check(state.update("ctr", function(old) check(old, nil, "update old"); return 1 end), 1, "update new")
        check(state.update("ctr", function(old) return old + 1 end), 2, "update increments")
        check(state.get("ctr"), 2, "get after update")
        check(state.update("gone", function(old) return nil end), nil, "update to nil")
        "#,
    );
    // The next cell sees the committed result; deleting a committed key reports it existed.
    cell(
        &home,
        "default",
        r#"
        check(state.keys(), {"a", "c.1", "c.2", "ca", "ctr", "no"}, "committed keys")
        check(state.update("ctr", function(old) return old * 10 end), 20, "update committed")
        check(state.update("ctr", function(old) return nil end), nil, "update deletes")
        check(state.get("ctr"), nil, "deleted by update")
        check(state.delete("ca"), true, "delete committed")
        check(state.delete("ca"), false, "delete committed again")
        "#,
    );
    let file = state_file(&home);
    assert_eq!(file.keys().collect::<Vec<_>>(), ["a", "c.1", "c.2", "no"]);
    // Another writer's change is seen by update and get in the running kernel.
    ok(&home, &["state", "set", "ctr", "10"], "");
    cell(
        &home,
        "default",
        r#"check(state.update("ctr", function(v) return v + 1 end), 11, "update after CLI")"#,
    );
    // clear removes everything, sets after it in the same cell apply.
    cell(
        &home,
        "default",
        r#"
        state.clear()
        check(state.keys(), {}, "keys after clear")
        check(state.get("a"), nil, "get after clear")
        state.set("after", 1)
        check(state.keys(), {"after"}, "keys after clear and set")
        "#,
    );
    assert_eq!(Value::Object(state_file(&home)), json!({"after": 1}));
    ok(&home, &["kernel", "stop"], "");
    cell(&home, "default", r#"check(state.keys(), {"after"}, "keys in a new kernel")"#);
}

/// The values of every storable kind; defined once, set by one kernel and compared by the next.
const VALUES: &str = r#"
local all = {}
for i = 0, 255 do all[#all + 1] = string.char(i) end
local V = {
  t = true, f = false,
  i = 42, neg = -7, zero = 0, imax = math.maxinteger, imin = math.mininteger,
  one = 1.0, tenth = 0.1, negzero = -0.0, third = 1 / 3, big = 1e300, tiny = 5e-324,
  f2p53 = 2.0 ^ 53, f2p63 = 2.0 ^ 63, negf = -2.5,
  s = "hello", empty = "", bytes = "\0\255\1", bad_utf8 = "\xff\xfe\xc3(", all = table.concat(all),
  unicode = "héllo ✓ 日本", tagged_text = '{"$base64": "AA=="}', dollar = "$base64",
  arr = {1, 2.5, "x", false, {3, {4.0}}, "\0"},
  map = {a = {b = {c = "d"}}, ["with space"] = 1, [""] = "empty inner key", bin = "\255"},
  two_keys_with_tag = {["$base64"] = "AA==", other = 1},
  emptyt = {},
  arr_of_maps = {{k = 1}, {k = 2.0}},
}
"#;

#[test]
fn every_value_kind_round_trips_through_a_kernel_restart() {
    let home = Home::new("state-values");
    cell(&home, "default", r#"state.set("gone", 1); state.set("gone2", 2)"#);
    cell(
        &home,
        "default",
        &format!(
            r#"{VALUES}
            for k, v in pairs(V) do state.set(k, v) end
            state.set("gone", nil)                            -- nil deletes (committed key)
            state.set("gone2", {{}}); state.set("gone2", nil) -- nil deletes (pending key)
            -- the same cell already reads them back exactly
            for k, v in pairs(V) do check(state.get(k), v, "pending " .. k) end
            check(state.get("gone"), nil, "gone")
            "#
        ),
    );
    let file = state_file(&home);
    assert!(!file.contains_key("gone") && !file.contains_key("gone2"), "nil must delete: {file:?}");
    assert!(file["i"].is_i64() && file["imax"].is_i64(), "integers are JSON integers");
    assert!(file["one"].is_f64() && file["f2p53"].is_f64(), "floats are JSON floats");
    let text = std::fs::read_to_string(state_path(&home)).unwrap();
    assert!(text.contains("\"one\": 1.0"), "1.0 is written as a float: {text}");
    assert_eq!(file["bytes"], json!({"$base64": "AP8B"}));

    ok(&home, &["kernel", "stop"], "");
    let out = cell(
        &home,
        "default",
        &format!(
            r#"{VALUES}
            for k, v in pairs(V) do check(state.get(k), v, k) end
            local n = 0
            for _ in pairs(V) do n = n + 1 end
            check(#state.keys(), n, "number of keys")
            check(state.get("gone"), nil, "gone")
            check(state.get("gone2"), nil, "gone2")
            check(math.type(state.get("i")), "integer", "math.type(i)")
            check(math.type(state.get("imax")), "integer", "math.type(imax)")
            check(math.type(state.get("one")), "float", "math.type(one)")
            check(math.type(state.get("tenth")), "float", "math.type(tenth)")
            assert(state.get("one") == 1.0 and state.get("tenth") == 0.1, "exact floats")
            check(1 / state.get("negzero"), -math.huge, "sign of -0.0")
            assert(state.get("bytes") == "\0\255\1", "bytes")
            assert(state.get("bad_utf8") == "\xff\xfe\xc3(", "invalid UTF-8")
            assert(#state.get("all") == 256, "all bytes")
            check(math.type(state.get("arr")[5][2][1]), "float", "nested float")
            print("values ok")
            "#
        ),
    );
    assert!(out.contains("values ok"), "{out}");
}

/// A refused value or key raises a Lua error naming the key and the offending path, and changes
/// nothing: not the value, not the file.
#[test]
fn unstorable_values_are_refused_naming_key_and_path() {
    let home = Home::new("state-refuse");
    cell(&home, "default", r#"state.set("cfg", {ok = true}); state.set("keep", 1)"#);
    let before = std::fs::read(state_path(&home)).unwrap();
    let data = home.path("some-file.txt");
    std::fs::write(&data, "x").unwrap();
    let out = cell(
        &home,
        "default",
        &format!(
            r#"
            local f = assert(io.open("{data}"))
            assert(io.type(f) == "file" and type(f) == "userdata")
            local cyc = {{a = {{}}}}; cyc.a.back = cyc
            local self_ref = {{}}; self_ref.self = self_ref
            local deep = {{}}; local d = deep
            for i = 1, 200 do d.n = {{}}; d = d.n end
            local cases = {{
              {{ {{a = {{b = print}}}}, 'value.a.b is a function' }},
              {{ print, 'value is a function' }},
              {{ {{a = {{b = coroutine.create(function() end)}}}}, 'value.a.b is a thread' }},
              {{ {{a = {{b = f}}}}, 'value.a.b is a userdata' }},
              {{ f, 'value is a userdata' }},
              {{ {{x = 0 / 0}}, 'value.x is NaN' }},
              {{ 0 / 0, 'value is NaN' }},
              {{ math.huge, 'value is inf' }},
              {{ {{list = {{1, -math.huge}}}}, 'value.list[2] is -inf' }},
              {{ cyc, 'value.a.back' }},
              {{ self_ref, 'value.self' }},
              {{ {{1, 2, a = 3}}, 'value mixes' }},
              {{ {{m = {{1, a = 2}}}}, 'value.m mixes' }},
              {{ {{1, nil, 3}}, 'value[2] is nil' }},
              {{ {{[1] = 1, [3] = 3}}, 'key "cfg": value' }},
              {{ {{[true] = 1}}, 'value has the key' }},
              {{ {{[1.5] = 1}}, 'value has the key 1.5' }},
              {{ {{[0] = "z"}}, 'value has the key 0' }},
              {{ {{x = {{[print] = 1}}}}, 'value.x has the key' }},
              {{ {{n = {{1, {{f = print}}}}}}, 'value.n[2].f is a function' }},
              {{ {{["a b"] = {{print}}}}, 'value["a b"][1] is a function' }},
              {{ {{["$base64"] = "AA=="}}, '$base64' }},
              {{ deep, 'key "cfg": value.n.n' }},
            }}
            for i, case in ipairs(cases) do
              local ok, msg = pcall(state.set, "cfg", case[1])
              assert(not ok, "case " .. i .. " was accepted: " .. case[2])
              assert(type(msg) == "string", "case " .. i .. ": error is a " .. type(msg))
              assert(msg:find('state.set: key "cfg": ', 1, true), "case " .. i .. " does not name the key: " .. msg)
              assert(msg:find(case[2], 1, true), "case " .. i .. ": want " .. case[2] .. " in: " .. msg)
              check(state.get("cfg"), {{ok = true}}, "cfg after case " .. i)
            end
            -- update refuses what its function returns, and a failing function changes nothing
            local ok, msg = pcall(state.update, "cfg", function(old) return {{f = print}} end)
            assert(not ok and msg:find('key "cfg"', 1, true) and msg:find('value.f is a function', 1, true), tostring(msg))
            ok, msg = pcall(state.update, "cfg", function(old) return 0 / 0 end)
            assert(not ok and msg:find('key "cfg"', 1, true) and msg:find('NaN', 1, true), tostring(msg))
            ok, msg = pcall(state.update, "cfg", function(old) error("inside update") end)
            assert(not ok and tostring(msg):find("inside update", 1, true), tostring(msg))
            check(state.get("cfg"), {{ok = true}}, "cfg after refused updates")
            check(state.keys(), {{"cfg", "keep"}}, "keys after refusals")
            f:close()
            print("refusals ok")
            "#,
            data = data.display()
        ),
    );
    assert!(out.contains("refusals ok"), "{out}");
    assert_eq!(std::fs::read(state_path(&home)).unwrap(), before, "refused values changed the file");

    // Unprotected, the refusal is the cell's error, naming key and path; nothing is written.
    let o = failing_cell(&home, "default", r#"state.set("cfg", {a = {b = function() end}})"#);
    assert!(stderr(&o).contains(r#"state.set: key "cfg": value.a.b is a function"#), "{}", out_text(&o));
    assert_eq!(std::fs::read(state_path(&home)).unwrap(), before, "a refused set changed the file");
    // The same through `run`: the error points at the script's line.
    let o = script(
        &home,
        "default",
        "refuse.lua",
        "local x = 1\nstate.set(\"cfg\", {a = {b = print}})\n",
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(stderr(&o).contains(r#"state.set: key "cfg": value.a.b is a function"#), "{}", out_text(&o));
    assert_eq!(
        std::fs::read(state_path(&home)).unwrap(),
        before,
        "a refused set in a script changed the file"
    );
}

#[test]
fn bad_keys_are_refused_with_a_clear_error() {
    let home = Home::new("state-keys");
    cell(&home, "default", r#"state.set("keep", 1)"#);
    let before = std::fs::read(state_path(&home)).unwrap();
    let out = cell(
        &home,
        "default",
        r#"
        local bad = {
          {"", "empty"},
          {1, "got integer"},
          {1.5, "got number"},
          {true, "got boolean"},
          {{}, "got table"},
          {print, "got function"},
          {string.rep("k", 4097), "4097 bytes"},
          {"\xff", "UTF-8"},
        }
        local fns = {
          set = function(k) return state.set(k, 1) end,
          get = function(k) return state.get(k) end,
          delete = function(k) return state.delete(k) end,
          update = function(k) return state.update(k, function() return 1 end) end,
        }
        for i, case in ipairs(bad) do
          for name, f in pairs(fns) do
            local ok, msg = pcall(f, case[1])
            assert(not ok, "state." .. name .. " accepted bad key " .. i)
            msg = tostring(msg)
            assert(msg:find("state." .. name .. ": ", 1, true), "state." .. name .. " key " .. i .. ": " .. msg)
            assert(msg:find(case[2], 1, true), "state." .. name .. " key " .. i .. ": want " .. case[2] .. " in: " .. msg)
          end
        end
        local ok, msg = pcall(state.get, nil)
        assert(not ok and tostring(msg):find("got nil", 1, true), tostring(msg))
        check(state.keys(), {"keep"}, "keys after bad keys")
        print("bad keys ok")
        "#,
    );
    assert!(out.contains("bad keys ok"), "{out}");
    // Unprotected, the error is the cell's, at the caller's line.
    let o = failing_cell(&home, "default", "local x = 1\nstate.set(\"\", x)");
    assert!(stderr(&o).contains(":2: state.set: bad state key: keys must not be empty"), "{}", out_text(&o));
    let o = failing_cell(&home, "default", "state.get(42)");
    assert!(stderr(&o).contains(":1: state.get: keys must be strings, got integer"), "{}", out_text(&o));
    assert_eq!(std::fs::read(state_path(&home)).unwrap(), before, "refused keys changed the file");
    // 4096 bytes is the limit, inclusive; a long key round-trips through a new kernel.
    cell(&home, "default", r#"state.set(string.rep("k", 4095) .. "z", "long")"#);
    ok(&home, &["kernel", "stop"], "");
    cell(&home, "default", r#"check(state.get(string.rep("k", 4095) .. "z"), "long", "4096-byte key")"#);
}

/// The state functions return exactly their documented values: `get`, `delete`, `keys` and `update`
/// one, `set` and `clear` none (like `table.insert`), so typing `state.set(k, v)` in the REPL or
/// `exec` shows nothing rather than "nil".
#[test]
fn state_functions_return_exactly_their_values() {
    let home = Home::new("state-arity");
    let out = ok(&home, &["exec", r#"state.set("a", 1)"#], "");
    assert_eq!(out, "", "state.set shows nothing in the session");
    let out = ok(&home, &["exec", "state.clear()"], "");
    assert_eq!(out, "", "state.clear shows nothing in the session");
    ok(&home, &["exec", r#"state.set("a", 1)"#], "");
    let out = ok(&home, &["exec", r#"print(state.get("a"))"#], "");
    assert_eq!(out, "1\n");
    cell(
        &home,
        "default",
        r##"
        check(select("#", state.set("b", 2)), 0, "values of state.set")
        check(select("#", state.get("a")), 1, "values of state.get")
        check(select("#", state.get("nope", 3)), 1, "values of state.get with default")
        check(select("#", state.keys()), 1, "values of state.keys")
        check(select("#", state.delete("b")), 1, "values of state.delete")
        check(select("#", state.update("a", function(v) return v + 1 end)), 1, "values of state.update")
        check(select("#", state.clear()), 0, "values of state.clear")
        "##,
    );
}

// ------------------------------------------------------------------------------------------------
// Sharing and durability across clients, stops and kill -9
// ------------------------------------------------------------------------------------------------

#[test]
fn repl_sets_run_reads_across_stop_and_kill() {
    let home = Home::new("state-repl-run");
    let out = ok(
        &home,
        &["repl"],
        "state.set(\"from_repl\", {list = {1, 2, 3}, flag = true, name = \"repl\", f = 1.0})\nrepl_global = 7\n",
    );
    assert!(!out.contains("Error"), "{out}");
    let reader = r#"
        local v = state.get("from_repl")
        check(v, {list = {1, 2, 3}, flag = true, name = "repl", f = 1.0}, "from_repl")
        check(repl_global, nil, "run has fresh globals")
        print("read ok")
    "#;
    assert!(script_ok(&home, "default", "read1.lua", reader).contains("read ok"));
    let first = home.kernel_pid("default").unwrap();

    // A clean stop, then a new kernel.
    ok(&home, &["kernel", "stop"], "");
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(first)),
        "kernel {first} still running after stop"
    );
    assert_eq!(home.run(&["kernel", "status"], "").status.code(), Some(1), "no kernel after stop");
    assert!(script_ok(&home, "default", "read2.lua", reader).contains("read ok"));
    let second = home.kernel_pid("default").unwrap();
    assert_ne!(first, second, "a new kernel was started");

    // Values set in cells that replied survive kill -9, whichever client set them.
    ok(&home, &["repl"], "state.set(\"repl2\", \"x\")\n");
    ok(&home, &["exec", r#"state.set("exec1", {a = "b"})"#], "");
    script_ok(&home, "default", "set.lua", r#"state.set("run1", 2.5)"#);
    ok(&home, &["exec", r#"state.set("exec2", 3); state.delete("repl2")"#], "");
    assert_eq!(kill9(&home, "default"), second);
    let out = script_ok(
        &home,
        "default",
        "read3.lua",
        &format!(
            r#"{reader}
            check(state.get("exec1"), {{a = "b"}}, "exec1")
            check(state.get("run1"), 2.5, "run1")
            check(state.get("exec2"), 3, "exec2")
            check(state.get("repl2"), nil, "repl2 deleted")
            print("after kill ok")
            "#
        ),
    );
    assert!(out.contains("after kill ok"), "{out}");
    assert_ne!(home.kernel_pid("default").unwrap(), second, "a new kernel after kill -9");
}

#[test]
fn run_scripts_share_state_across_runs_and_kernels() {
    let home = Home::new("state-run-share");
    script_ok(&home, "default", "a.lua", r#"state.set("shared", {count = 1, who = {"a"}}); leaked = true"#);
    script_ok(
        &home,
        "default",
        "b.lua",
        r#"
        check(leaked, nil, "fresh globals")
        local v = state.get("shared")
        check(v, {count = 1, who = {"a"}}, "shared in b")
        v.count = v.count + 1; v.who[#v.who + 1] = "b"
        state.set("shared", v)
        "#,
    );
    // A different kernel sees what the first one committed, and the first sees its change.
    script_ok(
        &home,
        "other",
        "c.lua",
        r#"
        local v = state.get("shared")
        check(v, {count = 2, who = {"a", "b"}}, "shared in kernel other")
        v.count = 3; v.who[3] = "c"
        state.set("shared", v)
        "#,
    );
    script_ok(
        &home,
        "default",
        "d.lua",
        r#"check(state.get("shared"), {count = 3, who = {"a", "b", "c"}}, "shared back in default")"#,
    );
    assert_ne!(home.kernel_pid("default"), home.kernel_pid("other"), "two kernels");
}

// ------------------------------------------------------------------------------------------------
// Concurrency between kernels (and the CLI)
// ------------------------------------------------------------------------------------------------

/// Waits (inside Lua, at most 60 s) until `n` scripts have reached this point, so the loops that
/// follow overlap.
fn barrier(n: usize) -> String {
    format!(
        r#"
        state.update("ready", function(v) return (v or 0) + 1 end)
        local t0 = os.time()
        while state.get("ready") < {n} do
          assert(os.time() - t0 < 60, "the other kernels never started")
        end
        "#
    )
}

#[test]
fn two_kernels_updating_one_counter_reach_the_exact_total() {
    let home = Home::new("state-counter");
    let code = format!(
        r#"{}
        local got = {{}}
        for i = 1, 1000 do
          got[#got + 1] = (state.update("n", function(v) return (v or 0) + 1 end))
        end
        print(table.concat(got, " "))
        "#,
        barrier(2)
    );
    let outs = script_in_kernels_a_and_b(&home, "count", &code, false);
    let mut all = Vec::new();
    for o in &outs {
        assert!(o.status.success(), "{}", out_text(o));
        let seen: Vec<u64> = stdout(o).split_whitespace().map(|w| w.parse().unwrap()).collect();
        assert_eq!(seen.len(), 1000, "{}", out_text(o));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "each kernel sees the counter grow");
        all.extend(seen);
    }
    all.sort();
    assert_eq!(all, (1..=2000).collect::<Vec<u64>>(), "every increment saw a distinct value");
    assert_eq!(cli_get(&home, "n"), json!(2000));
    cell(&home, "a", r#"check(state.get("n"), 2000, "n in kernel a")"#);
    let (a, b) = (home.kernel_pid("a").unwrap(), home.kernel_pid("b").unwrap());
    assert_ne!(a, b, "two kernel processes");
    assert!(process_alive(a) && process_alive(b));
}

#[test]
fn two_kernels_setting_different_keys_lose_none() {
    let home = Home::new("state-merge");
    // Sets stay pending until the next update (every third step) or the end (the last two sets):
    // many interleaved commits, through both update and the end-of-script flush.
    let code = format!(
        r#"{}
        local id = arg[1]
        for i = 1, 300 do
          state.set(id .. ".s" .. i, i)
          if i % 3 == 1 then state.update(id .. ".u" .. i, function(v) assert(v == nil); return {{i = i}} end) end
        end
        "#,
        barrier(2)
    );
    let outs = script_in_kernels_a_and_b(&home, "keys", &code, true);
    for o in &outs {
        assert!(o.status.success(), "{}", out_text(o));
    }
    let file = state_file(&home);
    for id in ["a", "b"] {
        for i in 1..=300 {
            assert_eq!(file.get(&format!("{id}.s{i}")), Some(&json!(i)), "{id}.s{i} lost");
            if i % 3 == 1 {
                assert_eq!(file.get(&format!("{id}.u{i}")), Some(&json!({"i": i})), "{id}.u{i} lost");
            }
        }
    }
    assert_eq!(file.len(), 2 * 400 + 1, "exactly the keys written (plus `ready`)");
}

#[test]
fn kernels_and_cli_writing_concurrently_lose_no_key() {
    let home = Home::new("state-merge-cli");
    ok(&home, &["--kernel", "a", "exec", "return 1"], "");
    ok(&home, &["--kernel", "b", "exec", "return 1"], "");
    const N: usize = 40;
    std::thread::scope(|s| {
        for id in ["a", "b"] {
            let home = &home;
            s.spawn(move || {
                for i in 1..=N {
                    ok(home, &["--kernel", id, "exec", &format!(r#"state.set("{id}.{i}", {i})"#)], "");
                }
            });
        }
        let home = &home;
        s.spawn(move || {
            for i in 1..=N {
                ok(home, &["state", "set", &format!("cli.{i}"), &i.to_string()], "");
            }
        });
    });
    for prefix in ["a.", "b.", "cli."] {
        let keys = cli_list(&home, Some(prefix));
        assert_eq!(keys.len(), N, "keys {prefix}*: {keys:?}");
    }
    let file = state_file(&home);
    assert_eq!(file.len(), 3 * N);
    for (k, v) in &file {
        let i: i64 = k.rsplit('.').next().unwrap().parse().unwrap();
        assert_eq!(v, &json!(i), "{k}");
    }
}

// ------------------------------------------------------------------------------------------------
// CLI
// ------------------------------------------------------------------------------------------------

#[test]
fn cli_and_lua_see_each_others_writes() {
    let home = Home::new("state-cli");
    // Lua writes (a kernel keeps running throughout).
    cell(
        &home,
        "default",
        r#"
        state.set("n", 1); state.set("f", 1.5); state.set("one", 1.0); state.set("s", "text")
        state.set("bytes", "\0\255\1"); state.set("nested", {a = {1, 2, {b = true}}})
        state.set("cfg.x", 1); state.set("cfg.y", 2)
        "#,
    );
    assert_eq!(cli_get(&home, "n"), json!(1));
    assert!(cli_get(&home, "n").is_i64());
    assert_eq!(ok(&home, &["state", "get", "one"], "").trim(), "1.0", "a float stays a float");
    assert!(cli_get(&home, "one").is_f64());
    assert_eq!(cli_get(&home, "f"), json!(1.5));
    assert_eq!(cli_get(&home, "s"), json!("text"));
    assert_eq!(cli_get(&home, "bytes"), json!({"$base64": "AP8B"}));
    assert_eq!(cli_get(&home, "nested"), json!({"a": [1, 2, {"b": true}]}));
    assert_eq!(cli_list(&home, None), ["bytes", "cfg.x", "cfg.y", "f", "n", "nested", "one", "s"]);
    assert_eq!(cli_list(&home, Some("cfg.")), ["cfg.x", "cfg.y"]);
    assert_eq!(cli_list(&home, Some("zzz")), Vec::<String>::new());
    let expected = json!({
        "bytes": {"$base64": "AP8B"}, "cfg.x": 1, "cfg.y": 2, "f": 1.5, "n": 1,
        "nested": {"a": [1, 2, {"b": true}]}, "one": 1.0, "s": "text"
    });
    let exported: Value = serde_json::from_str(&ok(&home, &["state", "export"], "")).expect("export is JSON");
    assert_eq!(exported, expected);
    let export_file = home.path("export.json");
    ok(&home, &["state", "export", export_file.to_str().unwrap()], "");
    let exported: Value = serde_json::from_slice(&std::fs::read(&export_file).unwrap()).unwrap();
    assert_eq!(exported, expected);

    // CLI writes, seen by the same running kernel (it had the file cached).
    ok(&home, &["state", "set", "n", "5"], "");
    ok(&home, &["state", "set", "fromcli", r#"{"list": [1, 2.0, "y"], "flag": false}"#], "");
    ok(&home, &["state", "set", "bin", r#"{"$base64": "AP8B"}"#], "");
    ok(&home, &["state", "set", "stdin", "-"], "[1, 2]\n");
    ok(&home, &["state", "set", "f", "null"], "");
    assert_eq!(ok(&home, &["state", "delete", "s"], ""), "");
    assert_eq!(home.run(&["state", "delete", "s"], "").status.code(), Some(1), "delete of a missing key");
    cell(
        &home,
        "default",
        r#"
        check(state.get("n"), 5, "n")
        check(state.get("fromcli"), {list = {1, 2.0, "y"}, flag = false}, "fromcli")
        check(state.get("bin"), "\0\255\1", "bin")
        check(state.get("stdin"), {1, 2}, "stdin")
        check(state.get("f"), nil, "f deleted by null")
        check(state.get("s"), nil, "s deleted")
        check(state.keys("cfg."), {"cfg.x", "cfg.y"}, "untouched keys")
        "#,
    );

    // import merges (null deletes), and Lua sees it.
    let import =
        write_file(&home.dir, "import.json", r#"{"imp1": 1, "imp2": {"a": "b"}, "n": null, "one": 2.0}"#);
    ok(&home, &["state", "import", import.to_str().unwrap()], "");
    cell(
        &home,
        "default",
        r#"
        check(state.get("imp1"), 1, "imp1"); check(state.get("imp2"), {a = "b"}, "imp2")
        check(state.get("n"), nil, "n deleted by import"); check(state.get("one"), 2.0, "one")
        check(state.get("nested"), {a = {1, 2, {b = true}}}, "nested kept")
        state.set("luaafter", "L")
        "#,
    );
    assert_eq!(cli_get(&home, "luaafter"), json!("L"));

    // Bad input: exit 2, one line, nothing changed; a missing key: exit 1, no output.
    let before = std::fs::read(state_path(&home)).unwrap();
    let o = home.run(&["state", "set", "k", "not json"], "");
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "one-line error: {:?}", stderr(&o));
    assert!(stderr(&o).contains("JSON"), "{}", out_text(&o));
    assert_eq!(stdout(&o), "");
    let o = home.run(&["state", "set", "k", "{\"a\": 1"], "");
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "one-line error: {:?}", stderr(&o));
    let o = home.run(&["state", "get", "missing"], "");
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert_eq!(stdout(&o), "");
    let o = home.run(&["state", "set", "", "1"], "");
    assert!(!o.status.success(), "an empty key is refused: {}", out_text(&o));
    assert_eq!(std::fs::read(state_path(&home)).unwrap(), before, "failed commands changed the file");

    // clear
    ok(&home, &["state", "clear"], "");
    assert_eq!(cli_list(&home, None), Vec::<String>::new());
    cell(&home, "default", r#"check(state.keys(), {}, "keys after CLI clear")"#);
    assert_eq!(Value::Object(state_file(&home)), json!({}));
    assert!(home.kernel_pid("default").is_some_and(process_alive), "the kernel ran throughout");
}

// ------------------------------------------------------------------------------------------------
// Batching
// ------------------------------------------------------------------------------------------------

/// The state file is replaced by rename, so every commit gives it a new inode. The cell compares
/// the file's bytes before and after its loop (no write during the cell); the test holds the old
/// version open (so its inode cannot be recycled) and checks the inode changed across the cell
/// (one write at the end), and that cells without state writes do not touch the file.
#[test]
fn a_cell_setting_100000_keys_writes_the_file_once() {
    let home = Home::new("state-batch");
    cell(&home, "default", r#"state.set("seed", 0)"#);
    let path = state_path(&home);
    let old = std::fs::File::open(&path).unwrap();
    let before = old.metadata().unwrap();
    let started = Instant::now();
    let out = cell(
        &home,
        "default",
        &format!(
            r#"
            local function read() local f = assert(io.open("{path}", "rb")); local s = f:read("a"); f:close(); return s end
            local at_start = read()
            for i = 1, 100000 do state.set("k" .. i, i) end
            assert(read() == at_start, "state.json was rewritten during the cell")
            assert(state.get("k100000") == 100000)
            print("keys " .. #state.keys("k"))
            "#,
            path = path.display()
        ),
    );
    assert!(out.contains("keys 100000"), "{out}");
    eprintln!("a cell setting 100 000 keys took {:?}", started.elapsed());
    let after = std::fs::metadata(&path).unwrap();
    assert_ne!(after.ino(), before.ino(), "the file was not rewritten after the cell");
    let file = state_file(&home);
    assert_eq!(file.len(), 100_001);
    assert_eq!(file["k77777"], json!(77777));
    drop(old);

    // Cells that only read, or do nothing with state, leave the file alone.
    let held = std::fs::File::open(&path).unwrap();
    let stamp = |m: &std::fs::Metadata| (m.ino(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
    let before = stamp(&held.metadata().unwrap());
    cell(&home, "default", r#"assert(state.get("k1") == 1); assert(#state.keys("k9") > 0)"#);
    cell(&home, "default", "x = 1");
    assert_eq!(stamp(&std::fs::metadata(&path).unwrap()), before, "a cell without writes rewrote the file");
    drop(held);
}

// ------------------------------------------------------------------------------------------------
// Durability under kill -9
// ------------------------------------------------------------------------------------------------

/// Each version is `{n = n, s = string.rep(n .. ";", REPS)}`: `s` is derived from `n`, so a torn or
/// mixed file is caught; ~100 KB, so a write takes many syscalls and a non-atomic one would be seen.
const REPS: usize = 20_000;

fn version_lua() -> String {
    format!(r#"local function version(n) return {{n = n, s = string.rep(n .. ";", {REPS})}} end"#)
}

/// The version in the state file: `Ok(None)` before the first commit, `Err` if the file does not
/// parse or is not one self-consistent version (never panics: used while writers run).
fn read_version(home: &Home) -> Result<Option<u64>, String> {
    let bytes = match std::fs::read(state_path(home)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read state.json: {e}")),
    };
    let file: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("state.json ({} bytes) does not parse: {e}", bytes.len()))?;
    let Some(x) = file.get("x") else {
        return if file.is_empty() { Ok(None) } else { Err(format!("unexpected keys {:?}", file.keys())) };
    };
    if file.len() != 1 {
        return Err(format!("unexpected keys {:?}", file.keys()));
    }
    let n = x["n"].as_u64().ok_or_else(|| format!("x.n is not a count: {}", x["n"]))?;
    if x["s"].as_str() != Some(format!("{n};").repeat(REPS).as_str()) {
        return Err(format!("inconsistent version: x.s does not belong to x.n = {n}"));
    }
    Ok(Some(n))
}

#[test]
fn kill_9_during_writes_leaves_a_committed_version() {
    let home = Home::new("state-kill9");
    // Workload 1: one `run` script; each state.update commits at once and is then printed.
    let updater = write_file(
        &home.dir,
        "updater.lua",
        &format!(
            r#"{}
            while true do
              local v = state.update("x", function(v) return version((v and v.n or 0) + 1) end)
              print(v.n)
            end
            "#,
            version_lua()
        ),
    );
    // Workload 2: repeated cells, each a loop of 100 sets (committed once, before the reply).
    let cell_code = format!(
        r#"{}
        local v = state.get("x"); local n = v and v.n or 0
        for i = n + 1, n + 100 do state.set("x", version(i)) end
        return n + 100
        "#,
        version_lua()
    );
    let mut floor = 0;
    for round in 0..16u64 {
        ok(&home, &["exec", "return 1"], ""); // a live kernel
        let pid = home.kernel_pid("default").unwrap();
        let delay = Duration::from_millis(round * 37 % 150);
        let acked = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let reading = AtomicBool::new(true);
        let (progressed, observed) = std::thread::scope(|s| {
            // A reader polls the file throughout: every read must be one whole committed version,
            // never older than one seen before.
            let observer = {
                let (home, reading) = (&home, &reading);
                s.spawn(move || -> Result<usize, String> {
                    let (mut last, mut reads) = (floor, 0);
                    while reading.load(Ordering::SeqCst) {
                        if let Some(n) = read_version(home)? {
                            if n < last {
                                return Err(format!("the file went back from version {last} to {n}"));
                            }
                            last = n;
                        }
                        reads += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok(reads)
                })
            };
            let worker = if round % 2 == 0 {
                let mut child = home
                    .cmd(&["run", updater.to_str().unwrap()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let out = child.stdout.take().unwrap();
                let acked = &acked;
                let reader = s.spawn(move || {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        if let Ok(n) = line.trim().parse::<u64>() {
                            acked.fetch_max(n, Ordering::SeqCst);
                        }
                    }
                });
                s.spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    loop {
                        if child.try_wait().unwrap().is_some() {
                            break;
                        }
                        if Instant::now() > deadline {
                            let _ = child.kill();
                            let _ = child.wait();
                            panic!("`llmspell run` did not end after its kernel was killed");
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    reader.join().unwrap();
                })
            } else {
                let (home, acked, stop, cell_code) = (&home, &acked, &stop, &cell_code);
                s.spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let o = home.run(&["exec", cell_code], "");
                        if o.status.success() {
                            acked.fetch_max(
                                stdout(&o).trim().parse().expect("exec returns n"),
                                Ordering::SeqCst,
                            );
                        }
                    }
                })
            };
            // Wait for the workload to commit something, then kill at a varied moment.
            let progressed = wait_until(
                Duration::from_secs(60),
                || matches!(read_version(&home), Ok(Some(n)) if n > floor),
            );
            if progressed {
                std::thread::sleep(delay);
            }
            stop.store(true, Ordering::SeqCst);
            let killed = kill9(&home, "default");
            let worker_result = worker.join();
            reading.store(false, Ordering::SeqCst);
            let observed = observer.join().unwrap();
            assert_eq!(killed, pid, "the killed kernel is the one the workload used");
            assert!(worker_result.is_ok(), "round {round}: the workload failed");
            (progressed, observed)
        });
        let reads = observed.unwrap_or_else(|e| panic!("round {round}: a reader saw a bad state file: {e}"));
        assert!(progressed, "round {round}: the workload never committed");
        let n = read_version(&home)
            .unwrap_or_else(|e| panic!("round {round}: after kill -9: {e}"))
            .expect("a committed version");
        let acked = acked.load(Ordering::SeqCst);
        eprintln!("round {round}: killed {delay:?} after the first commit; file n = {n}, acknowledged {acked}, {reads} reads");
        assert!(n >= acked, "round {round}: version {acked} was acknowledged but the file holds {n}");
        assert!(n > floor, "round {round}: nothing committed ({n} <= {floor})");
        // A new kernel sees exactly the committed version.
        let seen = ok(
            &home,
            &[
                "exec",
                &format!(
                    r#"local v = state.get("x"); assert(v.s == string.rep(v.n .. ";", {REPS})); return v.n"#
                ),
            ],
            "",
        );
        assert_eq!(seen.trim(), n.to_string(), "round {round}: a new kernel sees another version");
        floor = n;
    }
}

// ------------------------------------------------------------------------------------------------
// Corrupt and insecure files
// ------------------------------------------------------------------------------------------------

#[test]
fn corrupt_state_file_fails_state_calls_and_repair_fixes_it() {
    let home = Home::new("state-corrupt");
    ok(&home, &["state", "path"], ""); // makes the home private
    let path = state_path(&home);
    let garbage: &[u8] = b"{\"a\": 1,\n\"b\": \xff garbage";
    std::fs::write(&path, garbage).unwrap();
    chmod(&path, 0o600);
    let shown = path.display().to_string();

    let o = failing_cell(&home, "default", r#"return state.get("a")"#);
    let err = stderr(&o);
    assert!(err.contains(&format!("state.get: state file {shown} is corrupt")), "{err}");
    assert!(err.contains("not valid JSON"), "the problem is named: {err}");
    assert!(err.contains("llmspell state repair"), "{err}");
    let pid = home.kernel_pid("default").unwrap();

    // The kernel keeps serving; every state call fails naming the file; nothing is written.
    ok(&home, &["exec", "x = 6 * 7"], "");
    assert_eq!(ok(&home, &["exec", "return x"], "").trim(), "42");
    let out = cell(
        &home,
        "default",
        &format!(
            r#"
            local calls = {{
              set = function() return state.set("b", 2) end,
              get = function() return state.get("a", 0) end,
              delete = function() return state.delete("a") end,
              keys = function() return state.keys() end,
              clear = function() return state.clear() end,
              update = function() return state.update("a", function(v) return 1 end) end,
            }}
            for name, f in pairs(calls) do
              local ok, msg = pcall(f)
              assert(not ok, "state." .. name .. " worked on a corrupt file")
              assert(tostring(msg):find("state." .. name .. ": state file {shown} is corrupt", 1, true), tostring(msg))
            end
            print("all refused")
            "#
        ),
    );
    assert!(out.contains("all refused"), "{out}");
    failing_cell(&home, "default", r#"state.set("b", 2)"#);
    assert_eq!(home.kernel_pid("default"), Some(pid), "the same kernel serves on");
    assert!(process_alive(pid));
    for args in
        [&["state", "get", "a"][..], &["state", "set", "b", "2"], &["state", "list"], &["state", "export"]]
    {
        let o = home.run(args, "");
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", out_text(&o));
        assert!(stderr(&o).contains(&shown) && stderr(&o).contains("corrupt"), "{args:?}: {}", out_text(&o));
    }
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "the corrupt file was modified");
    let written: BTreeSet<String> =
        home_files(&home).into_iter().filter(|n| n != "state.json.lock").collect();
    assert_eq!(
        written,
        BTreeSet::from(["state.json".into()]),
        "no other file (not even a temporary one) written"
    );

    // repair moves it aside; state works again in the same kernel and in a new one.
    let o = home.run(&["state", "repair"], "");
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(!path.exists(), "repair left state.json in place");
    let aside: Vec<String> =
        home_files(&home).into_iter().filter(|n| n.starts_with("state.json.corrupt")).collect();
    assert_eq!(aside.len(), 1, "{:?}", home_files(&home));
    assert_eq!(std::fs::read(home.path(&aside[0])).unwrap(), garbage, "the file aside holds the old bytes");
    assert!(stderr(&o).contains(&aside[0]), "repair says where it went: {}", out_text(&o));
    cell(
        &home,
        "default",
        r#"state.set("b", 2); check(state.get("b"), 2, "b"); check(state.keys(), {"b"}, "keys")"#,
    );
    assert_eq!(Value::Object(state_file(&home)), json!({"b": 2}));
    ok(&home, &["kernel", "stop"], "");
    cell(&home, "default", r#"check(state.get("b"), 2, "b in a new kernel")"#);

    // Corrupted under a running kernel that had it cached: the same error, then repair.
    std::fs::write(&path, "[1, 2]").unwrap();
    let o = failing_cell(&home, "default", r#"return state.get("b")"#);
    assert!(stderr(&o).contains(&shown) && stderr(&o).contains("array"), "{}", out_text(&o));
    assert_eq!(std::fs::read(&path).unwrap(), b"[1, 2]");
    ok(&home, &["state", "repair"], "");
    cell(&home, "default", r#"check(state.keys(), {}, "empty after repair")"#);
}

#[test]
fn group_or_world_writable_state_file_is_refused() {
    let home = Home::new("state-insecure");
    cell(&home, "default", r#"state.set("a", 1)"#);
    let path = state_path(&home);
    let shown = path.display().to_string();
    for m in [0o666, 0o620, 0o602] {
        chmod(&path, m);
        let before = std::fs::read(&path).unwrap();
        let o = failing_cell(&home, "default", r#"return state.get("a")"#);
        let err = stderr(&o);
        assert!(err.contains(&format!("refusing to use {shown}")), "mode {m:o}: {err}");
        assert!(
            err.contains("writable by other users") && err.contains(&format!("{:03o}", m)),
            "mode {m:o}: {err}"
        );
        assert!(err.contains("chmod go-w"), "the fix is named: {err}");
        let o = failing_cell(&home, "default", r#"state.set("b", 2)"#);
        assert!(stderr(&o).contains("writable by other users"), "{}", out_text(&o));
        let o = home.run(&["state", "get", "a"], "");
        assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
        assert!(
            stderr(&o).contains(&shown) && stderr(&o).contains("writable by other users"),
            "{}",
            out_text(&o)
        );
        let o = home.run(&["state", "set", "c", "3"], "");
        assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
        assert_eq!(std::fs::read(&path).unwrap(), before, "an insecure file was written");
        assert_eq!(mode(&path), m, "the mode was changed behind the user's back");
        assert_eq!(ok(&home, &["exec", "return 1 + 1"], "").trim(), "2", "the kernel keeps serving");
    }
    chmod(&path, 0o600);
    cell(&home, "default", r#"check(state.get("a"), 1, "a after chmod go-w")"#);
}

/// A cell whose state changes could not be committed is told "state changes of this cell were not
/// saved"; those changes must then not be written behind the user's back by a later, unrelated cell.
#[test]
fn changes_reported_as_not_saved_are_not_written_later() {
    let home = Home::new("state-not-saved");
    cell(&home, "default", r#"state.set("a", 1)"#);
    let path = state_path(&home);
    chmod(&path, 0o666);
    let o = failing_cell(&home, "default", r#"state.set("z", 1)"#);
    assert!(stderr(&o).contains("state changes of this cell were not saved"), "{}", out_text(&o));
    chmod(&path, 0o600);
    ok(&home, &["exec", "x = 1"], "");
    assert_eq!(Value::Object(state_file(&home)), json!({"a": 1}), "the unsaved change was written later");
}

#[test]
fn state_file_is_private_pretty_json() {
    let home = Home::new("state-file");
    std::fs::remove_dir(&home.dir).unwrap(); // llmspell creates the home itself
    cell(&home, "default", r#"state.set("zeta", {list = {1, 2}, name = "z"}); state.set("alpha", "\255")"#);
    let path = state_path(&home);
    assert_eq!(mode(&path), 0o600, "state.json mode after a Lua write");
    assert_eq!(mode(&home.dir), 0o700, "LLMSPELL_HOME mode when llmspell created it");
    let text = std::fs::read_to_string(&path).expect("state.json is UTF-8 text");
    assert!(
        text.starts_with("{\n  \"alpha\": {\n    \"$base64\": \"/w==\"\n  },\n  \"zeta\": {\n"),
        "pretty, sorted, indented: {text}"
    );
    assert!(text.ends_with("}\n"), "ends with a newline: {text:?}");
    assert!(text.lines().count() > 8, "one item a line: {text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"alpha": {"$base64": "/w=="}, "zeta": {"list": [1, 2], "name": "z"}})
    );
    ok(&home, &["state", "set", "cli", r#"{"x": [1]}"#], "");
    assert_eq!(mode(&path), 0o600, "state.json mode after a CLI write");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("\n  \"cli\": {\n    \"x\": [\n      1\n    ]\n  },\n"));
    cell(&home, "default", r#"state.update("u", function() return 1 end)"#);
    assert_eq!(mode(&path), 0o600, "state.json mode after an update");
    assert_eq!(state_file(&home).len(), 4);
}

#[test]
fn state_help_creates_nothing_and_exports_are_as_private_as_the_store() {
    let home = Home::new("statehelp");
    std::fs::remove_dir_all(&home.dir).unwrap();
    for args in [&["state", "--help"][..], &["state"][..]] {
        let out = home.run(args, "");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(!home.dir.exists(), "{args:?} created {}", home.dir.display());
    }
    ok(&home, &["state", "set", "k", "1"], "");
    let export = home.path("export.json");
    ok(&home, &["state", "export", export.to_str().unwrap()], "");
    assert_eq!(mode(&export), 0o600, "state export wrote {:o}", mode(&export));
    assert!(std::fs::read_to_string(&export).unwrap().contains("\"k\": 1"));
}
