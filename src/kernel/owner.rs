//! Each client owns its requests. Our own client names itself in a request's metadata
//! (`llmspell.owner`: its pid and what tells that process apart) and names the request it means in
//! an interrupt (`llmspell.interrupt`: a msg_id). Then:
//! - an interrupt for a request that is still queued withdraws it: it is answered `aborted` and
//!   never runs; one for a request that already ended does nothing; only the running one is stopped;
//! - when the owner's process ends while its cell runs (killed, terminal closed), the cell is
//!   interrupted; a request whose owner has gone before it starts is not run.
//!
//! Requests without these fields (every other Jupyter client) keep the protocol's meaning: an
//! interrupt stops whatever runs.
//!
//! Watching costs nothing for quick requests: a timer armed at the start of a request fires only
//! if it is still running after OWNER_WATCH_AFTER; only then is the owner's process watched (an fd
//! readable when it ends, `sys::ClientProcess::watch_end`).

use super::Shared;
use crate::request_owner::Owner;
use crate::sys::{wait_readable, Deadline, Wakeup};
use crate::wire::Message;
use serde_json::Value;
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a request runs before its owner's process is watched.
const OWNER_WATCH_AFTER: Duration = Duration::from_millis(50);
/// Withdrawn requests remembered (a client withdraws what it queued; this bounds a hostile one).
const WITHDRAWN_KEPT: usize = 1000;

/// The request on the Lua thread and those withdrawn before they ran, under one lock so an
/// interrupt and the start of the request it names cannot cross.
#[derive(Default)]
struct Requests {
    running: Option<Running>,
    withdrawn: VecDeque<String>,
}

struct Running {
    msg_id: String,
    owner: Option<Owner>,
    since: std::time::Instant,
    /// True once the owner's process is watched.
    watched: bool,
}

/// What an interrupt did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Interrupted {
    /// The running request was stopped.
    Running,
    /// The named request had not started: it never will.
    Withdrawn,
}

pub(super) struct Ownership {
    requests: Mutex<Requests>,
    /// Set when a request starts: the watcher looks at its owner once it passes.
    timer: Deadline,
    /// Wakes the watcher when the request it watches has ended.
    ended: Wakeup,
}

impl Ownership {
    pub(super) fn new() -> Result<Arc<Ownership>, String> {
        let timer = Deadline::new().map_err(|e| format!("cannot create a timer: {e}"))?;
        let ended = Wakeup::new().map_err(|e| format!("cannot create a wake-up: {e}"))?;
        Ok(Arc::new(Ownership { requests: Mutex::new(Requests::default()), timer, ended }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request is about to run: false if it must not (withdrawn, or its owner has gone).
    pub(super) fn start(&self, msg: &Message) -> bool {
        let owner = Owner::of(msg);
        let mut r = self.lock();
        if let Some(i) = r.withdrawn.iter().position(|id| id == msg.msg_id()) {
            r.withdrawn.remove(i);
            log::info!("shell: request {} was withdrawn by its client before it ran", msg.msg_id());
            return false;
        }
        if owner.as_ref().is_some_and(|o| !o.alive()) {
            log::info!("shell: the client that sent request {} has gone; it is not run", msg.msg_id());
            return false;
        }
        let since = std::time::Instant::now();
        let watch = owner.is_some();
        r.running = Some(Running { msg_id: msg.msg_id().to_string(), owner, since, watched: false });
        if watch {
            self.timer.set(Some(OWNER_WATCH_AFTER));
        }
        true
    }

    /// The running request has ended.
    pub(super) fn end(&self) {
        let mut r = self.lock();
        if let Some(running) = r.running.take() {
            if running.owner.is_some() {
                self.timer.set(None);
            }
            if running.watched {
                self.ended.wake();
            }
        }
    }

    /// The execute request running now, for kernel_info: its msg_id, its client's pid (when the
    /// client named itself), and for how many seconds it has run.
    pub(super) fn running(&self) -> Value {
        match &self.lock().running {
            None => Value::Null,
            Some(r) => serde_json::json!({
                "msg_id": r.msg_id,
                "client_pid": r.owner.as_ref().map(|o| o.pid()),
                "seconds": r.since.elapsed().as_secs_f64(),
            }),
        }
    }

    /// An interrupt that names a request (`llmspell.interrupt`); None names none: stop what runs.
    pub(super) fn interrupt(&self, target: Option<&str>, shared: &Shared) -> Interrupted {
        let mut r = self.lock();
        match target {
            Some(id) if r.running.as_ref().is_none_or(|run| run.msg_id != id) => {
                if r.withdrawn.len() >= WITHDRAWN_KEPT {
                    r.withdrawn.pop_front();
                }
                r.withdrawn.push_back(id.to_string());
                Interrupted::Withdrawn
            }
            _ => {
                shared.interrupt();
                Interrupted::Running
            }
        }
    }

    /// The watcher thread: when a request has run OWNER_WATCH_AFTER, waits for its owner's process
    /// to end (and then interrupts it) or for the request to end, whichever comes first.
    pub(super) fn watch(&self, shared: &Shared) {
        loop {
            wait_readable(&[self.timer.fd()], None);
            self.timer.clear();
            let (msg_id, owner) = {
                let mut r = self.lock();
                let Some(running) = r.running.as_mut() else { continue };
                let Some(owner) = running.owner.clone() else { continue };
                running.watched = true;
                (running.msg_id.clone(), owner)
            };
            self.ended.clear(); // a stale "ended" of an earlier request
            let end = match owner.watch_end() {
                Ok(Some(fd)) => fd,
                Ok(None) => {
                    self.interrupt_if_running(&msg_id, shared);
                    continue;
                }
                Err(e) => {
                    log::warn!(
                        "shell: cannot watch the client of request {msg_id} ({e}); it runs to its end"
                    );
                    continue;
                }
            };
            // Readable means that very process has ended.
            if wait_readable(&[end.as_raw_fd(), self.ended.fd()], None) == Some(0) {
                self.interrupt_if_running(&msg_id, shared);
            }
        }
    }

    fn interrupt_if_running(&self, msg_id: &str, shared: &Shared) {
        let r = self.lock();
        if r.running.as_ref().is_some_and(|run| run.msg_id == msg_id) {
            log::info!("shell: the client that sent request {msg_id} has gone: its cell is interrupted");
            shared.interrupt();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(id: &str, owner: Value) -> Message {
        let mut header = crate::wire::header("execute_request", "s");
        header["msg_id"] = json!(id);
        Message { header, metadata: json!({ "llmspell": { "owner": owner } }), ..Message::default() }
    }

    fn shared() -> Shared {
        let (exit, _) = crossbeam_channel::unbounded();
        let (wake, _) = crossbeam_channel::bounded(1);
        Shared::new(exit, wake)
    }

    #[test]
    fn an_interrupt_naming_a_queued_request_withdraws_it_and_stops_nothing() {
        let (o, shared) = (Ownership::new().unwrap(), shared());
        assert!(o.start(&request("running", Owner::current())));
        assert_eq!(o.interrupt(Some("queued"), &shared), Interrupted::Withdrawn);
        assert!(!shared.interrupt.is_set(), "the running cell was hit");
        o.end();
        assert!(!o.start(&request("queued", Owner::current())), "a withdrawn request ran");
        assert!(o.start(&request("later", Owner::current())));
        assert_eq!(o.interrupt(Some("later"), &shared), Interrupted::Running);
        assert!(shared.interrupt.is_set());
    }

    #[test]
    fn a_request_whose_owner_has_gone_does_not_run() {
        let gone = crate::sys::ended_client();
        assert!(!Ownership::new().unwrap().start(&request("orphan", gone)));
    }
}
