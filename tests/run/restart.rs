//! Scripts that start their interpreter again, as test runners and Penlight's `app.lua()` do: the
//! interpreter is `arg`'s most negative entry (alone, or with the other negative entries: the
//! interpreter's own options), run with one of lua's command lines. Under `llmspell run` that entry
//! is llmspell itself, which must then behave as `lua5.4` does under `lua5.4`: the same stdout,
//! stderr (the interpreter's name aside) and exit code, for every lua option.

use super::*;

/// Starts the interpreter again, `alone` (the most negative `arg` entry) or `all` (every negative
/// entry), with the lua command line given after the mode and the stdin file; prints how it ended,
/// its stdout and its stderr, with the interpreter's name replaced by `INTERPRETER`.
const RESTARTER: &str = r#"
local mode, stdin_file = arg[1], arg[2]
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local first = -1
while arg[first - 1] do first = first - 1 end
local words = {}
for i = first, mode == "alone" and first or -1 do words[#words + 1] = q(arg[i]) end
for i = 3, #arg do words[#words + 1] = q(arg[i]) end
local command = table.concat(words, " ") .. " <" .. q(stdin_file) .. " >inner.out 2>inner.err"
local _, how, code = os.execute(command)
local function read(name)
  local f = assert(io.open(name, "rb"))
  local text = f:read("a")
  f:close()
  return (text:gsub(arg[first]:gsub("%p", "%%%0"), "INTERPRETER"))
end
io.write(how, " ", code, "\n--- stdout\n", read("inner.out"), "--- stderr\n", read("inner.err"))
"#;

/// lua's command lines: the words, and the inner run's stdin.
const COMMAND_LINES: &[(&[&str], &str)] = &[
    (&[], "print('stdin is the script', ...)"),
    (&["-v"], ""),
    (&["-e", "print(1 + 1, outer)"], ""),
    (&["-eprint(2)"], ""),
    (&["-l", "mod", "-e", "print(mod.x)"], ""),
    (&["-lmod", "-lg=mod", "-e", "print(mod.x, g.x)"], ""),
    (&["-i"], "x = 3\nprint(x * 2)\n= x\n"),
    (&["-i", "script.lua", "a"], "print(from_script)\n"),
    (&["-E", "-e", "print(init_ran, package.path:find('/nowhere', 1, true))"], ""),
    (&["-e", "print(init_ran, package.path:find('/nowhere', 1, true) ~= nil)"], ""),
    (&["-W", "-e", "warn('hello', ' there')"], ""),
    (&["-"], "print('from stdin', ...)"),
    (&["-", "a", "b"], "print('from stdin', ...)"),
    (&["script.lua", "a", "b"], ""),
    (&["-e", "x = 5", "-W", "script.lua", "a"], ""),
    (&["-v", "-e", "print(_VERSION)", "--", "script.lua", "-e"], ""),
    (&["-e", "error('boom')"], ""),
    (&["script.lua", "fail"], ""),
];

const SCRIPT: &str = "from_script = 'set by the script'\n\
                      print('script', x, ...)\n\
                      if ... == 'fail' then local function f() error('failed in f') end f() end";

/// lua5.4 as Debian builds it (with readline) echoes each line of a non-terminal stdin after `-i`'s
/// prompt; the stock lua.c does not (nor does llmspell): the echoed input is taken out.
fn without_echo(out: &str, stdin: &str) -> String {
    let mut text = out.to_string();
    let mut from = 0;
    for line in stdin.lines() {
        let echoed = format!("> {line}\n");
        if let Some(at) = text[from..].find(&echoed) {
            let at = from + at;
            text.replace_range(at..at + echoed.len(), "> ");
            from = at + 2;
        }
    }
    text
}

/// The version lines made equal (this binary carries its own Lua 5.4 release), and the usage line
/// `INTERPRETER [options]...` either way.
fn comparable(out: &[u8], stdin: &str) -> String {
    let text = without_echo(&String::from_utf8_lossy(out), stdin);
    let re = |l: &str| -> String {
        match l.find("Lua 5.4.") {
            Some(at) if l.contains("Copyright") => format!("{}Lua 5.4 (version line)", &l[..at]),
            _ => l.to_string(),
        }
    };
    text.lines().map(re).collect::<Vec<_>>().join("\n")
}

fn restart(home: &Home, program: &str, mode: &str, words: &[&str], stdin: &str) -> Output {
    let dir = home.dir.join("restart").join(if program == BIN { "llmspell" } else { "lua" });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_file(&dir, "restarter.lua", RESTARTER);
    write_file(&dir, "script.lua", SCRIPT);
    write_file(&dir, "mod.lua", "return { x = 'from mod' }");
    write_file(&dir, "stdin.txt", stdin);
    let mut c = base_command(program, home, &dir);
    if program == BIN {
        c.arg("run");
    }
    // The interpreter's own options stand in the negative entries: `all` passes them on again.
    c.args(["-e", "outer = 'outer option'", "restarter.lua", mode, "stdin.txt"]).args(words);
    c.env("LUA_INIT", "init_ran = true").env("LUA_PATH", "/nowhere/?.lua;;");
    run_with_stdin(c, "")
}

#[test]
fn the_interpreter_in_arg_runs_every_lua_command_line_as_lua_does() {
    if !have_lua() {
        return;
    }
    let home = Home::new("run-restart");
    for mode in ["alone", "all"] {
        for (words, stdin) in COMMAND_LINES {
            let ours = restart(&home, BIN, mode, words, stdin);
            let theirs = restart(&home, LUA, mode, words, stdin);
            let show = |o: &Output| {
                format!(
                    "{:?}\n{}\n(restarter's stderr: {})",
                    o.status,
                    comparable(&o.stdout, stdin),
                    String::from_utf8_lossy(&o.stderr)
                )
            };
            assert!(
                ours.status.code() == Some(0) && theirs.status.code() == Some(0),
                "{mode} {words:?}: the restarter failed:\n=== llmspell run\n{}\n=== {LUA}\n{}",
                show(&ours),
                show(&theirs)
            );
            assert_eq!(
                comparable(&ours.stdout, stdin),
                comparable(&theirs.stdout, stdin),
                "{mode} {words:?}: the interpreter started again differs (llmspell run, then {LUA})"
            );
        }
    }
}

#[test]
fn arg_names_the_llmspell_binary_and_lua_options_only() {
    let home = Home::new("run-arg-forms");
    let dir = home.dir.join("forms");
    std::fs::create_dir_all(&dir).unwrap();
    write_file(&dir, "script.lua", "print(arg[-4], arg[-3], arg[-2], arg[-1], arg[0], arg[1])");
    let exe = std::fs::canonicalize(BIN).unwrap().display().to_string();
    let want = format!("nil\t{exe}\t-e\tx = 1\tscript.lua\ty\n");
    // Without `run` and without llmspell's own options, however the run was asked for.
    for words in [
        &["run", "-e", "x = 1", "script.lua", "y"][..],
        &["--kernel", "default", "run", "-e", "x = 1", "script.lua", "y"],
        &["-e", "x = 1", "script.lua", "y"],
        &["--kernel=default", "-e", "x = 1", "script.lua", "y"],
    ] {
        let mut c = base_command(BIN, &home, &dir);
        c.args(words);
        let out = run_with_stdin(c, "");
        assert_eq!(stdout(&out), want, "llmspell {words:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn command_names_come_before_scripts_of_the_same_name() {
    let home = Home::new("run-names");
    let dir = home.dir.join("names");
    std::fs::create_dir_all(&dir).unwrap();
    write_file(&dir, "exec", "print('the script called exec', ...)");
    write_file(&dir, "job", "print('the script called job', ...)");
    let run = |words: &[&str]| {
        let mut c = base_command(BIN, &home, &dir);
        c.args(words);
        run_with_stdin(c, "")
    };
    assert_eq!(stdout(&run(&["./exec", "a"])), "the script called exec\ta\n");
    assert_eq!(stdout(&run(&["exec", "print('the session')"])), "the session\n");
    assert_eq!(stdout(&run(&["job", "b"])), "the script called job\tb\n", "an existing file is a script");
    let unknown = run(&["frobnicate"]);
    assert_eq!(unknown.status.code(), Some(2), "neither a command nor a file: {unknown:?}");
    let missing = run(&["missing.lua"]);
    assert_eq!(missing.status.code(), Some(1), "a .lua name is a script, missing as in lua: {missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot open missing.lua"), "{missing:?}");
}
