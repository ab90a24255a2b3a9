//! A terminal lent by the editor (`"console": "integratedTerminal"`): the adapter asks the client to
//! run `llmspell dap --terminal SOCKET` there (`runInTerminal`), and that command hands its fds 0-2
//! over a unix socket, then carries Ctrl-C back as interrupts until the script ends.

use super::{Launch, Out};
use crate::kernel::debugger::Debugger;
use crate::lua;
use serde_json::json;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Asks the client to run `llmspell dap --terminal SOCKET` in a terminal (`runInTerminal`) and makes
/// the fds that command hands over this process's 0, 1 and 2. The connection stays open while the
/// script runs (a Ctrl-C in the terminal comes over it as an interrupt); closing it ends the command.
pub(super) fn borrow(
    kind: &str,
    launch: &Launch,
    out: &Out,
    debugger: &Debugger,
    interrupter: Arc<lua::Interrupter>,
    terminals: &AtomicBool,
) -> Result<UnixStream, String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("llmspell-dap-{}", crate::wire::random_hex(6)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let socket = dir.join("terminal");
    let got = UnixListener::bind(&socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))
        .and_then(|listener| {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
            let cwd = match &launch.cwd {
                Some(dir) => dir.clone(),
                None => std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            };
            let args = json!({
                "kind": kind,
                "title": format!("llmspell: {}", launch.program),
                "cwd": cwd,
                "args": [exe.display().to_string(), "dap", "--terminal", socket.display().to_string()],
            });
            out.send(&debugger.request_content("runInTerminal", args));
            accept_terminal(&listener, Duration::from_secs(30), terminals)
        });
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_dir(&dir);
    let stream = got?;
    let watch = stream.try_clone().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("dap-terminal".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            while matches!((&watch).read(&mut byte), Ok(1)) {
                interrupter.interrupt();
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// The terminal command's connection, once it has sent its fds 0-2 (which are now ours); an error
/// if the client says it could not run the command (`terminals` turns false) or `wait` passes.
fn accept_terminal(
    listener: &UnixListener,
    wait: Duration,
    terminals: &AtomicBool,
) -> Result<UnixStream, String> {
    let deadline = std::time::Instant::now() + wait;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(_) if !terminals.load(Ordering::SeqCst) => {
                return Err("the client could not run the terminal command".into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(format!("the client ran no terminal command within {} s", wait.as_secs()));
            }
            Err(e) => return Err(format!("cannot accept the terminal: {e}")),
        }
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut ready = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd on the stack.
    unsafe { libc::poll(&mut ready, 1, 10_000) };
    let mut buf = [0u8; 1];
    let (_, fds) = crate::sys::recv_with_fds(stream.as_raw_fd(), &mut buf)
        .map_err(|e| format!("cannot receive the terminal: {e}"))?;
    if fds.len() != 3 {
        return Err("the terminal command sent no terminal".into());
    }
    for (target, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 of a received fd onto one of ours (0, 1, 2).
        unsafe { libc::dup2(fd.as_raw_fd(), target as i32) };
    }
    Ok(stream)
}

/// `llmspell dap --terminal SOCKET`, run by the editor in a terminal for a script launched with
/// `"console": "integratedTerminal"`: hands this terminal (fds 0-2) to the adapter listening on
/// SOCKET, sends Ctrl-C over as interrupts, and returns when the adapter lets go (the script ended).
pub fn lend_terminal(socket: &str) -> Result<u8, String> {
    let stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the debug adapter at {socket}: {e}"))?;
    let signals = signal_hook::iterator::Signals::new([libc::SIGINT]).map_err(|e| e.to_string())?;
    crate::runner::client::send_with_fds(&stream, b"t", [0, 1, 2])?;
    let notify = stream.try_clone().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let mut signals = signals;
        for _ in signals.forever() {
            let _ = (&notify).write_all(b"i");
        }
    });
    let mut rest = Vec::new();
    let _ = (&stream).read_to_end(&mut rest);
    Ok(0)
}
