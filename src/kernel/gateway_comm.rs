//! The comm port of a kernel Enterprise Gateway launched remotely: EG connects, writes one JSON
//! request, closes (`RemoteProcessProxy._send_listener_request` in EG's `processproxy.py`).
//!
//! - `{"signum": 0}`: EG's `poll()`. Accepting the connection is the answer (a refused connection
//!   tells EG the kernel is gone), so nothing is done.
//! - `{"signum": 2}`: SIGINT, an interrupt of the running cell (EG's interrupt for kernelspecs in
//!   signal mode).
//! - `{"signum": 1 | 9 | 15}`: the kernel shuts down cleanly. EG's launchers run beside the kernel
//!   and `kill` it; here the listener is the kernel, so a signal that means "end" ends it the way
//!   SIGTERM does (as EG's Scala launcher maps 9 to TERM). Other signals are logged and ignored:
//!   their default action would kill the kernel without cleaning up.
//! - `{"shutdown": 1}`: sent after EG's shutdown_request; the kernel stops (if it has not already).
//!
//! A request that is not JSON, too large or too slow is logged and dropped; the listener keeps
//! serving (EG's Python listener would die on it and leave the kernel unmanageable).

use super::{Exit, Shared};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A request is a few bytes; anything bigger is not from EG.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long one connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the comm port on a thread of its own for the kernel's whole life.
pub fn serve(listener: TcpListener, shared: Arc<Shared>) {
    super::spawn("gateway-comm", move || {
        for conn in listener.incoming() {
            let request = match conn.map_err(|e| e.to_string()).and_then(read_request) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("gateway comm port: {e}");
                    continue;
                }
            };
            if act(&request, &shared) == Flow::Stop {
                return; // dropping the listener: from now on EG's poll sees a closed port
            }
        }
    });
}

fn read_request(mut conn: TcpStream) -> Result<serde_json::Value, String> {
    conn.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    (&mut conn)
        .take(MAX_REQUEST + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("reading a request: {e}"))?;
    if data.len() as u64 > MAX_REQUEST {
        return Err(format!("a request of more than {MAX_REQUEST} bytes: dropped"));
    }
    let request: serde_json::Value = serde_json::from_slice(&data)
        .map_err(|e| format!("not a JSON request ({e}): {:?}", String::from_utf8_lossy(&data)))?;
    if !request.is_object() {
        return Err(format!("not a JSON object: {request}"));
    }
    Ok(request)
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

fn act(request: &serde_json::Value, shared: &Shared) -> Flow {
    if let Some(signum) = request.get("signum").filter(|v| !v.is_null()) {
        match signum.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(0) => {}
            Some(libc::SIGINT) => {
                log::info!("gateway: SIGINT: interrupting");
                shared.interrupt();
            }
            Some(s @ (libc::SIGHUP | libc::SIGKILL | libc::SIGTERM)) => {
                log::info!("gateway: signal {s}: shutting down");
                let _ = shared.exit.send(Exit::Signal(s));
                return Flow::Stop;
            }
            _ => log::warn!("gateway comm port: signal {signum} is not one the kernel acts on: ignored"),
        }
    }
    if truthy(request.get("shutdown")) {
        log::info!("gateway: shutdown requested");
        let _ = shared.exit.send(Exit::Shutdown);
        return Flow::Stop;
    }
    Flow::Continue
}

/// As EG's listeners read `shutdown`: present and not 0/false/null.
fn truthy(v: Option<&serde_json::Value>) -> bool {
    match v {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shared() -> (Arc<Shared>, crossbeam_channel::Receiver<Exit>) {
        let (exit_tx, exit_rx) = crossbeam_channel::unbounded();
        let (wake_tx, _wake_rx) = crossbeam_channel::bounded(1);
        (Arc::new(Shared::new(exit_tx, wake_tx)), exit_rx)
    }

    #[test]
    fn poll_and_unknown_signals_change_nothing() {
        let (s, exit) = shared();
        for req in
            [json!({"signum": 0}), json!({"signum": 10}), json!({"signum": "x"}), json!({"shutdown": 0})]
        {
            assert_eq!(act(&req, &s), Flow::Continue, "{req}");
        }
        assert!(exit.try_recv().is_err());
        assert!(!s.interrupt.is_set());
    }

    #[test]
    fn sigint_interrupts_and_keeps_listening() {
        let (s, exit) = shared();
        assert_eq!(act(&json!({"signum": 2}), &s), Flow::Continue);
        assert!(s.interrupt.is_set());
        assert!(exit.try_recv().is_err());
    }

    #[test]
    fn shutdown_and_ending_signals_stop_the_kernel() {
        for req in
            [json!({"shutdown": 1}), json!({"shutdown": true}), json!({"signum": 15}), json!({"signum": 9})]
        {
            let (s, exit) = shared();
            assert_eq!(act(&req, &s), Flow::Stop, "{req}");
            assert!(exit.try_recv().is_ok(), "{req}");
        }
    }
}
