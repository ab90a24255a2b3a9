//! The threads that own one socket each and never run Lua: heartbeat, control and stdin.

use super::iopub::Publisher;
use super::owner::Ownership;
use super::requests::{
    answer_anywhere, bad_request, receive, reply, send_frames, snapshot_reply, Answer, Received, Request,
};
use super::{Exit, Shared};
use crate::wire::{self, Message, ReplayGuard, Signer};
use crossbeam_channel::Sender;
use serde_json::json;
use std::time::{Duration, Instant};

/// Echoes every message back to its sender. A ROUTER rather than the classic REP: REP keeps one
/// request/reply state for all peers, so one broken peer could cost another its echo.
pub(super) fn heartbeat(hb: zmq::Socket) {
    loop {
        match hb.recv_multipart(0) {
            Ok(frames) => {
                if let Err(zmq::Error::ETERM) = hb.send_multipart(frames, 0) {
                    return;
                }
            }
            Err(zmq::Error::ETERM) => return,
            Err(_) => continue,
        }
    }
}

/// The control thread: answers kernel_info, interrupt and shutdown at once, even while Lua is busy;
/// debug requests (debugger.rs), and the Lua thread's debug replies, which it sends on.
pub(super) fn control_loop(
    control: zmq::Socket,
    debug_replies: zmq::Socket,
    publisher: Publisher,
    signer: &Signer,
    shared: &Shared,
    ownership: &Ownership,
    max: usize,
) {
    let mut guard = ReplayGuard::new(1000);
    loop {
        let mut items = [control.as_poll_item(zmq::POLLIN), debug_replies.as_poll_item(zmq::POLLIN)];
        if let Err(zmq::Error::ETERM) = zmq::poll(&mut items, -1) {
            return;
        }
        let (request_ready, reply_ready) = (items[0].is_readable(), items[1].is_readable());
        if reply_ready {
            match debug_replies.recv_multipart(0) {
                Err(zmq::Error::ETERM) => return,
                Err(_) => {}
                Ok(frames) => {
                    send_frames(&control, frames, "control");
                }
            }
        }
        if !request_ready {
            continue;
        }
        let msg = match receive(&control, signer, &mut guard, max, "control") {
            Received::Closed => return,
            Received::Dropped => continue,
            Received::Request(m) => m,
        };
        let parsed = Request::parse(&msg);
        // An editor's language server asks every few seconds: no busy/idle for the other clients
        // to see, and no activity that would keep an idle kernel from timing out.
        if let Ok(Request::Snapshot(s)) = &parsed {
            reply(&control, signer, publisher.session(), &msg, snapshot_reply(shared, s.since));
            continue;
        }
        shared.touch();
        let answer = match parsed {
            Err(problem) => Some(Answer::Reply(bad_request(&problem))),
            Ok(Request::Stray(other)) => {
                log::warn!("control: ignored a {other:?} message");
                continue;
            }
            Ok(Request::Debug) => {
                publisher.status(&msg, "busy");
                let mut events = Vec::new();
                let answer = shared.debugger.handle(&msg, &shared.interrupt, &mut events);
                if let Some(content) = answer {
                    reply(&control, signer, publisher.session(), &msg, content);
                }
                for (event, body) in events {
                    shared.debugger.event(&publisher, event, body);
                }
                publisher.status(&msg, "idle");
                continue;
            }
            Ok(req) => answer_anywhere(&req, shared, ownership, publisher.counts()),
        };
        publisher.status(&msg, "busy");
        let session = publisher.session();
        match answer {
            Some(Answer::Reply(content)) => reply(&control, signer, session, &msg, content),
            Some(Answer::ReplyAndExit(content)) => {
                reply(&control, signer, session, &msg, content);
                publisher.status(&msg, "idle");
                let _ = shared.exit.send(Exit::Shutdown);
                continue;
            }
            // The shell's own requests (execute, complete...) need the Lua thread.
            None => reply(&control, signer, session, &msg, only_on_shell(msg.msg_type())),
        }
        publisher.status(&msg, "idle");
    }
}

/// The reply on control to a request that only shell serves.
fn only_on_shell(msg_type: &str) -> serde_json::Value {
    json!({
        "status": "error",
        "ename": "UnsupportedRequest",
        "evalue": format!("llmspell does not handle {msg_type:?} messages on the control channel"),
        "traceback": [],
    })
}

/// What the stdin thread tells the Lua thread.
pub(super) enum InputEvent {
    Reply(Message),
    /// The client an input_request was addressed to is not connected.
    Unreachable,
}

/// Forwards the Lua thread's input requests to the asking client and its replies back.
///
/// A client that dies while its cell waits for input must not leave the kernel waiting: ZeroMQ does
/// not say which peer left, so on every disconnect seen on this socket the outstanding request is
/// sent again with ROUTER_MANDATORY. A gone client makes that fail (and the cell ends at once); a
/// live one gets the same request again, which clients ignore by its msg_id.
pub(super) fn stdin_loop(
    ctx: &zmq::Context,
    stdin: zmq::Socket,
    requests: zmq::Socket,
    events: Sender<InputEvent>,
    signer: &Signer,
    max: usize,
) {
    let monitor = match stdin_monitor(ctx, &stdin) {
        Ok(m) => Some(m),
        Err(e) => {
            log::warn!(
                "stdin: no disconnect monitor ({e}); a vanished client is noticed only by --input-timeout"
            );
            None
        }
    };
    let mut guard = ReplayGuard::new(1000);
    let mut outstanding: Option<(String, Vec<Vec<u8>>)> = None;
    // After a disconnect, ZeroMQ tears the peer's pipe down asynchronously: probe a moment later.
    let mut probe_at: Option<Instant> = None;
    loop {
        let mut items = vec![stdin.as_poll_item(zmq::POLLIN), requests.as_poll_item(zmq::POLLIN)];
        if let Some(m) = &monitor {
            items.push(m.as_poll_item(zmq::POLLIN));
        }
        let timeout =
            probe_at.map(|t| t.saturating_duration_since(Instant::now()).as_millis() as i64).unwrap_or(-1);
        if let Err(zmq::Error::ETERM) = zmq::poll(&mut items, timeout) {
            return;
        }
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        if ready[1] {
            match requests.recv_multipart(0) {
                Err(zmq::Error::ETERM) => return,
                Err(_) => {}
                Ok(frames) => outstanding = ask(&stdin, frames, &events, signer),
            }
        }
        if ready[0] {
            match receive(&stdin, signer, &mut guard, max, "stdin") {
                Received::Closed => return,
                Received::Dropped => {}
                Received::Request(msg) if msg.msg_type() == "input_reply" => {
                    if outstanding.as_ref().is_some_and(|(id, _)| id == msg.parent_msg_id()) {
                        outstanding = None;
                    }
                    let _ = events.send(InputEvent::Reply(msg));
                }
                Received::Request(msg) => log::warn!("stdin: ignored a {:?} message", msg.msg_type()),
            }
        }
        if ready.get(2) == Some(&true) {
            if let Some(m) = &monitor {
                while m.recv_multipart(zmq::DONTWAIT).is_ok() {}
            }
            log::debug!("stdin: a client disconnected");
            if outstanding.is_some() {
                probe_at = Some(Instant::now() + Duration::from_millis(100));
            }
        }
        if probe_at.is_some_and(|t| Instant::now() >= t) {
            probe_at = None;
            if let Some((_, frames)) = &outstanding {
                if stdin.send_multipart(frames.clone(), 0).is_err() {
                    log::info!("stdin: the client waiting for input has disconnected");
                    outstanding = None;
                    let _ = events.send(InputEvent::Unreachable);
                }
            }
        }
    }
}

/// Sends the Lua thread's input_request to its client; the request now outstanding, if any. (One
/// empty frame from the Lua thread means it stopped waiting.)
fn ask(
    stdin: &zmq::Socket,
    frames: Vec<Vec<u8>>,
    events: &Sender<InputEvent>,
    signer: &Signer,
) -> Option<(String, Vec<Vec<u8>>)> {
    if frames.len() == 1 {
        return None;
    }
    let id = wire::decode(frames.clone(), signer).map(|m| m.msg_id().to_string()).unwrap_or_default();
    if stdin.send_multipart(frames.clone(), 0).is_err() {
        let _ = events.send(InputEvent::Unreachable);
        return None;
    }
    Some((id, frames))
}

/// A PAIR socket receiving the stdin socket's disconnect events.
fn stdin_monitor(ctx: &zmq::Context, stdin: &zmq::Socket) -> Result<zmq::Socket, String> {
    let endpoint = "inproc://stdin-monitor";
    stdin.monitor(endpoint, zmq::SocketEvent::DISCONNECTED as i32).map_err(|e| e.to_string())?;
    let m = ctx.socket(zmq::PAIR).map_err(|e| e.to_string())?;
    m.connect(endpoint).map_err(|e| e.to_string())?;
    Ok(m)
}
