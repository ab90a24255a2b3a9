//! The `llmspell` command line (issue 3): one shared, auto-started kernel behind `run`, `exec` and
//! `repl`, kernel management, exit codes. Every test runs the built binary in its own LLMSPELL_HOME;
//! the `Home` helper stops that home's kernels when the test ends.
//!
//! `jupyter console --existing` against a kernel started by `llmspell exec` is covered by the Python
//! tests (tests/jupyter/test_console.py), not here.
//!
//! One module per area: `discovery` (finding or starting the kernel), `sessions` (exec, repl and run
//! on one kernel), `exec` (exec, the command line and exit codes), `kernel_cmd` (`llmspell kernel
//! ...`), `repl`. Their shared helpers are here.

#[path = "../common/mod.rs"]
mod common;
mod discovery;
mod exec;
mod kernel_cmd;
mod repl;
mod sessions;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const LONG: Duration = Duration::from_secs(60);

/// Pids of the still running kernel processes of this home: `llmspell kernel start ...` whose
/// command line mentions the home's path (the kernel's --log-file lives inside it).
fn kernel_processes(home: &Home) -> Vec<i32> {
    let needle = home.dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_kernel = args.windows(2).any(|w| w[0] == "kernel" && w[1] == "start");
        if is_kernel && args.iter().any(|a| a.contains(&needle)) && any_thread_alive(pid) {
            pids.push(pid);
        }
    }
    pids.sort();
    pids
}

/// The file names in `$LLMSPELL_HOME/kernels`, sorted (empty if the directory does not exist).
fn kernel_files(home: &Home) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.kernels_dir())
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn has_file(home: &Home, name: &str) -> bool {
    home.kernels_dir().join(name).exists()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| panic!("killed by a signal: {:?}", o.status))
}

fn show(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, stdout(o), stderr(o))
}

/// `llmspell ARGS` must succeed; returns its stdout.
fn ok(home: &Home, args: &[&str]) -> String {
    let o = home.run(args, "");
    assert_eq!(code(&o), 0, "llmspell {args:?} failed: {}", show(&o));
    stdout(&o)
}

/// Runs a prepared command with empty stdin, killing it if it outlives `timeout`.
fn output_of(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut guard = Guard(Some(child));
    let status = guard.wait(timeout);
    let mut child = guard.0.take().unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let _ = child.wait(); // already exited: returns its status at once
    Output { status, stdout: out, stderr: err }
}

/// A child process that is killed (and reaped) if the test lets go of it early, e.g. on panic.
struct Guard(Option<Child>);

impl Guard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }
    /// Waits for the child to exit; panics (killing it) after `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child().try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child().kill();
                panic!("the child process did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines of a child's pipe as they arrive, each with the instant it was read.
fn line_reader(pipe: impl Read + Send + 'static) -> mpsc::Receiver<(String, Instant)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send((line, Instant::now())).is_err() {
                break;
            }
        }
    });
    rx
}

/// Whole output of a pipe, collected on a thread (so the child never blocks on a full pipe).
fn collector(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// Starts `llmspell ARGS` with stdout/stderr piped (stdin: null), killed on drop.
fn spawn(home: &Home, args: &[&str]) -> Guard {
    let child = home
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the llmspell binary runs");
    Guard(Some(child))
}

/// Waits for a line equal to `want`; panics with what came instead after LONG.
fn expect_line(rx: &mpsc::Receiver<(String, Instant)>, want: &str) -> Instant {
    let deadline = Instant::now() + LONG;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((line, at)) if line == want => return at,
            Ok((line, _)) => seen.push(line),
            Err(_) => panic!("no line {want:?} on the child's stdout; saw {seen:?}"),
        }
    }
}

/// Whether any thread of process `pid` is still running. The main thread turns zombie before the
/// others have finished exiting (and closed the files, releasing the kernel's lock), so
/// `process_alive(pid)` alone is not enough after a kill.
fn any_thread_alive(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| match std::fs::read_to_string(t.path().join("stat")) {
        Ok(stat) => {
            !stat.rsplit_once(") ").map(|(_, r)| r.starts_with('Z') || r.starts_with('X')).unwrap_or(true)
        }
        Err(_) => false,
    })
}

/// `kill -9` a kernel and wait until it is completely gone.
fn sigkill(pid: i32) {
    // SAFETY: kill(2) on a pid this test found as one of its own home's kernels.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9 {pid}");
    assert!(wait_until(Duration::from_secs(10), || !any_thread_alive(pid)), "kernel {pid} survived kill -9");
}

fn sigint(pid: i32) {
    // SAFETY: kill(2) on the pid of a child this test spawned and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "kill -INT {pid}");
}

/// Starts the default kernel through `exec` and returns its pid.
fn start_default(home: &Home) -> i32 {
    ok(home, &["exec", "started_by_test = true"]);
    home.kernel_pid("default").expect("the connection file has the kernel's pid")
}

fn script(home: &Home, name: &str, text: &str) -> String {
    write_file(&home.dir, name, text).to_string_lossy().into_owned()
}

fn nonempty_lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}
