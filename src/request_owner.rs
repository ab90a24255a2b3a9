//! Who owns a request: the client process that sent it, named in the request's metadata
//! (`llmspell.owner`: its pid and what tells that very process apart, see
//! [`crate::sys::ClientProcess`]). The client names itself with it (`client/execute.rs`) and the
//! kernel watches it (`kernel/owner.rs`); it lives here, below both.

use crate::sys::ClientProcess;
use crate::wire::Message;
use serde_json::Value;

/// The client process that sent a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner(ClientProcess);

impl Owner {
    /// The owner a request names in its metadata, if any.
    pub fn of(msg: &Message) -> Option<Owner> {
        ClientProcess::of(&msg.metadata["llmspell"]["owner"]).map(Owner)
    }

    /// This process, as a client names itself.
    pub fn current() -> Value {
        ClientProcess::current()
    }

    pub fn pid(&self) -> i32 {
        self.0.pid
    }

    pub fn alive(&self) -> bool {
        self.0.alive()
    }

    /// An fd readable once the owner's process has ended; Ok(None) if it has ended already.
    pub fn watch_end(&self) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
        self.0.watch_end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(owner: Value) -> Message {
        Message { metadata: json!({ "llmspell": { "owner": owner } }), ..Message::default() }
    }

    #[test]
    fn this_process_is_alive_and_a_request_names_its_owner_or_none() {
        let me = request(Owner::current());
        let owner = Owner::of(&me).expect("the metadata names an owner");
        assert!(owner.alive());
        assert_eq!(owner.pid(), std::process::id() as i32);
        assert!(Owner::of(&request(json!(null))).is_none());
    }
}
