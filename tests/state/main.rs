//! Integration tests of the persistent `state` store: the Lua API through real kernels, sharing
//! between `repl`, `run`, `exec`, kernels and the `llmspell state` CLI, durability across
//! `kernel stop` and `kill -9`, concurrency between kernels, batching, corrupt and insecure files.
//!
//! Every test uses a private LLMSPELL_HOME (`common::Home`); its kernels are stopped on drop.
//!
//! One module per area: `lua_api`, `sharing` (between clients, across stops and kill -9),
//! `concurrency` (between kernels and the CLI), `cli` (`llmspell state`), `durability` (batching and
//! kill -9 during writes), `files` (corrupt and insecure files). Their shared helpers are here.

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod concurrency;
mod durability;
mod files;
mod lua_api;
mod sharing;

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
