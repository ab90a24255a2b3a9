//! Unit tests of the store when things go wrong: corrupt files, bad permissions, failed and torn
//! writes, stray temporary files.

use super::*;

fn expect_corrupt<T: fmt::Debug>(r: Result<T, StateError>, path: &Path, op: &str) {
    let err = r.expect_err(op);
    assert!(matches!(err, StateError::Corrupt { .. }), "{op}: {err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{op}: {msg}");
    assert!(msg.contains("llmspell state repair"), "{op}: {msg}");
    assert!(!msg.contains('\n'), "{op}: {msg}");
}

#[test]
fn corrupt_file_fails_every_operation_and_is_left_untouched() {
    for garbage in [&b"{\"a\": 1,"[..], b"[1, 2]", b"", b"\xff\xfe", b"{} {}", b"null"] {
        let dir = TestDir::new();
        let path = dir.state();
        fs::write(&path, garbage).unwrap();
        chmod(&path, 0o600);
        let mut s = Store::open(&path);
        expect_corrupt(s.get("a"), &path, "get");
        expect_corrupt(s.set("a", json!(1)), &path, "set");
        expect_corrupt(s.delete("a"), &path, "delete");
        expect_corrupt(s.keys(None), &path, "keys");
        expect_corrupt(s.clear(), &path, "clear");
        expect_corrupt(s.update("a", increment), &path, "update");
        expect_corrupt(s.export(), &path, "export");
        expect_corrupt(s.import(BTreeMap::from([("a".into(), json!(1))])), &path, "import");
        assert!(!s.has_pending());
        s.flush().unwrap(); // nothing pending: nothing to do
        assert_eq!(fs::read(&path).unwrap(), garbage);
    }
}

#[test]
fn corrupt_message_says_what_is_wrong() {
    let dir = TestDir::new();
    fs::write(dir.state(), "[1]").unwrap();
    let msg = Store::open(dir.state()).get("a").unwrap_err().to_string();
    assert!(msg.contains("an array, not an object"), "{msg}");
    fs::write(dir.state(), "{\"a\": ").unwrap();
    let msg = Store::open(dir.state()).get("a").unwrap_err().to_string();
    assert!(msg.contains("not valid JSON") && msg.contains("line 1"), "{msg}");
}

#[test]
fn pending_changes_are_not_written_over_a_file_corrupted_meanwhile() {
    let dir = TestDir::new();
    let path = dir.state();
    let mut a = Store::open(&path);
    a.set("old", json!(1)).unwrap();
    a.flush().unwrap();
    a.set("new", json!(2)).unwrap();
    fs::write(&path, "garbage").unwrap();
    expect_corrupt(a.flush(), &path, "flush");
    assert!(a.has_pending());
    assert_eq!(fs::read(&path).unwrap(), b"garbage");
    let aside = repair(&path).unwrap().expect("moved aside");
    assert_eq!(fs::read(&aside).unwrap(), b"garbage");
    assert!(aside.to_string_lossy().contains("state.json.corrupt-"), "{}", aside.display());
    a.flush().unwrap();
    assert_eq!(Store::open(&path).export().unwrap(), BTreeMap::from([("new".into(), json!(2))]));
}

#[test]
fn repair_moves_a_corrupt_file_aside_and_a_fresh_store_works() {
    let dir = TestDir::new();
    let path = dir.state();
    assert_eq!(repair(&path).unwrap(), None, "missing file");
    fs::write(&path, "{oops").unwrap();
    let first = repair(&path).unwrap().unwrap();
    assert!(!path.exists());
    assert_eq!(fs::read(&first).unwrap(), b"{oops");
    // A second corrupt file in the same second does not overwrite the first one aside.
    fs::write(&path, "{oops2").unwrap();
    let second = repair(&path).unwrap().unwrap();
    assert_ne!(first, second);
    assert_eq!(fs::read(&first).unwrap(), b"{oops");
    let mut s = Store::open(&path);
    assert_eq!(s.get("a").unwrap(), None);
    s.set("a", json!(1)).unwrap();
    s.flush().unwrap();
    let before = fs::read(&path).unwrap();
    assert_eq!(repair(&path).unwrap(), None, "healthy file");
    assert_eq!(fs::read(&path).unwrap(), before);
    // A directory in the file's place is unusable too.
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    expect_corrupt(Store::open(&path).get("a"), &path, "get on a directory");
    assert!(repair(&path).unwrap().is_some());
    assert_eq!(Store::open(&path).get("a").unwrap(), None);
}

#[test]
fn insecure_file_or_directory_is_refused() {
    let dir = TestDir::new();
    let path = dir.state();
    let mut a = Store::open(&path);
    a.set("a", json!(1)).unwrap();
    a.flush().unwrap();
    chmod(&path, 0o666);
    let err = Store::open(&path).get("a").unwrap_err();
    assert!(matches!(&err, StateError::Insecure { path: p, .. } if *p == path), "{err:?}");
    assert!(err.to_string().contains("chmod go-w") && err.to_string().contains("666"), "{err}");
    // A chmod alone (no content change) is noticed by a store that had cached the file.
    a.set("b", json!(2)).unwrap();
    assert!(matches!(a.flush(), Err(StateError::Insecure { .. })));
    assert!(matches!(repair(&path), Err(StateError::Insecure { .. })), "repair must not hide it");
    chmod(&path, 0o600);
    chmod(&dir.0, 0o777);
    let err = Store::open(&path).get("a").unwrap_err();
    assert!(matches!(&err, StateError::Insecure { path: p, .. } if *p == dir.0), "{err:?}");
    fs::remove_file(&path).unwrap();
    let mut fresh = Store::open(&path);
    fresh.set("a", json!(1)).unwrap();
    assert!(matches!(fresh.flush(), Err(StateError::Insecure { .. })));
    assert!(!path.exists());
}

#[test]
fn files_are_private_and_missing_directories_are_created_private() {
    let dir = TestDir::new();
    let path = dir.0.join("a").join("b").join("state.json");
    let mut s = Store::open(&path);
    assert_eq!(s.get("k").unwrap(), None, "a missing directory is an empty store");
    s.set("k", json!(1)).unwrap();
    s.flush().unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.0.join("a/b/state.json.lock")), 0o600);
    assert_eq!(mode(&dir.0.join("a")), 0o700);
    assert_eq!(mode(&dir.0.join("a/b")), 0o700);
    // A file a user created with a wider (but not writable by others) mode is replaced by a 0600 one.
    chmod(&path, 0o644);
    s.set("k", json!(2)).unwrap();
    s.flush().unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn read_only_directory_flush_fails_and_keeps_pending() {
    let dir = TestDir::new();
    let path = dir.state();
    let mut s = Store::open(&path);
    s.set("keep", json!(1)).unwrap();
    s.flush().unwrap();
    let before = fs::read(&path).unwrap();
    chmod(&dir.0, 0o500);
    if fs::write(dir.0.join("probe"), "").is_ok() {
        // Root ignores permissions; `write_failure_keeps_old_file_and_pending` covers this case.
        eprintln!("read_only_directory_flush_fails_and_keeps_pending: skipped, permissions are not enforced");
        return;
    }
    s.set("new", json!(2)).unwrap();
    let err = s.flush().unwrap_err();
    assert!(matches!(err, StateError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert!(s.has_pending());
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(s.get("new").unwrap(), Some(json!(2)));
    chmod(&dir.0, 0o700);
    s.flush().unwrap();
    assert_eq!(Store::open(&path).get("new").unwrap(), Some(json!(2)));
}

/// Helper for `write_failure_keeps_old_file_and_pending`, run with a small file size limit.
/// Does nothing unless `LLMSPELL_STATE_SMALL_FS` is set.
#[test]
fn helper_write_failure() {
    let Some(path) = std::env::var_os("LLMSPELL_STATE_SMALL_FS") else {
        return;
    };
    let path = PathBuf::from(path);
    let before = fs::read(&path).unwrap();
    let mut s = Store::open(&path);
    s.set("big", json!("x".repeat(100_000))).unwrap();
    let err = s.flush().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StateError::Io { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()) && msg.contains("File too large"), "{msg}");
    assert!(s.has_pending());
    assert_eq!(fs::read(&path).unwrap(), before, "the old file must stay intact");
    assert_eq!(tmp_files(path.parent().unwrap()), Vec::<String>::new(), "no temporary file left");
    assert_eq!(s.get("keep").unwrap(), Some(json!(1)));
    assert_eq!(s.get("big").unwrap().unwrap().as_str().unwrap().len(), 100_000);
    // A retry that fits succeeds.
    s.delete("big").unwrap();
    s.set("small", json!(2)).unwrap();
    s.flush().unwrap();
    println!("helper_write_failure: ok");
}

#[test]
fn write_failure_keeps_old_file_and_pending() {
    let dir = TestDir::new();
    let mut s = Store::open(dir.state());
    s.set("keep", json!(1)).unwrap();
    s.flush().unwrap();
    // RLIMIT_FSIZE makes writes past 8 KiB fail with EFBIG even for root; SIGXFSZ stays
    // ignored across exec, so the failure is a plain error like a full disk.
    let exe = std::env::current_exe().unwrap();
    let module = module_path!().split_once("::").unwrap().1;
    let out = Command::new("/bin/sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 16; exec \"$0\" \"$@\""])
        .arg(exe)
        .args(["--exact", &format!("{module}::helper_write_failure"), "--nocapture"])
        .env("LLMSPELL_STATE_SMALL_FS", dir.state())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("helper_write_failure: ok"), "{stdout}");
    let all = Store::open(dir.state()).export().unwrap();
    assert_eq!(all, BTreeMap::from([("keep".into(), json!(1)), ("small".into(), json!(2))]));
}

fn blob(n: u64) -> String {
    format!("{n};").repeat(20_000)
}

/// Helper for `killed_writer_never_leaves_a_torn_file`: commits versions n+1, n+2, ... forever.
/// Does nothing unless `LLMSPELL_STATE_WRITER` is set.
#[test]
fn helper_torn_writer() {
    let Some(path) = std::env::var_os("LLMSPELL_STATE_WRITER") else {
        return;
    };
    let mut s = Store::open(PathBuf::from(path));
    loop {
        let n = s.get("n").unwrap().map_or(0, |v| v.as_u64().unwrap()) + 1;
        s.set("n", json!(n)).unwrap();
        s.set("blob", json!(blob(n))).unwrap();
        s.flush().unwrap();
    }
}

#[test]
fn killed_writer_never_leaves_a_torn_file() {
    let dir = TestDir::new();
    let path = dir.state();
    let mut last = 0;
    for round in 0..30u64 {
        let mut child =
            helper("faults::helper_torn_writer").env("LLMSPELL_STATE_WRITER", &path).spawn().unwrap();
        // Vary the moment of death: startup, first write, mid-stream.
        std::thread::sleep(Duration::from_millis(10 + round * 37 % 60));
        assert!(child.try_wait().unwrap().is_none(), "the writer died on its own");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !path.exists() {
            continue;
        }
        let text = fs::read(&path).unwrap();
        let parsed: BTreeMap<String, Value> = serde_json::from_slice(&text).expect("torn state file");
        let n = parsed["n"].as_u64().unwrap();
        assert_eq!(parsed["blob"], json!(blob(n)), "inconsistent version {n}");
        assert_eq!(parsed.len(), 2);
        assert!(n >= last, "a committed version was lost: {n} < {last}");
        last = n;
        assert_eq!(Store::open(&path).get("n").unwrap(), Some(json!(n)));
    }
    assert!(last > 0, "the writer never committed");
    eprintln!("killed_writer: {last} versions, {} stray temporary files", tmp_files(&dir.0).len());
}

#[test]
fn stray_temporary_files_are_ignored_and_old_ones_swept() {
    let dir = TestDir::new();
    let fresh = dir.0.join(".state.json.tmp.999999.0");
    let stale = dir.0.join(".state.json.tmp.999999.1");
    fs::write(&fresh, "{\"torn\": ").unwrap();
    fs::write(&stale, "{\"torn\": ").unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
    let mut s = Store::open(dir.state());
    assert_eq!(s.keys(None).unwrap(), Vec::<String>::new());
    s.set("a", json!(1)).unwrap();
    s.flush().unwrap();
    assert!(fresh.exists(), "a recent temporary file may belong to a live writer");
    assert!(!stale.exists(), "an hour-old temporary file is garbage");
    assert_eq!(tmp_files(&dir.0), [".state.json.tmp.999999.0"]);
}

#[test]
fn errors_display_as_one_line() {
    let errors = [
        StateError::BadKey("keys must not be empty".into()),
        StateError::Corrupt { path: "/h/state.json".into(), problem: "not valid JSON: x".into() },
        StateError::Insecure { path: "/h".into(), mode: 0o40777 },
        StateError::Io {
            path: "/h/state.json".into(),
            op: OP_READ,
            err: io::Error::from(io::ErrorKind::PermissionDenied),
        },
    ];
    for e in errors {
        let msg = e.to_string();
        assert!(!msg.contains('\n') && !msg.is_empty(), "{msg}");
        if !matches!(e, StateError::BadKey(_)) {
            assert!(msg.contains("/h"), "{msg}");
        }
    }
    let insecure = StateError::Insecure { path: "/h".into(), mode: 0o40777 }.to_string();
    assert!(insecure.contains("mode 777"), "{insecure}");
}
