//! What a stock interpreter has no counterpart for: runs isolated from each other and from the
//! session, state shared and durable on every way out, a closed pipe.

use super::*;

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
