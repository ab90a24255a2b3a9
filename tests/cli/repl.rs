//! The REPL: meta commands, multi-line blocks, input, history, exit and documentation lookups.

use super::*;

// ---------------------------------------------------------------------------------------------
// REPL (stdin piped, not a terminal)
// ---------------------------------------------------------------------------------------------

#[test]
fn repl_meta_kernel_shows_pid_and_connection_file() {
    let home = Home::new("replkernel");
    let pid = start_default(&home);
    let o = home.run(&["repl"], ".kernel\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    let conn = home.kernels_dir().join("default.json");
    assert!(out.contains(&pid.to_string()), "no pid {pid} in {out:?}");
    assert!(out.contains(&*conn.to_string_lossy()), "no connection file in {out:?}");
}

#[test]
fn repl_meta_help_lists_the_meta_commands() {
    let home = Home::new("replhelp");
    let o = home.run(&["repl"], ".help\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    for cmd in [".help", ".kernel", ".exit"] {
        assert!(out.contains(cmd), "{cmd} missing from .help: {out}");
    }
}

#[test]
fn repl_meta_exit_leaves_and_the_kernel_keeps_running() {
    let home = Home::new("replexit");
    let pid = start_default(&home);
    let o = home.run(&["repl"], "print('before')\n.exit\nprint('after')\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "before\n");
    assert_eq!(kernel_processes(&home), vec![pid]);
}

#[test]
fn repl_runs_a_multi_line_block_once() {
    let home = Home::new("replmulti");
    let input = "n = 0\nfor i = 1, 3 do\n  n = n + 1\n  print('loop', i)\nend\nprint('n=' .. n)\n";
    let o = home.run(&["repl"], input);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "loop\t1\nloop\t2\nloop\t3\nn=3\n");
    assert_eq!(stderr(&o), "", "a line of the block ran on its own");
}

#[test]
fn repl_io_read_is_answered_by_the_next_line() {
    let home = Home::new("replread");
    let input = "local l = io.read() print('got: ' .. l)\nthe answer\nprint('after')\n";
    let o = home.run(&["repl"], input);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "got: the answer\nafter\n");
    assert_eq!(stderr(&o), "", "the answer line must not run as Lua");
}

#[test]
fn repl_shows_expression_values() {
    let home = Home::new("replvalue");
    let o = home.run(&["repl"], "v = 6\nv * 7\n");
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "42\n");
}

/// History is only written in interactive mode: drive the REPL through a pseudo-terminal with
/// `script(1)`. Skipped (passes with a note) if `script` is not installed.
#[test]
fn repl_on_a_terminal_writes_history() {
    let Some(script_bin) = ["/usr/bin/script", "/bin/script"].into_iter().find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: script(1) is not installed");
        return;
    };
    let home = Home::new("history");
    let shell_cmd = format!("'{BIN}' repl");
    let child = Command::new(script_bin)
        .args(["-qec", &shell_cmd, "/dev/null"])
        .env("LLMSPELL_HOME", &home.dir)
        .env_remove("LLMSPELL_IDLE_TIMEOUT")
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut repl = Guard(Some(child));
    let mut input = repl.child().stdin.take().unwrap();
    let out_rx = {
        // The terminal output has no reliable line ends: accumulate raw bytes.
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let mut out = repl.child().stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let _err = collector(repl.child().stderr.take().unwrap());
    let mut seen = String::new();
    let mut wait_for = |what: &str| {
        let deadline = Instant::now() + LONG;
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match out_rx.recv_timeout(left) {
                Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("no {what:?} on the terminal; saw {seen:?}"),
            }
        }
    };
    wait_for("In [1]:");
    input.write_all(b"hist_var = 12345\r").unwrap();
    wait_for("In [2]:");
    input.write_all(b"print(hist_var + 1)\r").unwrap();
    wait_for("12346");
    wait_for("In [3]:");
    input.write_all(b"\x04").unwrap(); // Ctrl-D leaves
    let status = repl.wait(LONG);
    assert!(status.success(), "{status:?}");
    let history = std::fs::read_to_string(home.path("history")).expect("$LLMSPELL_HOME/history was written");
    assert!(history.contains("hist_var = 12345"), "{history:?}");
    assert!(history.contains("print(hist_var + 1)"), "{history:?}");
}

#[test]
fn exit_and_quit_leave_the_repl_and_a_users_own_exit_is_left_alone() {
    let home = Home::new("replexit");
    let out = home.run(&["repl"], "x = 5\nprint(x)\nexit\nprint('not reached')\n");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "5\n");
    let out = home.run(&["repl"], "quit()\nprint('not reached')\n");
    assert_eq!(stdout(&out), "");
    let out = home.run(&["repl"], "exit = 3\nprint(exit)\n");
    assert_eq!(stdout(&out), "3\n");
}

#[test]
fn an_unfinished_expression_continues_in_the_repl() {
    let home = Home::new("replcont");
    let out = home.run(&["repl"], "1 +\n2\n");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "3\n");
}

#[test]
fn a_name_followed_by_a_question_mark_shows_its_documentation() {
    let home = Home::new("question");
    let doc = ok(&home, &["exec", "string.format?"]);
    assert!(doc.contains("string.format(formatstring, ...)"), "{doc}");
    assert_eq!(ok(&home, &["exec", "no_such_name?"]), "Object `no_such_name` not found.\n");
}
