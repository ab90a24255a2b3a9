//! `llmspell run` is `lua`: differential tests against the stock `lua5.4` (same scripts, stdin, args,
//! environment and directory; stdout, exit status and stderr compared, the program name in error
//! messages normalised), plus the cases a stock interpreter has no counterpart for: isolation between
//! runs and from the session, a killed client, SIGPIPE, SIGINT, concurrency.
//!
//! Tests that need `lua5.4` print a notice and pass when it is absent (`.ci/run` installs it).
//! No timings are asserted: every wait is on an event, with generous deadlines.

mod common;

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

#[test]
fn the_standard_library_and_the_callers_context_match_stock_lua() {
    if !have_lua() {
        return;
    }
    let home = Home::new("run-diff");
    let cases = [
        Case {
            files: &[("data.txt", "beside the caller\n"), ("mymod.lua", "return { name = 'mymod here' }")],
            ..Case::new(
                "cwd",
                "print(io.open('data.txt'):read('a'))\n\
                 print(io.popen('pwd'):read('l'):match('[^/]*$'))\n\
                 print(require('mymod').name)",
            )
        },
        Case {
            env: &[("FOO", "second")],
            ..Case::new(
                "environment",
                "print(os.getenv('FOO'), os.getenv('NOPE_NOT_SET'))\n\
                 print(io.popen('echo child sees $FOO'):read('l'))\n\
                 io.stdout:flush() os.execute('echo os.execute sees $FOO')",
            )
        },
        Case {
            args: &["one", "two words", "--", "-x", ""],
            ..Case::new(
                "arg",
                "print(#arg, arg[0], select('#', ...), ...)\nfor i = 1, #arg do print(i, arg[i]) end",
            )
        },
        Case::new(
            "io_output_creates_the_file",
            "io.output('f.txt') io.write('x', 1, '\\n') io.close() io.output(io.stdout)\n\
             print(io.open('f.txt'):read('a'), io.type(io.stdout), io.output() == io.stdout)",
        ),
        Case {
            files: &[("in.txt", "first line\nsecond\n")],
            ..Case::new("io_input", "io.input('in.txt') print(io.read('l')) print(io.read('a'))")
        },
        Case::new("rawlen_of_a_file_handle", "print(pcall(rawlen, io.stdout))\nprint(rawlen(io.stderr))"),
        Case::new(
            "debug_hooks",
            "local n = 0\ndebug.sethook(function() n = n + 1 end, 'l')\nlocal x = 1\nx = x + 1\n\
             debug.sethook()\nprint(n, debug.gethook())\n\
             local f = function() end debug.sethook(f, 'c', 7) local h, m, c = debug.gethook()\n\
             debug.sethook() print(h == f, m, c)",
        ),
        Case::new("os_exit_code", "io.write('buffered') os.exit(3)"),
        Case::new("os_exit_true", "io.write('buffered') os.exit(true)"),
        Case::new(
            "os_exit_false_close",
            "setmetatable({}, {__gc = function() print('finalized') end}) io.write('buffered ') \
             os.exit(false, true)",
        ),
        Case::new("error_string", "local function f() error('boom') end\nf()"),
        Case::new("error_level_0", "error('no position', 0)"),
        Case::new("error_table", "error({ code = 1 })"),
        Case::new("error_nil", "error()"),
        Case::new("error_number", "error(42)"),
        Case::new(
            "error_tostring",
            "error(setmetatable({}, { __tostring = function() return 'custom' end }))",
        ),
        Case::new("syntax_error", "x = = 1"),
        Case::new(
            "runtime_error_in_pcall",
            "local ok, e = pcall(error, { 1 }) print(ok, type(e), e[1])\nprint(select(2, pcall(error, 'm')))",
        ),
        Case {
            stdin: "a\nbb\n\nlast without newline",
            ..Case::new(
                "stdin_lines_and_eof",
                "for l in io.lines() do print(#l, l) end print(io.read('a'), io.read('l'))",
            )
        },
        Case {
            stdin: "40 2.5 tail\nmore",
            ..Case::new("stdin_numbers", "print(io.read('n', 'n'), io.read('a'))")
        },
        Case::new(
            "coroutines_and_main_thread",
            "local co, main = coroutine.running() print(main, coroutine.isyieldable())\n\
             local c = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)\n\
             print(c(1), c(10))",
        ),
        Case::new(
            "string_metatable_and_globals",
            "print(getmetatable('').__index == string, type(_G), _VERSION, #package.searchers)\n\
             print(package.config:sub(1, 1), type(debug.getregistry()), collectgarbage('isrunning'))",
        ),
        Case::new("default_paths", "print(package.path) print(package.cpath)"),
        Case {
            env: &[("LUA_PATH", "./lib/?.lua;;"), ("LUA_CPATH_5_4", ";;./clib/?.so")],
            files: &[("lib/found.lua", "return 'found via LUA_PATH'")],
            ..Case::new("lua_path", "print(package.path) print(package.cpath) print(require('found'))")
        },
        Case { env: &[("LUA_INIT", "x = 5 print('init ran')")], ..Case::new("lua_init_code", "print(x)") },
        Case {
            env: &[("LUA_INIT_5_4", "@init.lua"), ("LUA_INIT", "error('not this one')")],
            files: &[("init.lua", "y = 'from init file'")],
            ..Case::new("lua_init_file", "print(y)")
        },
        Case { env: &[("LUA_INIT", "error('init fails')")], ..Case::new("lua_init_error", "print('never')") },
        Case::new(
            "stderr_and_stdout",
            "io.stderr:write('to stderr\\n') print('to stdout') io.stderr:write('again\\n')",
        ),
        Case::new(
            "print_uses_tostring",
            "print(setmetatable({}, {__tostring = function() return 'T' end}), nil, 1.5, 2^63)",
        ),
        Case::new(
            "to_be_closed_and_gc_at_normal_end",
            "local x <close> = setmetatable({}, {__close = function() print('closed') end})\n\
             setmetatable({}, {__gc = function() print('collected at close') end})",
        ),
    ];
    for case in &cases {
        differential(&home, case);
    }
}

#[test]
fn c_modules_load() {
    if !have_lua() || !have_c_modules() {
        return;
    }
    let home = Home::new("run-cmod");
    differential(
        &home,
        &Case::new(
            "c_modules",
            "local lpeg = require('lpeg') local cjson = require('cjson')\n\
             print((lpeg.C(lpeg.R('az')^1)):match('hello world'))\n\
             print(cjson.encode({ 1, 2, 3 }), cjson.decode('{\"a\":[true]}').a[1])",
        ),
    );
}

#[test]
fn missing_script_and_script_from_stdin_match_stock_lua() {
    if !have_lua() {
        return;
    }
    let home = Home::new("run-stdin");
    let mut results = Vec::new();
    for program in [BIN, LUA] {
        let dir = case_dir(&home, &Case::new("stdin_script", ""));
        let mut c = base_command(program, &home, &dir);
        if program == BIN {
            c.arg("run");
        }
        let from_stdin = run_with_stdin(
            {
                let mut c = base_command(program, &home, &dir);
                if program == BIN {
                    c.arg("run");
                }
                c.args(["-", "a1"]);
                c
            },
            "print('from stdin', ...) print(io.read('a'))",
        );
        c.arg("no-such-file.lua");
        let missing = run_with_stdin(c, "");
        results.push((from_stdin, missing));
    }
    for i in 0..2 {
        let pick = |r: &(Output, Output)| if i == 0 { r.0.clone() } else { r.1.clone() };
        let (a, b) = (pick(&results[0]), pick(&results[1]));
        assert_eq!(a.stdout, b.stdout);
        assert_eq!(a.status.code(), b.status.code());
        assert_eq!(normalise(&a.stderr), normalise(&b.stderr));
    }
}

#[test]
fn arg_has_the_command_line_before_the_script_at_negative_indices() {
    let home = Home::new("run-arg");
    let dir = case_dir(&home, &Case::new("neg", "print(arg[-3] == nil, arg[-2], arg[-1], arg[0], arg[1])"));
    let out = run_with_stdin(
        {
            let mut c = base_command(BIN, &home, &dir);
            c.args(["run", "script.lua", "x"]);
            c
        },
        "",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("true\t{BIN}\trun\tscript.lua\tx\n"));
}

fn llmspell_in(home: &Home, dir: &Path, args: &[&str]) -> Output {
    let mut c = base_command(BIN, home, dir);
    c.args(args);
    run_with_stdin(c, "")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn runs_are_isolated_from_each_other_and_from_the_session() {
    let home = Home::new("run-iso");
    let dir = case_dir(&home, &Case::new("iso", ""));
    write_file(
        &dir,
        "hack.lua",
        "getmetatable('').__index.upper = function() return 'HACKED' end\n\
         package.loaded.evil = true  leaked_global = 1  package.path = package.path .. ';/grown/?.lua'\n\
         io.output('hacked-output.txt')  collectgarbage('incremental')\n\
         print(math.random(1 << 40))",
    );
    write_file(
        &dir,
        "check.lua",
        "print(('x'):upper(), package.loaded.evil, leaked_global, package.path:find('grown', 1, true), \
         io.output() == io.stdout, collectgarbage('generational'))",
    );
    let first = llmspell_in(&home, &dir, &["run", "hack.lua"]);
    assert!(first.status.success(), "{first:?}");
    let second = llmspell_in(&home, &dir, &["run", "hack.lua"]);
    assert_ne!(stdout(&first), stdout(&second), "two runs drew the same math.random numbers");
    let check = llmspell_in(&home, &dir, &["run", "check.lua"]);
    assert_eq!(stdout(&check), "X\tnil\tnil\tnil\ttrue\tgenerational\n", "{check:?}");
    let session =
        llmspell_in(&home, &dir, &["exec", "print(('x'):upper(), package.loaded.evil, leaked_global)"]);
    assert_eq!(stdout(&session), "X\tnil\tnil\n", "{session:?}");
    // And the other way round: the session's globals are not seen by runs.
    llmspell_in(&home, &dir, &["exec", "session_global = 7 getmetatable('').__index.lower = 1"]);
    write_file(&dir, "see.lua", "print(session_global, type(('X').lower))");
    assert_eq!(stdout(&llmspell_in(&home, &dir, &["run", "see.lua"])), "nil\tfunction\n");
}

#[test]
fn state_is_shared_and_durable_on_every_way_out() {
    let home = Home::new("run-state");
    let dir = case_dir(&home, &Case::new("st", ""));
    write_file(&dir, "normal.lua", "state.set('normal', {1, 2})");
    write_file(&dir, "exit.lua", "state.set('exit', 'e') os.exit(5)");
    write_file(&dir, "exitclose.lua", "state.set('exitclose', true) os.exit(0, true)");
    write_file(&dir, "err.lua", "state.set('err', 3) error('after the write')");
    write_file(&dir, "read.lua", "print(state.get('normal')[2], state.get('exit'), state.get('exitclose'), state.get('err'), state.get('session'))");
    assert_eq!(llmspell_in(&home, &dir, &["run", "normal.lua"]).status.code(), Some(0));
    assert_eq!(llmspell_in(&home, &dir, &["run", "exit.lua"]).status.code(), Some(5));
    assert_eq!(llmspell_in(&home, &dir, &["run", "exitclose.lua"]).status.code(), Some(0));
    assert_eq!(llmspell_in(&home, &dir, &["run", "err.lua"]).status.code(), Some(1));
    llmspell_in(&home, &dir, &["exec", "state.set('session', 's')"]);
    let out = llmspell_in(&home, &dir, &["run", "read.lua"]);
    assert_eq!(stdout(&out), "2\te\ttrue\t3\ts\n", "{out:?}");
    let file = std::fs::read_to_string(home.path("state.json")).unwrap();
    assert!(file.contains("\"exit\"") && file.contains("\"err\""), "{file}");
    // A bad key fails at the caller's line, as in the session.
    write_file(&dir, "bad.lua", "\n\nstate.set(1, 2)");
    let bad = llmspell_in(&home, &dir, &["run", "bad.lua"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad.lua:3: state.set"), "{bad:?}");
}

/// `sh -c 'CMD | head -1'` and the status of CMD, as bash's PIPESTATUS reports it.
fn pipe_to_head(home: &Home, dir: &Path, cmd: &str) -> (String, String) {
    let mut c = base_command("bash", home, dir);
    c.args(["-c", &format!("{cmd} | head -1; echo \"status ${{PIPESTATUS[0]}}\"")]);
    let out = run_with_stdin(c, "");
    let text = stdout(&out);
    let mut lines = text.lines();
    (lines.next().unwrap_or("").to_string(), lines.last().unwrap_or("").to_string())
}

#[test]
fn a_closed_pipe_ends_the_run_with_luas_status() {
    let home = Home::new("run-pipe");
    let dir = case_dir(&home, &Case::new("pipe", "while true do print('y') end"));
    let ours = pipe_to_head(&home, &dir, &format!("{BIN} run script.lua"));
    assert_eq!(ours.0, "y");
    if have_lua() {
        let theirs = pipe_to_head(&home, &dir, &format!("{LUA} script.lua"));
        assert_eq!(ours, theirs);
    } else {
        assert_eq!(ours.1, "status 141");
    }
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

#[test]
fn a_killed_client_ends_its_run() {
    let home = Home::new("run-kill");
    let dir = case_dir(
        &home,
        &Case::new(
            "kill",
            "local f = io.open('pid.tmp', 'w') f:write(io.open('/proc/self/stat'):read('l'):match('^%d+')) f:close()\n\
             os.rename('pid.tmp', 'pid') while true do end",
        ),
    );
    let mut client = spawn_in(BIN, &home, &dir, &["script.lua"]);
    let pid: i32 = wait_for_file(&dir.join("pid"), &mut client).trim().parse().unwrap();
    assert!(process_alive(pid));
    assert_ne!(pid, client.id() as i32, "the script runs in a process of its own");
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(wait_until(Duration::from_secs(20), || !process_alive(pid)), "run {pid} outlived its client");
}

/// Runs `script` with both interpreters, sends SIGINT once `ready` exists (and, with `second`, again
/// once `caught` exists); returns (status, normalised stderr) per interpreter.
fn interrupt_both(home: &Home, name: &str, script: &str, second: bool) -> Vec<(ExitStatus, String)> {
    let mut out = Vec::new();
    for program in [BIN, LUA] {
        let dir = case_dir(home, &Case::new(name, script));
        let mut child = spawn_in(program, home, &dir, &["script.lua"]);
        wait_for_file(&dir.join("ready"), &mut child);
        signal(&child, libc::SIGINT);
        if second {
            wait_for_file(&dir.join("caught"), &mut child);
            signal(&child, libc::SIGINT);
        }
        let o = wait_output(child, Duration::from_secs(60));
        out.push((o.status, normalise(&o.stderr)));
        let _ = std::fs::remove_dir_all(&dir);
        if !have_lua() {
            break;
        }
    }
    out
}

#[test]
fn sigint_interrupts_the_script_as_in_lua() {
    let home = Home::new("run-int");
    let once = interrupt_both(
        &home,
        "int1",
        "io.open('ready', 'w'):write('1'):close() local i = 0 while true do i = i + 1 end",
        false,
    );
    assert_eq!(once[0].0.code(), Some(1), "{once:?}");
    assert!(once[0].1.contains("lua: interrupted!"), "{once:?}");
    if once.len() == 2 {
        assert_eq!(once[0], once[1]);
    }
    // The first interrupt is an error a pcall can catch; the handler is then gone and a second one
    // kills the process with SIGINT (a shell shows 130).
    let twice = interrupt_both(
        &home,
        "int2",
        "local ok, e = pcall(function() io.open('ready', 'w'):write('1'):close() while true do end end)\n\
         io.open('caught', 'w'):write(tostring(e)):close() while true do end",
        true,
    );
    assert_eq!(twice[0].0.signal(), Some(libc::SIGINT), "{twice:?}");
    if twice.len() == 2 {
        assert_eq!(twice[0].0.signal(), twice[1].0.signal());
    }
}

#[test]
fn sigint_stops_a_loop_of_os_execute() {
    // Stock lua differs here: it ignores SIGINT while system() runs, so `kill -INT` on lua is lost,
    // and a terminal's Ctrl-C kills only the child (the loop goes on). A run stops.
    let home = Home::new("run-exec");
    let script = "io.open('ready', 'w'):write('1'):close() while true do os.execute('sleep 0.3') end";
    let dir = case_dir(&home, &Case::new("exec", script));
    let mut child = spawn_in(BIN, &home, &dir, &["script.lua"]);
    wait_for_file(&dir.join("ready"), &mut child);
    signal(&child, libc::SIGINT);
    let o = wait_output(child, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(normalise(&o.stderr).starts_with("lua: script.lua:1: interrupted!"), "{o:?}");
    if have_lua() {
        let dir = case_dir(&home, &Case::new("exec-lua", script));
        let mut lua = spawn_in(LUA, &home, &dir, &["script.lua"]);
        wait_for_file(&dir.join("ready"), &mut lua);
        signal(&lua, libc::SIGINT);
        let stopped = wait_until(Duration::from_secs(2), || lua.try_wait().unwrap().is_some());
        eprintln!(
            "stock {LUA} after SIGINT in an os.execute loop: {}",
            if stopped { "stopped" } else { "still running (as documented)" }
        );
        // SAFETY: ending our own child's process group.
        unsafe { libc::kill(-(lua.id() as i32), libc::SIGKILL) };
        let _ = lua.wait();
    }
}

#[test]
fn four_runs_make_progress_at_once() {
    let home = Home::new("run-four");
    let dir = case_dir(
        &home,
        &Case::new(
            "four",
            "local me = arg[1]\nio.open('here' .. me, 'w'):close()\n\
             local function all() for i = 1, 4 do local f = io.open('here' .. i) if not f then return false end f:close() end return true end\n\
             while not all() do os.execute('sleep 0.02') end\nprint('passed the barrier', me)",
        ),
    );
    let mut children: Vec<Child> =
        (1..=4).map(|i| spawn_in(BIN, &home, &dir, &["script.lua", &i.to_string()])).collect();
    let all_done =
        wait_until(Duration::from_secs(120), || children.iter_mut().all(|c| c.try_wait().unwrap().is_some()));
    for c in &mut children {
        let _ = c.kill();
    }
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    assert!(all_done, "not all four runs passed the barrier: {outs:?}");
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(stdout(o), format!("passed the barrier\t{}\n", i + 1), "{o:?}");
    }
}

#[test]
fn the_runner_socket_is_private_and_a_missing_kernel_is_one_line() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new("run-sock");
    let dir = case_dir(&home, &Case::new("sock", "print('ok')"));
    assert_eq!(stdout(&llmspell_in(&home, &dir, &["run", "script.lua"])), "ok\n");
    let meta = std::fs::metadata(home.kernels_dir().join("default.run")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A copy of the connection file elsewhere finds the same kernel's runner (by its key) ...
    let elsewhere = home.dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let text = std::fs::read_to_string(home.kernels_dir().join("default.json")).unwrap();
    write_file(&elsewhere, "copy.json", &text);
    let copy = elsewhere.join("copy.json");
    let o = llmspell_in(&home, &dir, &["--connect", copy.to_str().unwrap(), "run", "script.lua"]);
    assert_eq!(stdout(&o), "ok\n", "{o:?}");
    // ... and one whose kernel has no runner is one line, exit 1.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["key"] = "not-the-key".into();
    write_file(&elsewhere, "other.json", &v.to_string());
    let other = elsewhere.join("other.json");
    let o = llmspell_in(&home, &dir, &["--connect", other.to_str().unwrap(), "run", "script.lua"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1, "{o:?}");
}

#[test]
fn a_run_does_not_wait_for_a_busy_session_cell() {
    let home = Home::new("run-busy");
    let dir = case_dir(&home, &Case::new("busy", "io.open(arg[1], 'w'):close() print('run done')"));
    let flag = dir.join("flag");
    // The cell spins until the run has created the flag: if runs queued behind cells, neither ends.
    let cell = format!("while not io.open({:?}) do end print('cell done')", flag.to_str().unwrap());
    let mut c = base_command(BIN, &home, &dir);
    c.args(["exec", "x = 1"]);
    assert!(run_with_stdin(c, "").status.success());
    let mut session = base_command(BIN, &home, &dir);
    session.args(["exec", &cell]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let session = session.spawn().unwrap();
    let run = llmspell_in(&home, &dir, &["run", "script.lua", flag.to_str().unwrap()]);
    assert_eq!(stdout(&run), "run done\n", "{run:?}");
    assert_eq!(stdout(&wait_output(session, Duration::from_secs(120))), "cell done\n");
}

#[test]
fn a_run_longer_than_the_idle_timeout_keeps_its_kernel() {
    let home = Home::new("run-idle");
    let dir = case_dir(&home, &Case::new("idle", "os.execute('sleep 5') print('still here')"));
    let out = llmspell_in(&home, &dir, &["--idle-timeout", "2", "run", "script.lua"]);
    assert_eq!(stdout(&out), "still here\n", "{out:?}");
    assert!(out.status.success());
    // Once idle, the kernel (and its zygote with it) goes.
    let lock = home.kernels_dir().join("default.run");
    assert!(
        wait_until(Duration::from_secs(60), || !lock.exists()),
        "the kernel did not time out after the run"
    );
}

#[test]
fn a_stalled_client_does_not_hold_up_other_runs() {
    use std::io::Write;
    let home = Home::new("run-stall");
    let dir = case_dir(&home, &Case::new("stall", "print('ran')"));
    assert_eq!(stdout(&llmspell_in(&home, &dir, &["run", "script.lua"])), "ran\n");
    // Half a request, then silence: the zygote must go on serving.
    let mut stalled =
        std::os::unix::net::UnixStream::connect(home.kernels_dir().join("default.run")).unwrap();
    stalled.write_all(b"LSR1\x10").unwrap();
    let mut idle = std::os::unix::net::UnixStream::connect(home.kernels_dir().join("default.run")).unwrap();
    assert_eq!(stdout(&llmspell_in(&home, &dir, &["run", "script.lua"])), "ran\n");
    // Garbage gets a one-line refusal, not a run.
    idle.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    std::io::Read::read_to_end(&mut idle, &mut reply).unwrap();
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    drop(stalled);
}

#[test]
fn a_kernel_launched_from_a_connection_file_serves_runs_too() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new("run-jup");
    let dir = case_dir(&home, &Case::new("jup", "print('ran', os.getenv('JUP'))"));
    // Borrow free ports from a kernel of ours, then launch one the way Jupyter does.
    assert!(llmspell_in(&home, &dir, &["kernel", "start", "--daemon", "--id", "src"]).status.success());
    let text = std::fs::read_to_string(home.kernels_dir().join("src.json")).unwrap();
    llmspell_in(&home, &dir, &["kernel", "stop", "src"]);
    let conn = write_file(&home.dir, "jupyter-conn.json", &text);
    std::fs::set_permissions(&conn, std::fs::Permissions::from_mode(0o600)).unwrap();
    let conn = conn.to_str().unwrap().to_string();
    let mut kernel = base_command(BIN, &home, &dir);
    kernel.args(["kernel", "start", "--connection-file", &conn]).stdin(Stdio::null()).stdout(Stdio::null());
    let mut kernel = kernel.stderr(Stdio::null()).spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || {
            llmspell_in(&home, &dir, &["--connect", &conn, "exec", "x = 1"]).status.success()
        }),
        "the kernel did not come up"
    );
    let mut c = base_command(BIN, &home, &dir);
    c.args(["--connect", &conn, "run", "script.lua"]).env("JUP", "yes");
    let o = run_with_stdin(c, "");
    assert_eq!(stdout(&o), "ran\tyes\n", "{o:?}");
    signal(&kernel, libc::SIGTERM);
    kernel.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(home.kernels_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("key-"))
        .collect();
    assert!(left.is_empty(), "the runner socket outlived its kernel: {left:?}");
}

#[test]
fn concurrent_first_runs_all_find_the_one_kernel_they_start() {
    for round in 0..3 {
        let home = Home::new(&format!("run-first{round}"));
        let dir = case_dir(&home, &Case::new("first", "print('ran')"));
        let children: Vec<Child> = (0..8).map(|_| spawn_in(BIN, &home, &dir, &["script.lua"])).collect();
        for c in children {
            let o = wait_output(c, Duration::from_secs(120));
            assert_eq!(stdout(&o), "ran\n", "{o:?}");
        }
    }
}

/// stderr and stdout of an options case with what may differ by design made equal: the version line
/// (this binary carries its own Lua 5.4 release) and the usage line's program (`llmspell run`).
fn normalise_options(text: &[u8]) -> String {
    normalise(text)
        .lines()
        .map(|l| {
            if l.starts_with("Lua 5.4.") && l.contains("Copyright") {
                "Lua 5.4 (version line)".to_string()
            } else if let Some(rest) = l.strip_prefix("usage: ") {
                format!("usage: lua{}", rest.split_once(" [options]").map_or("", |(_, r)| r))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn luas_options_match_stock_lua() {
    if !have_lua() {
        return;
    }
    let home = Home::new("run-options");
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&[&str], &str, Env)] = &[
        (&["-e", "print(1 + 1)"], "", &[]),
        (&["-eprint(2)", "-lstring", "-e", "print(type(string))"], "", &[]),
        (&["-l", "m=string", "-e", "print(m.rep('a', 3))"], "", &[]),
        (&["-e"], "", &[]),
        (&["-x"], "", &[]),
        (&["-v", "-e", "print(_VERSION)"], "", &[]),
        (&["-v"], "print('not run: -v is an active option')", &[]),
        (&["-e", "warn('off')", "-W", "-e", "warn('x', 'y') warn('@off') warn('z')"], "", &[]),
        (&["-e", "error('boom')", "-e", "print('not reached')"], "", &[]),
        (&["-l", "no_such_module_anywhere"], "", &[]),
        (&["-e", "x = 7", "script.lua", "a", "b"], "", &[]),
        (&["--", "script.lua", "-e"], "", &[]),
        (&[], "print('stdin is the script', ...)", &[]),
        (&["-"], "print('dash', #arg)", &[]),
        (
            &["-E", "-e", "print(package.path:find('/nowhere', 1, true))"],
            "",
            &[("LUA_INIT", "print('init ran')"), ("LUA_PATH", "/nowhere/?.lua")],
        ),
        (
            &["-e", "print(package.path:find('/nowhere', 1, true) ~= nil)"],
            "",
            &[("LUA_INIT", "print('init ran')"), ("LUA_PATH", "/nowhere/?.lua;;")],
        ),
    ];
    for (i, (args, stdin, env)) in cases.iter().enumerate() {
        let mut outs = Vec::new();
        for program in [BIN, LUA] {
            let dir = case_dir(&home, &Case::new("opts", "print('script', ...)"));
            let mut c = base_command(program, &home, &dir);
            if program == BIN {
                c.arg("run");
            }
            c.args(*args);
            for (k, v) in *env {
                c.env(k, v);
            }
            outs.push(run_with_stdin(c, stdin));
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (ours, theirs) = (&outs[0], &outs[1]);
        let show = |o: &Output| {
            format!("{:?} {:?} {:?}", o.status, normalise_options(&o.stdout), normalise_options(&o.stderr))
        };
        assert!(
            normalise_options(&ours.stdout) == normalise_options(&theirs.stdout)
                && ours.status.code() == theirs.status.code()
                && normalise_options(&ours.stderr) == normalise_options(&theirs.stderr),
            "case {i} {args:?}:\n llmspell run: {}\n lua5.4:       {}",
            show(ours),
            show(theirs)
        );
    }
}

#[test]
fn run_i_enters_luas_interactive_loop_after_the_script() {
    let home = Home::new("run-interactive");
    let dir = case_dir(&home, &Case::new("interactive", "greeting = 'hi from the script'"));
    let out = run_with_stdin(
        {
            let mut c = base_command(BIN, &home, &dir);
            c.args(["run", "-i", "script.lua"]);
            c
        },
        "greeting\nx = 1 +\n 2\n= x * 2\nerror('oops')\nprint('still here')\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("Lua 5.4"), "-i shows the version first: {stdout:?}");
    // An expression's value is printed, a statement continues on `>>`, `=` is `return`, an error
    // is reported without ending the loop, and end of input ends it with a newline.
    for want in ["> hi from the script\n", ">> ", "> 6\n", "> still here\n"] {
        assert!(stdout.contains(want), "missing {want:?} in {stdout:?}");
    }
    assert!(stdout.ends_with("> \n"), "{stdout:?}");
    assert!(stderr.starts_with("stdin:1: oops"), "errors carry no program name in the loop: {stderr:?}");
}
