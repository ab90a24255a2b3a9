//! Who owns a request: the client process that sent it, named in the request's metadata
//! (`llmspell.owner`: its pid and that process's start time). The client names itself with it
//! (`client/execute.rs`) and the kernel watches it (`kernel/owner.rs`); it lives here, below both.

use crate::wire::Message;
use serde_json::Value;

/// The client process that sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub(crate) pid: i32,
    /// Its start time (field 22 of /proc/PID/stat): a pid reused by another process does not match.
    start: u64,
}

impl Owner {
    /// The owner a request names in its metadata, if any.
    pub fn of(msg: &Message) -> Option<Owner> {
        let o = &msg.metadata["llmspell"]["owner"];
        let pid = i32::try_from(o["pid"].as_u64()?).ok()?;
        Some(Owner { pid, start: o["start"].as_u64()? })
    }

    /// This process, as a client names itself.
    pub fn current() -> Value {
        let pid = std::process::id();
        serde_json::json!({ "pid": pid, "start": start_time(pid as i32).unwrap_or(0) })
    }

    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// A process's start time in clock ticks since boot; None if it does not exist or has ended (a
/// zombie not yet reaped by its parent).
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(owner: Value) -> Message {
        Message { metadata: json!({ "llmspell": { "owner": owner } }), ..Message::default() }
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_the_same_owner() {
        let me = request(Owner::current());
        let owner = Owner::of(&me).expect("the metadata names an owner");
        assert!(owner.alive());
        assert!(!Owner { start: owner.start + 1, ..owner }.alive());
        assert!(Owner::of(&request(json!(null))).is_none());
    }
}
