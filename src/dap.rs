//! `llmspell dap`: a Debug Adapter Protocol server on stdio (Content-Length framing) that launches one
//! Lua script and debugs it with the kernel's debugger (`kernel/debugger.rs`, `lua/debug_hook.rs`).
//!
//! Decision: the script runs in this process, in a fresh interpreter (the session's, so the debugger's
//! hook and Lua side are the same code), not through the kernel's zygote: a forked runner would need
//! the debugger's channel carried over the runner socket, which is later work. Differences from
//! `llmspell run` this brings: `io.read` sees end of input (stdin is the DAP stream), and print and
//! io.write become `output` events. Child processes' output (os.execute) is forwarded as output too:
//! fd 1 is a pipe here, and the DAP stream goes to a duplicate of the original stdout.
//!
//! Threads: the reader (stdin) answers what needs no Lua and forwards the rest, as the kernel's
//! control thread does; the main thread runs the script; a third forwards fd 1's pipe.

use crate::kernel::debugger::{Debugger, LuaSide, Phase, Transport};
use crate::lua::{self, Host, Input, InputError, Interpreter, Stream};
use crate::wire::Message;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The DAP output stream (the original stdout), shared by every thread that writes to it.
#[derive(Clone)]
struct Out(Arc<Mutex<File>>);

impl Out {
    fn send(&self, message: &Value) {
        let body = message.to_string();
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write!(f, "Content-Length: {}\r\n\r\n{body}", body.len());
        let _ = f.flush();
    }
}

/// Answers and events of the Lua side, as DAP messages on stdout.
struct DapTransport {
    out: Out,
}

impl Transport for DapTransport {
    fn respond(&self, _request: &Message, response: Value) {
        self.out.send(&response);
    }

    fn event(&self, debugger: &Debugger, event: &str, body: Value) {
        self.out.send(&debugger.event_content(event, body));
    }

    fn flush_output(&self) {}
}

/// The script's print and io.write, as output events.
struct DapHost {
    out: Out,
    debugger: Arc<Debugger>,
}

impl Host for DapHost {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let category = if stream == Stream::Stderr { "stderr" } else { "stdout" };
        let body = json!({ "category": category, "output": String::from_utf8_lossy(bytes) });
        self.out.send(&self.debugger.event_content("output", body));
    }
    fn tick(&mut self) -> bool {
        false
    }
    fn publish(&mut self, _msg_type: &str, _content: Value) {}
    fn input(&mut self, _prompt: &str, _password: bool) -> Result<Input, InputError> {
        // stdin is the DAP stream.
        Ok(Input::Eof)
    }
    fn line_input(&self) -> bool {
        false
    }
    fn sync_output(&mut self) {}
}

/// What `launch` asked for.
#[derive(Default, Clone)]
struct Launch {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, Option<String>)>,
    stop_on_entry: bool,
}

impl Launch {
    fn read(args: &Value) -> Result<Launch, String> {
        let program = args["program"].as_str().ok_or("launch needs a \"program\" (the Lua script)")?;
        let strings = |v: &Value| {
            v.as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect()
        };
        let env = args["env"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map(String::from))).collect())
            .unwrap_or_default();
        Ok(Launch {
            program: program.to_string(),
            args: strings(&args["args"]),
            cwd: args["cwd"].as_str().filter(|c| !c.is_empty()).map(String::from),
            env,
            stop_on_entry: args["stopOnEntry"].as_bool().unwrap_or(false),
        })
    }
}

/// What the reader tells the main thread.
enum Start {
    Launch(Launch),
    ConfigurationDone,
    /// The client disconnected (or stdin ended) before the program started.
    Quit,
}

/// Runs the adapter until the client disconnects; the process's exit code (0 unless the adapter failed).
pub fn serve() -> Result<u8, String> {
    // The DAP stream keeps the original stdout; fd 1 becomes a pipe forwarded as output events, so
    // nothing the script's children write can corrupt the stream.
    // SAFETY: dup/pipe/dup2 on fds this process owns.
    let out = unsafe {
        let fd = libc::dup(1);
        if fd < 0 {
            return Err("cannot duplicate stdout".into());
        }
        Out(Arc::new(Mutex::new(File::from_raw_fd(fd))))
    };
    let debugger = Arc::new(Debugger::new());
    let stdout_done = forward_stdout(out.clone(), debugger.clone())?;
    let interrupter: Arc<lua::Interrupter> = Arc::default();
    let (start_tx, start_rx) = crossbeam_channel::unbounded::<Start>();
    {
        let (out, debugger, interrupter) = (out.clone(), debugger.clone(), interrupter.clone());
        std::thread::Builder::new()
            .name("dap-reader".into())
            .spawn(move || read_requests(out, &debugger, &interrupter, start_tx))
            .map_err(|e| e.to_string())?;
    }
    // Wait for launch and configurationDone (in either order), as DAP clients send them.
    let mut launch = None;
    let mut configured = false;
    while launch.is_none() || !configured {
        match start_rx.recv() {
            Ok(Start::Launch(l)) => launch = Some(l),
            Ok(Start::ConfigurationDone) => configured = true,
            Ok(Start::Quit) | Err(_) => return Ok(0),
        }
    }
    let launch = launch.unwrap_or_default();
    let code = run_program(&launch, &out, &debugger, interrupter);
    // What children wrote goes out before `exited`: close our end of fd 1's pipe and let the
    // forwarder read to its end (a child still running keeps it open: not waited for long).
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 of /dev/null onto fd 1, which this process owns.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1) };
    }
    let _ = stdout_done.recv_timeout(Duration::from_secs(2));
    out.send(&debugger.event_content("exited", json!({ "exitCode": code })));
    out.send(&debugger.event_content("terminated", json!({})));
    // The client says disconnect now; it is answered by the reader, which then ends the process. The
    // adapter itself succeeded: the script's code went out in `exited`.
    let _ = start_rx.recv_timeout(Duration::from_secs(10));
    Ok(0)
}

/// Runs the launched script on this thread; its exit code.
fn run_program(
    launch: &Launch,
    out: &Out,
    debugger: &Arc<Debugger>,
    interrupter: Arc<lua::Interrupter>,
) -> i32 {
    let say = |text: String| {
        let body = json!({ "category": "stderr", "output": format!("{text}\n") });
        out.send(&debugger.event_content("output", body));
    };
    if let Some(dir) = &launch.cwd {
        if let Err(e) = std::env::set_current_dir(dir) {
            say(format!("llmspell dap: cannot change to {dir}: {e}"));
            return 1;
        }
    }
    for (k, v) in &launch.env {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    let path = crate::kernel::debugger::canonical(&launch.program);
    let source = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => {
            say(format!("llmspell dap: cannot read {path}: {e}"));
            return 1;
        }
    };
    // A `#!` line is a comment to Lua's own loader, which the interpreter's `load` is not.
    let source = if source.starts_with("#!") { format!("--{source}") } else { source };
    let host = DapHost { out: out.clone(), debugger: debugger.clone() };
    let opts = lua::Options { memory_limit: None, state_path: crate::connection::home().join("state.json") };
    let mut interp = match Interpreter::new(Box::new(host), interrupter, opts) {
        Ok(i) => i,
        Err(e) => {
            say(format!("llmspell dap: {e}"));
            return 1;
        }
    };
    let side = std::rc::Rc::new(LuaSide::new(debugger.clone(), Box::new(DapTransport { out: out.clone() })));
    if let Err(e) = interp.attach_debugger(side.clone()) {
        say(format!("llmspell dap: {e}"));
        return 1;
    }
    if let Err(e) = interp.set_script_args(&launch.program, &launch.args) {
        say(format!("llmspell dap: {e}"));
        return 1;
    }
    if launch.stop_on_entry {
        side.stop_on_entry();
    }
    side.enter_phase(Phase::Running, &mut interp);
    let outcome = interp.execute_named(&source, Some(&path));
    side.enter_phase(Phase::Idle, &mut interp);
    match outcome.error {
        None => 0,
        Some(e) => {
            if let Some(code) = e.evalue.strip_prefix("llmspell dap: os.exit ") {
                return code.trim().parse().unwrap_or(0);
            }
            say(e.traceback.join("\n"));
            1
        }
    }
}

/// fd 1 (child processes, C modules) as output events. The receiver hears when the pipe has ended.
fn forward_stdout(out: Out, debugger: Arc<Debugger>) -> Result<crossbeam_channel::Receiver<()>, String> {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let mut fds = [0; 2];
    // SAFETY: a fresh pipe; its write end replaces fd 1, its read end is owned by the thread below.
    let reader = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 || libc::dup2(fds[1], 1) < 0 {
            return Err("cannot redirect stdout".into());
        }
        libc::close(fds[1]);
        File::from_raw_fd(fds[0])
    };
    std::thread::Builder::new()
        .name("dap-stdout".into())
        .spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let body = json!({ "category": "stdout", "output": String::from_utf8_lossy(&buf[..n]) });
                out.send(&debugger.event_content("output", body));
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| e.to_string())?;
    Ok(done_rx)
}

/// One DAP message from a Content-Length framed stream; None at its end.
fn read_message(input: &mut impl BufRead) -> Option<Result<Value, String>> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if input.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            if length.is_some() {
                break;
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("Content-Length:") {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0u8; length?];
    input.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).map_err(|e| format!("a DAP message that is not JSON: {e}")))
}

/// The reader thread: requests from stdin, answered here or forwarded to the Lua side.
fn read_requests(
    out: Out,
    debugger: &Debugger,
    interrupter: &lua::Interrupter,
    start: crossbeam_channel::Sender<Start>,
) {
    let mut input = BufReader::new(std::io::stdin().lock());
    while let Some(message) = read_message(&mut input) {
        let request = match message {
            Ok(r) => r,
            Err(e) => {
                log::warn!("{e}");
                continue;
            }
        };
        let command = request["command"].as_str().unwrap_or("").to_string();
        let msg = Message { content: request.clone(), ..Message::default() };
        match command.as_str() {
            "launch" => match Launch::read(&request["arguments"]) {
                Ok(l) => {
                    let _ = start.send(Start::Launch(l));
                }
                Err(e) => {
                    out.send(&json!({ "seq": 0, "type": "response", "request_seq": request["seq"],
                        "command": "launch", "success": false, "message": e }));
                    continue;
                }
            },
            "configurationDone" => {
                let _ = start.send(Start::ConfigurationDone);
            }
            "disconnect" | "terminate" => {
                let body = json!({ "seq": 0, "type": "response", "request_seq": request["seq"],
                    "command": command, "success": true, "body": {} });
                out.send(&body);
                let _ = start.send(Start::Quit);
                // The script may be running or stopped: the process ends with it.
                std::process::exit(0);
            }
            _ => {}
        }
        let mut events = Vec::new();
        if let Some(response) = debugger.handle(&msg, interrupter, &mut events) {
            out.send(&response);
        }
        for (event, body) in events {
            out.send(&debugger.event_content(event, body));
        }
    }
    let _ = start.send(Start::Quit);
    // stdin ended: the client is gone, and so is the program.
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::read_message;

    #[test]
    fn frames_are_read_by_their_content_length() {
        let text = "Content-Length: 13\r\n\r\n{\"seq\":1}    Content-Length: 2\r\n\r\n{}";
        let mut input = std::io::Cursor::new(text.as_bytes().to_vec());
        let first = read_message(&mut input).unwrap().unwrap();
        assert_eq!(first["seq"], 1);
        assert_eq!(read_message(&mut input).unwrap().unwrap(), serde_json::json!({}));
        assert!(read_message(&mut input).is_none());
    }
}
