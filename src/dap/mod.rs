//! `llmspell dap`: a Debug Adapter Protocol server on stdio (Content-Length framing) that launches one
//! Lua script and debugs it with the kernel's debugger (`kernel/debugger/`, `lua/debug_hook.rs`).
//!
//! Decision: the script runs in this process, in a fresh interpreter (the session's, so the debugger's
//! hook and Lua side are the same code), not through the kernel's zygote: a forked runner would need
//! the debugger's channel carried over the runner socket, which is later work. By default (the
//! editor's debug console) `io.read` sees end of input, and print and io.write become `output` events;
//! child processes' output (os.execute) is forwarded as output too: fd 1 is a pipe here, and the DAP
//! stream uses duplicates of the original stdin and stdout (fd 0 becomes /dev/null, so no child reads
//! the DAP stream). With `"console": "integratedTerminal"` (or `externalTerminal`) and a client that
//! runs commands in a terminal (`runInTerminal`), the script gets that terminal instead: the editor
//! runs `llmspell dap --terminal SOCKET` there, which hands its fds 0-2 over and waits.
//!
//! Threads: the reader (stdin) answers what needs no Lua and forwards the rest, as the kernel's
//! control thread does; the main thread runs the script; a third forwards fd 1's pipe.

mod terminal;

pub use terminal::lend_terminal;

use crate::kernel::debugger::{Debugger, LuaSide, Phase, Transport};
use crate::lua::{self, Host, Input, InputError, Interpreter, Stream};
use crate::wire::Message;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The script's print, io.write and io.read: output events and end of input, or the terminal the
/// client lent (fds 0-2).
struct DapHost {
    out: Out,
    debugger: Arc<Debugger>,
    terminal: bool,
}

/// Writes all of `bytes` to one of this process's fds (the lent terminal), leaving the fd open.
fn write_fd(fd: i32, bytes: &[u8]) {
    // SAFETY: fd 1 or 2, owned by this process; ManuallyDrop keeps the File from closing it.
    let mut file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let _ = file.write_all(bytes);
}

impl Host for DapHost {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        if self.terminal {
            return write_fd(if stream == Stream::Stderr { 2 } else { 1 }, bytes);
        }
        let category = if stream == Stream::Stderr { "stderr" } else { "stdout" };
        let body = json!({ "category": category, "output": String::from_utf8_lossy(bytes) });
        self.out.send(&self.debugger.event_content("output", body));
    }
    fn tick(&mut self) -> bool {
        false
    }
    fn publish(&mut self, _msg_type: &str, _content: Value) {}
    fn input(&mut self, prompt: &str, _password: bool) -> Result<Input, InputError> {
        if !self.terminal {
            // No terminal: the debug console has no stdin to give.
            return Ok(Input::Eof);
        }
        write_fd(1, prompt.as_bytes());
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            // SAFETY: a one-byte read into a local from fd 0 (the lent terminal).
            let n = unsafe { libc::read(0, byte.as_mut_ptr() as *mut libc::c_void, 1) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                return Ok(if line.is_empty() {
                    Input::Eof
                } else {
                    Input::Line(String::from_utf8_lossy(&line).into())
                });
            }
            if byte[0] == b'\n' {
                return Ok(Input::Line(String::from_utf8_lossy(&line).into()));
            }
            line.push(byte[0]);
        }
    }
    fn line_input(&self) -> bool {
        self.terminal
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
    /// `runInTerminal`'s kind ("integrated" or "external") when the script asked for a terminal.
    terminal: Option<&'static str>,
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
            terminal: match args["console"].as_str() {
                Some("integratedTerminal") => Some("integrated"),
                Some("externalTerminal") => Some("external"),
                _ => None,
            },
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
    // The DAP stream's input is a duplicate of stdin too; fd 0 becomes /dev/null (or the lent terminal).
    // SAFETY: dup of an fd this process owns; the new fd is owned by the File.
    let input = unsafe {
        let fd = libc::dup(0);
        if fd < 0 {
            return Err("cannot duplicate stdin".into());
        }
        File::from_raw_fd(fd)
    };
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: dup2 of /dev/null onto fd 0, which this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    let debugger = Arc::new(Debugger::new());
    let stdout_done = forward_stdout(out.clone(), debugger.clone())?;
    let interrupter: Arc<lua::Interrupter> = Arc::default();
    let terminals = Arc::new(AtomicBool::new(false));
    let (start_tx, start_rx) = crossbeam_channel::unbounded::<Start>();
    {
        let (out, debugger, interrupter, terminals) =
            (out.clone(), debugger.clone(), interrupter.clone(), terminals.clone());
        std::thread::Builder::new()
            .name("dap-reader".into())
            .spawn(move || read_requests(input, out, &debugger, &interrupter, &terminals, start_tx))
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
    let lent = match launch.terminal {
        Some(kind) if terminals.load(Ordering::SeqCst) => {
            match terminal::borrow(kind, &launch, &out, &debugger, interrupter.clone(), &terminals) {
                Ok(stream) => Some(stream),
                Err(e) => {
                    let body = json!({ "category": "stderr", "output": format!("llmspell dap: {e}; using the debug console\n") });
                    out.send(&debugger.event_content("output", body));
                    None
                }
            }
        }
        _ => None,
    };
    let code = run_program(&launch, &out, &debugger, interrupter, lent.is_some());
    // The terminal's command ends when we let go of it.
    if let Some(stream) = lent {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
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
    terminal: bool,
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
    let host = DapHost { out: out.clone(), debugger: debugger.clone(), terminal };
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
            // The script's own error goes where its stderr goes: the terminal, or the debug console.
            let text = e.traceback.join("\n");
            if terminal {
                write_fd(2, format!("{text}\n").as_bytes());
            } else {
                say(text);
            }
            1
        }
    }
}

/// fd 1 (child processes, C modules) as output events. The receiver hears when the pipe has ended.
fn forward_stdout(out: Out, debugger: Arc<Debugger>) -> Result<crossbeam_channel::Receiver<()>, String> {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let (reader, writer) = crate::sys::pipe().map_err(|_| "cannot redirect stdout")?;
    // SAFETY: dup2 of our own pipe's write end onto fd 1 (the original closes when dropped).
    if unsafe { libc::dup2(writer.as_raw_fd(), 1) } < 0 {
        return Err("cannot redirect stdout".into());
    }
    drop(writer);
    let reader = File::from(reader);
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

/// The reader thread: requests from the DAP stream, answered here or forwarded to the Lua side.
fn read_requests(
    input: File,
    out: Out,
    debugger: &Debugger,
    interrupter: &lua::Interrupter,
    terminals: &AtomicBool,
    start: crossbeam_channel::Sender<Start>,
) {
    let mut input = BufReader::new(input);
    while let Some(message) = read_message(&mut input) {
        let request = match message {
            Ok(r) => r,
            Err(e) => {
                log::warn!("{e}");
                continue;
            }
        };
        // The client's answer to runInTerminal: the terminal's command connects to us instead, unless
        // the client could not run it (then the script gets the debug console at once).
        if request["type"] == "response" {
            if request["command"] == "runInTerminal" && request["success"] == false {
                terminals.store(false, Ordering::SeqCst);
            }
            continue;
        }
        let command = request["command"].as_str().unwrap_or("").to_string();
        if command == "initialize" {
            let can = request["arguments"]["supportsRunInTerminalRequest"].as_bool() == Some(true);
            terminals.store(can, Ordering::SeqCst);
        }
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
