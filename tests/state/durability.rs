//! Batching (a cell's writes reach the file once) and durability under kill -9.

use super::*;

// ------------------------------------------------------------------------------------------------
// Batching
// ------------------------------------------------------------------------------------------------

/// The state file is replaced by rename, so every commit gives it a new inode. The cell compares
/// the file's bytes before and after its loop (no write during the cell); the test holds the old
/// version open (so its inode cannot be recycled) and checks the inode changed across the cell
/// (one write at the end), and that cells without state writes do not touch the file.
#[test]
fn a_cell_setting_100000_keys_writes_the_file_once() {
    let home = Home::new("state-batch");
    cell(&home, "default", r#"state.set("seed", 0)"#);
    let path = state_path(&home);
    let old = std::fs::File::open(&path).unwrap();
    let before = old.metadata().unwrap();
    let started = Instant::now();
    let out = cell(
        &home,
        "default",
        &format!(
            r#"
            local function read() local f = assert(io.open("{path}", "rb")); local s = f:read("a"); f:close(); return s end
            local at_start = read()
            for i = 1, 100000 do state.set("k" .. i, i) end
            assert(read() == at_start, "state.json was rewritten during the cell")
            assert(state.get("k100000") == 100000)
            print("keys " .. #state.keys("k"))
            "#,
            path = path.display()
        ),
    );
    assert!(out.contains("keys 100000"), "{out}");
    eprintln!("a cell setting 100 000 keys took {:?}", started.elapsed());
    let after = std::fs::metadata(&path).unwrap();
    assert_ne!(after.ino(), before.ino(), "the file was not rewritten after the cell");
    let file = state_file(&home);
    assert_eq!(file.len(), 100_001);
    assert_eq!(file["k77777"], json!(77777));
    drop(old);

    // Cells that only read, or do nothing with state, leave the file alone.
    let held = std::fs::File::open(&path).unwrap();
    let stamp = |m: &std::fs::Metadata| (m.ino(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
    let before = stamp(&held.metadata().unwrap());
    cell(&home, "default", r#"assert(state.get("k1") == 1); assert(#state.keys("k9") > 0)"#);
    cell(&home, "default", "x = 1");
    assert_eq!(stamp(&std::fs::metadata(&path).unwrap()), before, "a cell without writes rewrote the file");
    drop(held);
}

// ------------------------------------------------------------------------------------------------
// Durability under kill -9
// ------------------------------------------------------------------------------------------------

/// Each version is `{n = n, s = string.rep(n .. ";", REPS)}`: `s` is derived from `n`, so a torn or
/// mixed file is caught; ~100 KB, so a write takes many syscalls and a non-atomic one would be seen.
const REPS: usize = 20_000;

fn version_lua() -> String {
    format!(r#"local function version(n) return {{n = n, s = string.rep(n .. ";", {REPS})}} end"#)
}

/// The version in the state file: `Ok(None)` before the first commit, `Err` if the file does not
/// parse or is not one self-consistent version (never panics: used while writers run).
fn read_version(home: &Home) -> Result<Option<u64>, String> {
    let bytes = match std::fs::read(state_path(home)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read state.json: {e}")),
    };
    let file: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("state.json ({} bytes) does not parse: {e}", bytes.len()))?;
    let Some(x) = file.get("x") else {
        return if file.is_empty() { Ok(None) } else { Err(format!("unexpected keys {:?}", file.keys())) };
    };
    if file.len() != 1 {
        return Err(format!("unexpected keys {:?}", file.keys()));
    }
    let n = x["n"].as_u64().ok_or_else(|| format!("x.n is not a count: {}", x["n"]))?;
    if x["s"].as_str() != Some(format!("{n};").repeat(REPS).as_str()) {
        return Err(format!("inconsistent version: x.s does not belong to x.n = {n}"));
    }
    Ok(Some(n))
}

/// Polls the state file while `reading` holds: every read must be one whole committed version, never
/// older than one seen before. Returns how many reads it made.
fn watch_versions(home: &Home, reading: &AtomicBool, floor: u64) -> Result<usize, String> {
    let (mut last, mut reads) = (floor, 0);
    while reading.load(Ordering::SeqCst) {
        if let Some(n) = read_version(home)? {
            if n < last {
                return Err(format!("the file went back from version {last} to {n}"));
            }
            last = n;
        }
        reads += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(reads)
}

/// Workload 1: one `run` script; each state.update commits at once and is then printed. `acked`
/// keeps the highest version printed. Returns when the run has ended (its kernel is killed).
fn run_updater(home: &Home, updater: &Path, acked: &AtomicU64) {
    let mut child = home
        .cmd(&["run", updater.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(n) = line.trim().parse::<u64>() {
                    acked.fetch_max(n, Ordering::SeqCst);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`llmspell run` did not end after its kernel was killed");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        reader.join().unwrap();
    });
}

/// Workload 2: repeated cells, each a loop of 100 sets (committed once, before the reply), until
/// `stop`. `acked` keeps the highest version a reply acknowledged.
fn repeat_cells(home: &Home, cell_code: &str, acked: &AtomicU64, stop: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let o = home.run(&["exec", cell_code], "");
        if o.status.success() {
            acked.fetch_max(stdout(&o).trim().parse().expect("exec returns n"), Ordering::SeqCst);
        }
    }
}

/// What one round saw: whether the workload committed before the kill, and the reader's verdict.
struct Round {
    progressed: bool,
    observed: Result<usize, String>,
}

/// One round: a live kernel, a reader of the file and a workload (`run` script on even rounds,
/// cells on odd ones); once the workload has committed past `floor`, waits `delay` and kills the
/// kernel with SIGKILL.
fn kill_9_round(
    home: &Home,
    round: u64,
    floor: u64,
    updater: &Path,
    cell_code: &str,
    acked: &AtomicU64,
) -> Round {
    ok(home, &["exec", "return 1"], ""); // a live kernel
    let pid = home.kernel_pid("default").unwrap();
    let delay = Duration::from_millis(round * 37 % 150);
    let stop = AtomicBool::new(false);
    let reading = AtomicBool::new(true);
    std::thread::scope(|s| {
        let observer = s.spawn(|| watch_versions(home, &reading, floor));
        let worker = if round.is_multiple_of(2) {
            s.spawn(|| run_updater(home, updater, acked))
        } else {
            s.spawn(|| repeat_cells(home, cell_code, acked, &stop))
        };
        // Wait for the workload to commit something, then kill at a varied moment.
        let progressed =
            wait_until(Duration::from_secs(60), || matches!(read_version(home), Ok(Some(n)) if n > floor));
        if progressed {
            std::thread::sleep(delay);
        }
        stop.store(true, Ordering::SeqCst);
        let killed = kill9(home, "default");
        let worker_result = worker.join();
        reading.store(false, Ordering::SeqCst);
        let observed = observer.join().unwrap();
        assert_eq!(killed, pid, "the killed kernel is the one the workload used");
        assert!(worker_result.is_ok(), "round {round}: the workload failed");
        eprintln!("round {round}: killed {delay:?} after the first commit");
        Round { progressed, observed }
    })
}

#[test]
fn kill_9_during_writes_leaves_a_committed_version() {
    let home = Home::new("state-kill9");
    let updater = write_file(
        &home.dir,
        "updater.lua",
        &format!(
            r#"{}
            while true do
              local v = state.update("x", function(v) return version((v and v.n or 0) + 1) end)
              print(v.n)
            end
            "#,
            version_lua()
        ),
    );
    let cell_code = format!(
        r#"{}
        local v = state.get("x"); local n = v and v.n or 0
        for i = n + 1, n + 100 do state.set("x", version(i)) end
        return n + 100
        "#,
        version_lua()
    );
    let mut floor = 0;
    for round in 0..16u64 {
        let acked = AtomicU64::new(0);
        let Round { progressed, observed } = kill_9_round(&home, round, floor, &updater, &cell_code, &acked);
        let reads = observed.unwrap_or_else(|e| panic!("round {round}: a reader saw a bad state file: {e}"));
        assert!(progressed, "round {round}: the workload never committed");
        let n = read_version(&home)
            .unwrap_or_else(|e| panic!("round {round}: after kill -9: {e}"))
            .expect("a committed version");
        let acked = acked.load(Ordering::SeqCst);
        eprintln!("round {round}: file n = {n}, acknowledged {acked}, {reads} reads");
        assert!(n >= acked, "round {round}: version {acked} was acknowledged but the file holds {n}");
        assert!(n > floor, "round {round}: nothing committed ({n} <= {floor})");
        // A new kernel sees exactly the committed version.
        let seen = ok(
            &home,
            &[
                "exec",
                &format!(
                    r#"local v = state.get("x"); assert(v.s == string.rep(v.n .. ";", {REPS})); return v.n"#
                ),
            ],
            "",
        );
        assert_eq!(seen.trim(), n.to_string(), "round {round}: a new kernel sees another version");
        floor = n;
    }
}
