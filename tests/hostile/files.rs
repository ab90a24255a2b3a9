//! Files and addresses: private kernel files, refused writable files, non-loopback warnings.

use super::*;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn kernel_files_are_private() {
    let base = Home::new("private");
    let home = base.path("fresh-home");
    let run = |args: &[&str]| {
        let mut c = base.cmd(args);
        c.env("LLMSPELL_HOME", &home).stdin(Stdio::null());
        c.output().unwrap()
    };
    let out = run(&["kernel", "start", "--daemon", "--id", "p"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = Client::connect_file(&home.join("kernels/p.json"), Duration::from_secs(10)).unwrap();
    assert_eq!(run_cell(&mut c, "state.set('k', 1)").status(), "ok");
    drop(c);
    let modes: Vec<(String, u32)> =
        ["", "kernels", "kernels/p.json", "kernels/p.lock", "kernels/p.log", "state.json"]
            .iter()
            .map(|p| (p.to_string(), mode(&home.join(p))))
            .collect();
    let _ = run(&["kernel", "stop", "--all"]);
    println!("modes: {modes:?}");
    for (p, m) in &modes {
        let want = if p.is_empty() || p == "kernels" { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{p}: {m:o}");
    }
}

#[test]
fn a_connection_file_others_can_write_is_refused() {
    let home = Home::new("connperm");
    let k = Kernel::start("connperm-src", &[]);
    let text = std::fs::read_to_string(k.conn()).unwrap();
    drop(k); // its ports are free again
    for m in [0o666, 0o620, 0o602] {
        let f = write_file(&home.dir, "conn.json", &text);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m)).unwrap();
        let out = home.run_timeout(
            &["kernel", "start", "--connection-file", f.to_str().unwrap()],
            "",
            Duration::from_secs(10),
        );
        println!("mode {m:o}: exit {:?}: {}", out.status.code(), stderr(&out).trim());
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("writable by other users"), "{}", stderr(&out));
        assert!(stderr(&out).contains("conn.json"), "{}", stderr(&out));
    }
}

#[test]
fn a_state_file_others_can_write_is_refused() {
    let k = Kernel::start("stateperm", &[]);
    let state = k.home.path("state.json");
    std::fs::write(&state, "{\"k\": 1}\n").unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut c = k.client();
    let cell = run_cell(&mut c, "return state.get('k')");
    println!("state.json mode 666: {} {:?}", cell.ename(), cell.evalue());
    assert_eq!(cell.status(), "error");
    assert!(cell.evalue().contains("writable by other users"), "{:?}", cell.reply);
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{\"k\": 1}\n");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(value_of(&mut c, "(state.get('k'))"), "1");
}

#[test]
fn binding_a_non_loopback_address_warns_that_key_holders_can_run_code() {
    let home = Home::new("bindall");
    // In the foreground the warning goes to stderr.
    let mut child = home
        .cmd(&["kernel", "start", "--id", "w", "--ip", "0.0.0.0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("listening")) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    println!("foreground stderr: {lines:#?}");
    let warning = lines.iter().find(|l| l.contains("0.0.0.0") && l.contains("WARN"));
    let warning = warning.unwrap_or_else(|| panic!("no warning: {lines:?}"));
    assert!(warning.contains("key") && warning.contains("run code"), "{warning}");

    // Detached, it goes to the log.
    let out = home.cmd(&["kernel", "start", "--daemon", "--id", "d", "--ip", "0.0.0.0"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(home.kernels_dir().join("d.log")).unwrap();
    assert!(log.contains("binding 0.0.0.0") && log.contains("holds the key"), "{log}");
    // And loopback does not warn.
    let out = home.cmd(&["kernel", "start", "--daemon", "--id", "l"]).output().unwrap();
    assert!(out.status.success());
    let log = std::fs::read_to_string(home.kernels_dir().join("l.log")).unwrap();
    assert!(!log.contains("WARN"), "{log}");
}
