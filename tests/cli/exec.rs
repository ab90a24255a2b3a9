//! `llmspell exec`, the command line and exit codes.

use super::*;

// ---------------------------------------------------------------------------------------------
// exec and exit codes
// ---------------------------------------------------------------------------------------------

#[test]
fn exec_prints_the_value_of_a_trailing_expression() {
    let home = Home::new("trailing");
    assert_eq!(ok(&home, &["exec", "1 + 1"]), "2\n");
    assert_eq!(ok(&home, &["exec", "y = 20\ny * 2 + 2"]), "42\n");
    assert_eq!(ok(&home, &["exec", "print('out')\nw = 'value'\nw"]), "out\n\"value\"\n");
    assert_eq!(ok(&home, &["exec", "z = 1"]), "", "a statement shows nothing");
}

/// An uncaught error in `exec` prints as in `lua5.4 -e` (program name and chunk name aside); exit 1.
#[test]
fn exec_errors_print_as_lua_e_prints_them() {
    let Ok(_) = Command::new("lua5.4").args(["-e", ""]).output() else {
        eprintln!("NOTICE: lua5.4 is not installed: differential test skipped");
        return;
    };
    let home = Home::new("execluaerr");
    let as_lua = |text: &str, program: &str| -> String {
        let text = text.replace("[cell]", "(command line)");
        text.strip_prefix(&format!("{program}: ")).map(|t| format!("lua: {t}")).unwrap_or(text)
    };
    for cell in [
        "error('boom')",
        "local function f() error('nested') end\nf()",
        "error({})",
        "error('x', 0)",
        "error(42)",
        "error(setmetatable({}, {__tostring = function() return 'custom' end}))",
        "x = = 1",
        "local t = nil; t.field = 1",
    ] {
        let ours = home.run(&["exec", cell], "");
        let lua = Command::new("lua5.4").args(["-e", cell]).output().unwrap();
        assert_eq!(
            (code(&ours), as_lua(&stderr(&ours), "llmspell")),
            (lua.status.code().unwrap(), as_lua(&String::from_utf8_lossy(&lua.stderr), "lua5.4")),
            "exec {cell:?}"
        );
    }
}

#[test]
fn exec_lua_error_exits_1_with_the_error_on_stderr() {
    let home = Home::new("execerr");
    let o = home.run(&["exec", "error('exec failed here')"], "");
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("exec failed here"), "{}", show(&o));
    assert_eq!(ok(&home, &["exec", "print('fine')"]), "fine\n");
}

#[test]
fn exec_ctrl_c_exits_130_and_the_session_survives() {
    let home = Home::new("sigintexec");
    let pid = start_default(&home);
    ok(&home, &["exec", "kept = 'yes'"]);
    let mut exec = spawn(&home, &["exec", "print('looping')\nwhile true do end"]);
    let lines = line_reader(exec.child().stdout.take().unwrap());
    let _err = collector(exec.child().stderr.take().unwrap());
    expect_line(&lines, "looping");
    sigint(exec.pid());
    let status = exec.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_eq!(ok(&home, &["exec", "print(kept)"]), "yes\n");
    assert_eq!(home.kernel_pid("default"), Some(pid));
}

#[test]
fn bad_command_line_exits_2_with_one_line_error() {
    let home = Home::new("usage");
    let cases: &[&[&str]] = &[
        &["frobnicate"],
        &["--bogus", "exec", "1"],
        &["--kernel"],
        &["exec"],
        &["exec", "1", "extra"],
        &["repl", "extra"],
        &["kernel"],
        &["kernel", "frob"],
        &["kernel", "status", "a", "b"],
        &["--idle-timeout", "soon", "exec", "1"],
    ];
    for args in cases {
        let o = home.run(args, "");
        assert_eq!(code(&o), 2, "llmspell {args:?}: {}", show(&o));
        assert_eq!(stdout(&o), "", "llmspell {args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "llmspell {args:?}: one line on stderr, got {err:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(kernel_processes(&home).is_empty(), "a bad command line started a kernel");
}

#[test]
fn help_on_every_command_and_version_exit_0() {
    let home = Home::new("help");
    let cases: &[&[&str]] = &[
        &["--help"],
        &["-h"],
        &["help"],
        &["run", "--help"],
        &["exec", "--help"],
        &["repl", "--help"],
        &["kernel", "--help"],
        &["kernel", "start", "--help"],
        &["kernel", "stop", "--help"],
        &["kernel", "list", "--help"],
        &["kernel", "status", "--help"],
        &["kernel", "install", "--help"],
        &["state", "--help"],
    ];
    for args in cases {
        let o = home.run(args, "");
        assert_eq!(code(&o), 0, "llmspell {args:?}: {}", show(&o));
        assert!(stdout(&o).contains("llmspell"), "llmspell {args:?} printed no help: {}", show(&o));
    }
    for flag in ["--version", "-V"] {
        let o = home.run(&[flag], "");
        assert_eq!(code(&o), 0, "{}", show(&o));
        assert_eq!(stdout(&o), format!("llmspell {}\n", env!("CARGO_PKG_VERSION")));
    }
    assert!(kernel_processes(&home).is_empty(), "--help started a kernel");
}

#[test]
fn help_on_every_state_subcommand_exits_0() {
    let home = Home::new("statehelp");
    for verb in ["get", "set", "delete", "list", "clear", "export", "import", "repair", "path"] {
        let o = home.run(&["state", verb, "--help"], "");
        assert_eq!(code(&o), 0, "llmspell state {verb} --help: {}", show(&o));
        assert!(
            stdout(&o).contains("llmspell state"),
            "llmspell state {verb} --help printed no help: {}",
            show(&o)
        );
    }
}

#[test]
fn ctrl_c_in_a_queued_exec_withdraws_it_and_leaves_the_running_cell_alone() {
    let home = Home::new("queuedctrlc");
    start_default(&home);
    let gate = home.path("gate").to_string_lossy().into_owned();
    let started = home.path("started").to_string_lossy().into_owned();
    let long =
        format!("io.open({started:?}, 'w'):close() while not io.open({gate:?}) do end print('a done')");
    let mut a = spawn(&home, &["exec", &long]);
    assert!(wait_until(LONG, || Path::new(&started).exists()), "A's cell never started");
    let mut b = spawn(&home, &["exec", "b_ran = true"]);
    // B's request waits behind A's cell; give it a moment to be sent (if SIGINT comes sooner, B
    // dies before sending, and the assertions below hold all the same).
    std::thread::sleep(Duration::from_millis(500));
    sigint(b.pid());
    let status = b.wait(LONG);
    assert!(status.code() == Some(130) || status.signal() == Some(libc::SIGINT), "{status:?}");
    assert!(a.child().try_wait().unwrap().is_none(), "B's Ctrl-C ended A's cell");
    std::fs::write(&gate, "").unwrap();
    assert!(a.wait(LONG).success());
    assert_eq!(ok(&home, &["exec", "print(b_ran)"]), "nil\n", "the withdrawn request ran anyway");
}

#[test]
fn a_killed_exec_client_ends_its_cell_and_the_kernel_serves_the_next_one() {
    let home = Home::new("killedexec");
    start_default(&home);
    let started = home.path("started").to_string_lossy().into_owned();
    let forever = format!("io.open({started:?}, 'w'):close() while true do end");
    let mut client = spawn(&home, &["exec", &forever]);
    assert!(wait_until(LONG, || Path::new(&started).exists()), "the cell never started");
    // SAFETY: kill(2) on a child this test spawned and still holds.
    unsafe { libc::kill(client.pid(), libc::SIGKILL) };
    client.wait(LONG);
    assert_eq!(ok(&home, &["exec", "print(1 + 1)"]), "2\n");
}

#[test]
fn global_options_stand_anywhere_and_double_dash_ends_them() {
    let home = Home::new("options");
    assert_eq!(ok(&home, &["exec", "--kernel", "k2", "print(1 + 1)"]), "2\n");
    assert_eq!(ok(&home, &["exec", "--kernel=k2", "--", "print(-1)"]), "-1\n");
    assert!(home.kernel_pid("k2").is_some(), "--kernel after exec was not taken as the kernel id");
    assert!(home.kernel_pid("default").is_none(), "a default kernel was started");
    let script = script(&home, "args.lua", "print(arg[1], arg[2])");
    assert_eq!(ok(&home, &["run", "--kernel", "k2", &script, "--kernel", "x"]), "--kernel\tx\n");
}

#[test]
fn exec_dash_reads_the_code_from_stdin() {
    let home = Home::new("execstdin");
    let out = home.run(&["exec", "-"], "print('from stdin')\nreturn 6 * 7\n");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "from stdin\n42\n");
}

#[test]
fn a_mistyped_command_gets_a_suggestion_and_exit_2() {
    let home = Home::new("typo");
    let out = output_of(home.cmd(&["exce", "1"]), LONG);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("did you mean `exec`?"), "{}", show(&out));
}
