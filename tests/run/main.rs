//! `llmspell run` is `lua`: differential tests against the stock `lua5.4` (same scripts, stdin, args,
//! environment and directory; stdout, exit status and stderr compared, the program name in error
//! messages normalised), plus the cases a stock interpreter has no counterpart for: isolation between
//! runs and from the session, a killed client, SIGPIPE, SIGINT, concurrency.
//!
//! Tests that need `lua5.4` print a notice and pass when it is absent (`.ci/run` installs it).
//! No timings are asserted: every wait is on an event, with generous deadlines.
//!
//! One module per area: `stock_lua` (the differential tests), `restart` (scripts that start their
//! interpreter again), `isolation`, `signals`, `concurrency`.
//! Their shared helpers are here.

#[path = "../common/mod.rs"]
mod common;
mod concurrency;
mod isolation;
mod restart;
mod signals;
mod stock_lua;

use common::{process_alive, wait_until, write_file, Home, BIN};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const LUA: &str = "lua5.4";

fn have_lua() -> bool {
    let ok = Command::new(LUA)
        .args(["-e", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("NOTICE: {LUA} is not installed: differential test skipped (apt-get install lua5.4)");
    }
    ok
}

fn have_c_modules() -> bool {
    let ok = Command::new(LUA)
        .args(["-e", "require'lpeg' require'cjson'"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("NOTICE: lua-lpeg/lua-cjson are not installed: C module test skipped");
    }
    ok
}

/// One script run both ways.
struct Case<'a> {
    name: &'a str,
    script: &'a str,
    args: &'a [&'a str],
    stdin: &'a str,
    env: &'a [(&'a str, &'a str)],
    /// Extra files in the directory the script runs from.
    files: &'a [(&'a str, &'a str)],
}

impl<'a> Case<'a> {
    fn new(name: &'a str, script: &'a str) -> Case<'a> {
        Case { name, script, args: &[], stdin: "", env: &[], files: &[] }
    }
}

/// A clean environment for both interpreters: the test runner's own LUA_* variables must not leak in.
fn base_command(program: &str, home: &Home, dir: &Path) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir).env("LLMSPELL_HOME", &home.dir).env_remove("LLMSPELL_IDLE_TIMEOUT");
    for v in ["LUA_INIT", "LUA_INIT_5_4", "LUA_PATH", "LUA_PATH_5_4", "LUA_CPATH", "LUA_CPATH_5_4"] {
        c.env_remove(v);
    }
    c
}

fn run_with_stdin(mut c: Command, stdin: &str) -> Output {
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = input.write_all(&data);
    });
    let out = wait_output(child, Duration::from_secs(120));
    let _ = writer.join();
    out
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("did not finish within {limit:?}: stderr {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// stderr with either program name at the start of a line replaced by `lua`.
fn normalise(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(|l| {
            for p in [BIN, LUA] {
                if let Some(rest) = l.strip_prefix(&format!("{p}: ")) {
                    return format!("lua: {rest}");
                }
            }
            l.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn case_dir(home: &Home, case: &Case) -> PathBuf {
    let dir = home.dir.join("cases").join(case.name);
    std::fs::create_dir_all(&dir).unwrap();
    write_file(&dir, "script.lua", case.script);
    for (name, text) in case.files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// Runs the case with `llmspell run` and with `lua5.4` in fresh copies of its directory; compares.
fn differential(home: &Home, case: &Case) {
    let mut results = Vec::new();
    for program in [BIN, LUA] {
        let dir = case_dir(home, case);
        let mut c = base_command(program, home, &dir);
        if program == BIN {
            c.arg("run");
        }
        c.arg("script.lua").args(case.args);
        for (k, v) in case.env {
            c.env(k, v);
        }
        let out = run_with_stdin(c, case.stdin);
        let _ = std::fs::remove_dir_all(&dir);
        results.push(out);
    }
    let (ours, theirs) = (&results[0], &results[1]);
    let show = |o: &Output| {
        format!(
            "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let same = ours.stdout == theirs.stdout
        && ours.status.code() == theirs.status.code()
        && ours.status.signal() == theirs.status.signal()
        && normalise(&ours.stderr) == normalise(&theirs.stderr);
    assert!(
        same,
        "case {:?} differs\n=== llmspell run\n{}\n=== {LUA}\n{}",
        case.name,
        show(ours),
        show(theirs)
    );
}

fn llmspell_in(home: &Home, dir: &Path, args: &[&str]) -> Output {
    let mut c = base_command(BIN, home, dir);
    c.args(args);
    run_with_stdin(c, "")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_for_file(path: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before writing {}", path.display());
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn_in(program: &str, home: &Home, dir: &Path, args: &[&str]) -> Child {
    let mut c = base_command(program, home, dir);
    if program == BIN {
        c.arg("run");
    }
    c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.process_group(0).spawn().expect("spawn")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}
