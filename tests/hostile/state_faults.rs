//! Faults: a state.json that cannot be written (a directory, a full disk, a read-only home, a
//! file size limit).

use super::*;

fn parses(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is torn: {e}\n{text}", path.display()))
}

fn tmp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

#[test]
fn a_state_json_that_is_a_directory_gives_clear_errors_and_the_kernel_keeps_running() {
    let k = Kernel::start("statedir", &[]);
    let state = k.home.path("state.json");
    std::fs::create_dir(&state).unwrap();
    let mut c = k.client();
    for code in [
        "state.set('a', 1)",
        "return state.get('a')",
        "state.update('n', function(v) return (v or 0) + 1 end)",
    ] {
        let cell = run_cell(&mut c, code);
        println!("{code} with state.json a directory: {} {:?}", cell.ename(), cell.evalue());
        assert_eq!(cell.status(), "error", "{code}: {:?}", cell.reply);
        assert!(cell.evalue().contains("state.json"), "{code}: {:?}", cell.reply);
    }
    assert_eq!(value_of(&mut c, "1 + 1"), "2");
    std::fs::remove_dir(&state).unwrap();
    let cell = run_cell(&mut c, "state.set('b', 2) return state.get('b')");
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    assert_eq!(parses(&state)["b"], 2);
    k.assert_alive();
}

/// A small tmpfs (we run as root; skipped with a message otherwise).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Tmpfs { dir })
    }
    /// Makes the directory read-only for new opens: a read-only bind mount over itself (a plain
    /// `remount,ro` is refused while the kernel holds its log and lock open for writing). Dropping
    /// the guard undoes it.
    fn read_only(&self) -> Option<ReadOnly> {
        let bound = std::process::Command::new("mount").arg("--bind").arg(&self.dir).arg(&self.dir).status();
        if !bound.map(|s| s.success()).unwrap_or(false) {
            return None;
        }
        let guard = ReadOnly { dir: self.dir.clone() };
        let s = std::process::Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&self.dir).status();
        s.map(|s| s.success()).unwrap_or(false).then_some(guard)
    }
}

struct ReadOnly {
    dir: PathBuf,
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A kernel whose LLMSPELL_HOME is a 512 KiB tmpfs; None where no tmpfs can be mounted.
struct TmpfsKernel {
    fs: Tmpfs,
    base: Home,
    pid: i32,
    conn: PathBuf,
}

impl TmpfsKernel {
    fn start(name: &str) -> Option<TmpfsKernel> {
        let base = Home::new(name);
        let Some(fs) = Tmpfs::mount(base.path("mnt"), "512k") else {
            println!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return None;
        };
        let out = base
            .cmd(&["kernel", "start", "--daemon", "--id", "h"])
            .env("LLMSPELL_HOME", &fs.dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let conn = fs.dir.join("kernels/h.json");
        let info: Value = serde_json::from_str(&std::fs::read_to_string(&conn).unwrap()).unwrap();
        Some(TmpfsKernel { pid: info["pid"].as_i64().unwrap() as i32, conn, fs, base })
    }
    fn home(&self) -> PathBuf {
        self.fs.dir.clone()
    }
    fn state(&self) -> PathBuf {
        self.fs.dir.join("state.json")
    }
    fn fill(&self) -> PathBuf {
        let filler = self.fs.dir.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for TmpfsKernel {
    fn drop(&mut self) {
        let _ = self.base.cmd(&["kernel", "stop", "--all"]).env("LLMSPELL_HOME", &self.fs.dir).output();
    }
}

#[test]
fn disk_full_and_read_only_home_give_clear_errors_and_no_torn_state() {
    let Some(t) = TmpfsKernel::start("diskfull") else { return };
    let (home, state, pid) = (t.home(), t.state(), t.pid);
    let mut c = Client::connect_file(&t.conn, Duration::from_secs(10)).unwrap();
    assert_eq!(run_cell(&mut c, "state.set('committed', 'v1') state.set('n', 1)").status(), "ok");
    assert_eq!(parses(&state)["committed"], "v1");
    let intact = |what: &str| {
        let v = parses(&state);
        assert_eq!((&v["committed"], &v["n"]), (&json!("v1"), &json!(1)), "{what}");
        assert!(tmp_files(&home).is_empty(), "{what}: temporary files left: {:?}", tmp_files(&home));
    };

    // Disk full: fill the tmpfs, then write more state than fits.
    let filler = t.fill();
    for code in
        ["state.set('big', string.rep('x', 200000))", "state.update('n', function(v) return v + 1 end)"]
    {
        let cell = run_cell(&mut c, code);
        println!("disk full: {code}: {} {:?}", cell.ename(), cell.evalue());
        assert_eq!(cell.status(), "error", "{code}: {:?}", cell.reply);
        assert!(cell.evalue().contains("state.json"), "{:?}", cell.reply);
        assert!(cell.evalue().contains("No space left on device"), "{:?}", cell.reply);
        intact(code);
    }
    // A cell that does not touch state: the kernel answers (see
    // a_failed_state_write_does_not_fail_later_cells_nor_land_later for what it answers).
    let cell = run_cell(&mut c, "6 * 7");
    println!("disk full: a cell without state: {} {:?} {:?}", cell.status(), cell.result, cell.evalue());
    assert!(cell.result.as_deref() == Some("42"));
    assert!(cell.status() == "ok" || cell.evalue().contains("state.json"), "{:?}", cell.reply);
    intact("a cell without state");
    assert!(process_alive(pid));
    std::fs::remove_file(&filler).unwrap();
    let cell = run_cell(&mut c, "state.set('after', 'full') return (state.get('committed'))");
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    let v = parses(&state);
    println!(
        "after freeing space: keys {:?} ('big', whose cell was told it was not saved, {})",
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        if v.get("big").is_some() { "WAS saved later" } else { "is absent" }
    );
    assert_eq!(v["after"], "full");

    // Read-only home.
    let Some(ro) = t.fs.read_only() else {
        println!("SKIPPED the read-only part: cannot make a read-only bind mount here");
        return;
    };
    let before = std::fs::read(&state).unwrap();
    for code in ["state.set('ro', 1)", "state.update('n', function(v) return v + 1 end)"] {
        let cell = run_cell(&mut c, code);
        println!("read-only: {code}: {} {:?}", cell.ename(), cell.evalue());
        assert_eq!(cell.status(), "error", "{code}: {:?}", cell.reply);
        assert!(cell.evalue().contains("state.json"), "{:?}", cell.reply);
        assert!(cell.evalue().contains("Read-only file system"), "{:?}", cell.reply);
        assert_eq!(std::fs::read(&state).unwrap(), before);
    }
    let cell = run_cell(&mut c, "1 + 1");
    assert_eq!(cell.result.as_deref(), Some("2"));
    assert!(process_alive(pid));
    drop(ro);
    assert_eq!(run_cell(&mut c, "state.set('rw', 'again')").status(), "ok");
    assert_eq!(parses(&state)["rw"], "again");
    assert!(process_alive(pid));
}

#[test]
fn a_failed_state_write_does_not_fail_later_cells_nor_land_later() {
    let Some(t) = TmpfsKernel::start("diskfull2") else { return };
    let mut c = Client::connect_file(&t.conn, Duration::from_secs(10)).unwrap();
    let mut other = Client::connect_file(&t.conn, Duration::from_secs(10)).unwrap();
    assert_eq!(run_cell(&mut c, "state.set('committed', 'v1')").status(), "ok");
    let filler = t.fill();
    let cell = run_cell(&mut c, "state.set('big', string.rep('x', 200000))");
    assert!(cell.evalue().contains("were not saved"), "{:?}", cell.reply);
    let cell = run_cell(&mut other, "6 * 7");
    println!(
        "another client's cell without state while the disk is full: {} {:?}",
        cell.status(),
        cell.evalue()
    );
    assert_eq!(cell.status(), "ok", "{:?}", cell.reply);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(run_cell(&mut other, "x = 1").status(), "ok");
    assert!(parses(&t.state()).get("big").is_none(), "the change reported as not saved was saved later");
}

#[test]
fn a_file_size_limit_on_the_kernel_fails_state_writes_without_killing_it() {
    let k = Kernel::start("fsize", &[]);
    let mut c = k.client();
    let state = k.home.path("state.json");
    assert_eq!(run_cell(&mut c, "state.set('committed', 'v1')").status(), "ok");
    let pid = k.pid();
    // RLIMIT_FSIZE of 4 KiB on the running kernel (prlimit(2), as `prlimit --pid` does).
    let lim = libc::rlimit { rlim_cur: 4096, rlim_max: libc::RLIM_INFINITY };
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let conn = k.conn();
    let big = std::thread::spawn(move || {
        let mut c = Client::connect_file(&conn, Duration::from_secs(10)).unwrap();
        let opts = ExecOptions { silent: false, store_history: true, stdin: StdinMode::None };
        c.execute("state.set('big', string.rep('x', 100000))", &opts, None, &mut |_| {}, &mut |_, _| {
            llmspell::client::LineAnswer::Interrupt
        })
        .map(|r| r.content)
        .map_err(|e| e.to_string())
    });
    let reply = big.join().unwrap();
    println!("state write beyond RLIMIT_FSIZE: {reply:?}; kernel alive: {}", process_alive(pid));
    assert!(process_alive(pid), "SIGXFSZ killed the kernel; log:\n{}", tail(&k.log(), 5));
    let reply = reply.unwrap();
    assert_eq!(reply["status"], "error");
    assert!(reply["evalue"].as_str().unwrap().contains("state.json"), "{reply}");
    assert_eq!(parses(&state)["committed"], "v1");
    assert_eq!(value_of(&mut c, "1"), "1");
}
