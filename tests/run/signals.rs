//! A killed client and SIGINT: the run ends or is interrupted as under `lua`.

use super::*;

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
