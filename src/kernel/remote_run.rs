//! An isolated `run` for a remote client (`llmspell --remote URL run`): an execute request whose
//! metadata carries `llmspell.run` is not executed in the session. The script goes to a private
//! temporary file, and the kernel asks its own zygote for a fresh process, as `llmspell run` does
//! locally, but with pipes as fds 0, 1, 2: stdin is fed the bytes the client sent, stdout and
//! stderr come back as the request's `stream` messages. The reply carries the exit code or signal.
//! The metadata's shape is in ARCHITECTURE.md ("Remote kernels").

use crate::lua::{Host, Interrupter, Stream};
use crate::runner::{child, client, proto};
use crate::sys::Wakeup;
use base64::Engine;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// What the client asked for.
#[derive(Debug)]
struct Spec {
    argv: Vec<Vec<u8>>,
    first_arg: usize,
    script: Option<Vec<u8>>,
    stdin: Vec<u8>,
}

/// A refusal: ename and a one-line message.
type Refusal = (&'static str, String);

fn bad(why: &str) -> Refusal {
    ("BadRunRequest", format!("malformed llmspell.run metadata: {why}"))
}

impl Spec {
    fn parse(v: &Value) -> Result<Spec, Refusal> {
        let o = v.as_object().ok_or_else(|| bad("not an object"))?;
        let argv: Vec<Vec<u8>> = o
            .get("argv")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("argv must be a list of strings"))?
            .iter()
            .map(|a| a.as_str().map(|s| s.as_bytes().to_vec()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("argv must be a list of strings"))?;
        let first_arg =
            o.get("first_arg")
                .and_then(Value::as_u64)
                .filter(|&n| n >= 1 && (n as usize) <= argv.len())
                .ok_or_else(|| bad("first_arg must be an index into argv, at least 1"))? as usize;
        let b64 = |key: &str| -> Result<Option<Vec<u8>>, Refusal> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(Some)
                    .map_err(|_| bad(&format!("{key} must be base64"))),
                Some(_) => Err(bad(&format!("{key} must be a base64 string"))),
            }
        };
        let script = match o.get("script") {
            None | Some(Value::Null) => b64("script_base64")?,
            Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
            Some(_) => return Err(bad("script must be a string")),
        };
        Ok(Spec { argv, first_arg, script, stdin: b64("stdin")?.unwrap_or_default() })
    }
}

/// A private temporary directory, removed with what is in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let name = format!("llmspell-run-{}-{}", std::process::id(), crate::wire::random_hex(8));
        let dir = std::env::temp_dir().join(name);
        // Not recursive: the directory must be new (and so ours, 0700).
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the request described by `run` (metadata `llmspell.run`) through the zygote on `socket`,
/// its output written to `host`, `wake` readable on an interrupt (`Shared::interrupt_fd`); returns the reply's content (without execution_count).
pub(super) fn serve(
    run: &Value,
    socket: Option<&Path>,
    interrupt: &Interrupter,
    wake: Option<&Wakeup>,
    host: &mut dyn Host,
) -> Value {
    let outcome = Spec::parse(run).and_then(|spec| {
        let socket = socket.ok_or((
            "RunUnavailable",
            "this kernel has no runner for isolated runs (its zygote did not start; see the kernel's log)"
                .to_string(),
        ))?;
        run_isolated(spec, socket, interrupt, wake, host).map_err(|e| ("RunFailed", e))
    });
    // Any end of the run is `ok` (a traceback in Jupyter for `os.exit(3)` would be noise): how it
    // ended is in `llmspell.exit`, for the CLI to end the same way.
    let exit = |end: Value| json!({"status": "ok", "payload": [], "user_expressions": {}, "llmspell": {"exit": end}});
    match outcome {
        Ok(client::Outcome::Exited(code)) => exit(json!({ "code": code })),
        Ok(client::Outcome::Signaled(sig)) => exit(json!({ "signal": sig })),
        Err((ename, evalue)) => {
            log::warn!("isolated run refused: {evalue}");
            let content =
                json!({"ename": ename, "evalue": evalue, "traceback": [format!("{ename}: {evalue}")]});
            host.publish("error", content.clone());
            let mut reply = content;
            reply["status"] = json!("error");
            reply
        }
    }
}

fn run_isolated(
    mut spec: Spec,
    socket: &Path,
    interrupt: &Interrupter,
    wake: Option<&Wakeup>,
    host: &mut dyn Host,
) -> Result<client::Outcome, String> {
    // The script file, when the run has one (`-` reads it from stdin, which the client fills).
    let mut _dir = None;
    if let Some(pos) = child::script_position(&spec.argv, spec.first_arg) {
        let from_stdin = spec.argv[pos] == b"-" && spec.argv[pos - 1] != b"--";
        if !from_stdin {
            let text = spec.script.take().ok_or("the run names a script but its text was not sent")?;
            let dir = TempDir::new().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            let name =
                Path::new(OsStr::from_bytes(&spec.argv[pos])).file_name().unwrap_or(OsStr::new("script.lua"));
            let path = dir.0.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(&text))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            spec.argv[pos] = path.as_os_str().as_bytes().to_vec();
            _dir = Some(dir);
        }
    }
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the kernel's directory: {e}"))?;
    // `arg` as lua's: its most negative entry is the interpreter, here this kernel's own binary (a
    // script that starts its interpreter again starts llmspell on this host), then lua's command
    // line from the client. Clients before that sent their whole command line; the part before
    // lua's first option names the client's binary, which means nothing here.
    let interpreter =
        std::env::current_exe().map(|p| p.into_os_string().into_vec()).unwrap_or(b"llmspell".into());
    let program = spec.argv[0].clone();
    let argv: Vec<Vec<u8>> = std::iter::once(interpreter).chain(spec.argv.drain(spec.first_arg..)).collect();
    let request = proto::Request {
        argv,
        first_arg: 1,
        program,
        cwd: cwd.as_os_str().as_bytes().to_vec(),
        env: std::env::vars_os().map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat()).collect(),
        umask: crate::sys::current_umask(),
    };
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the kernel's runner ({}: {e})", socket.display()))?;
    let fds = [stdin_r.as_raw_fd(), stdout_w.as_raw_fd(), stderr_w.as_raw_fd()];
    client::send_with_fds(&stream, &request.encode(), fds)?;
    // The run holds its own copies now: ours would keep its stdout open (no EOF) and its stdin too.
    drop((stdin_r, stdout_w, stderr_w));
    // The script's stdin on a thread of its own: a script that reads nothing must not block us. A
    // run that ends without reading it all closes the pipe, and the write fails (EPIPE; SIGPIPE is
    // ignored in Rust programs). Not joined: a process the script left behind may hold the pipe.
    let bytes = std::mem::take(&mut spec.stdin);
    std::thread::Builder::new()
        .name("run-stdin".into())
        .spawn(move || {
            let _ = File::from(stdin_w).write_all(&bytes);
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    wait(&stream, [stdout_r, stderr_r], interrupt, wake, host)
}

/// Until the zygote reports the end: the run's output to `host`, interrupts to the run.
fn wait(
    stream: &UnixStream,
    outputs: [OwnedFd; 2],
    interrupt: &Interrupter,
    wake: Option<&Wakeup>,
    host: &mut dyn Host,
) -> Result<client::Outcome, String> {
    const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];
    let mut open = [true, true];
    let mut reply = Vec::new();
    let mut stream_ref = stream;
    // A stale interrupt (sent while nothing ran) must not stop this run.
    interrupt.take();
    loop {
        if interrupt.take() {
            let msg = [b'S', libc::SIGINT as u8];
            // A gone zygote shows as EOF below.
            let _ = stream_ref.write_all(&msg);
        }
        let fd = |i: usize| if open[i] { outputs[i].as_raw_fd() } else { -1 };
        let mut fds = [
            libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: fd(0), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: fd(1), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: wake.map_or(-1, |w| w.fd()), events: libc::POLLIN, revents: 0 },
        ];
        // Held output is flushed on the frontend's 20 ms rhythm; without the wake-up (none could
        // be made) the interrupt flag is looked at every 100 ms.
        let timeout = match (host.tick(), wake) {
            (true, _) => 20,
            (false, Some(_)) => -1,
            (false, None) => 100,
        };
        // SAFETY: poll on a local array; negative fds are skipped by the kernel.
        if unsafe { libc::poll(fds.as_mut_ptr(), 4, timeout) } < 0 {
            continue; // EINTR
        }
        if fds[3].revents != 0 {
            wake.inspect(|w| w.clear()); // the flag is checked above
            continue;
        }
        for i in 0..2 {
            if fds[i + 1].revents != 0 && !forward(outputs[i].as_raw_fd(), STREAMS[i], host) {
                open[i] = false;
            }
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 64];
            let n = match stream_ref.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            reply.extend_from_slice(&buf[..n]);
            if let Some(outcome) = client::parse_reply(&reply)? {
                // Everything the run wrote is in the pipes by now (it was reaped before the report):
                // take what is there, without waiting for processes it may have left behind.
                for i in 0..2 {
                    if open[i] {
                        drain(outputs[i].as_raw_fd(), STREAMS[i], host);
                    }
                }
                return Ok(outcome);
            }
            if n == 0 {
                return Err("the kernel's runner ended before the run did".into());
            }
        }
    }
}

/// One read from a run's output pipe to `host`; false at EOF.
fn forward(fd: RawFd, stream: Stream, host: &mut dyn Host) -> bool {
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: reading into a local buffer of that length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock);
    }
    if n > 0 {
        host.write(stream, &buf[..n as usize]);
    }
    n > 0
}

/// What a pipe holds now, to `host`.
fn drain(fd: RawFd, stream: Stream, host: &mut dyn Host) {
    // SAFETY: F_SETFL on our own pipe end.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    while readable_now(fd) && forward(fd, stream, host) {}
}

fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd on the stack, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    crate::sys::pipe().map_err(|e| format!("cannot create a pipe: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(v: Value) -> String {
        Spec::parse(&v).unwrap_err().1
    }

    #[test]
    fn a_well_formed_run_parses() {
        let s = Spec::parse(&json!({"argv": ["llmspell", "run", "s.lua", "x"], "first_arg": 2,
            "script": "print(1)", "stdin": "aGk="}))
        .unwrap();
        assert_eq!(s.argv.len(), 4);
        assert_eq!(s.first_arg, 2);
        assert_eq!(s.script.as_deref(), Some(&b"print(1)"[..]));
        assert_eq!(s.stdin, b"hi");
        let s = Spec::parse(&json!({"argv": ["l", "run", "s"], "first_arg": 2, "script_base64": "/w=="}))
            .unwrap();
        assert_eq!(s.script.as_deref(), Some(&b"\xff"[..]));
        assert!(s.stdin.is_empty());
    }

    #[test]
    fn malformed_runs_are_refused_in_one_line() {
        assert!(refusal(json!("x")).contains("not an object"));
        assert!(refusal(json!({"argv": "a b"})).contains("argv"));
        assert!(refusal(json!({"argv": ["a", 1]})).contains("argv"));
        assert!(refusal(json!({"argv": ["a"], "first_arg": 0})).contains("first_arg"));
        assert!(refusal(json!({"argv": ["a"], "first_arg": 5})).contains("first_arg"));
        assert!(refusal(json!({"argv": ["a", "b"], "first_arg": 1, "stdin": "!!"})).contains("stdin"));
        assert!(refusal(json!({"argv": ["a", "b"], "first_arg": 1, "script": 3})).contains("script"));
    }
}
