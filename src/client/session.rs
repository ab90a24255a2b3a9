//! The seam between the commands (`exec`, `run`, `repl`) and how they reach a kernel: over ZeroMQ
//! with a connection file (`Client`), or through a Jupyter Server's REST API and websocket
//! (`remote::RemoteClient`). The commands only need these operations.

use super::{Client, ClientError, Event, ExecOptions, ExecReply, LineAnswer};
use serde_json::Value;
use std::os::unix::io::RawFd;
use std::time::Duration;

pub trait Session {
    /// A request on shell: waits for its reply's content.
    fn request(&self, msg_type: &str, content: Value, timeout: Duration) -> Result<Value, ClientError>;

    /// Runs code with live output until the kernel has replied and gone idle for it (see
    /// `Client::execute`).
    fn execute(
        &mut self,
        code: &str,
        opts: &ExecOptions,
        sigint: Option<RawFd>,
        on_event: &mut dyn FnMut(Event),
        on_input: &mut dyn FnMut(&str, bool) -> LineAnswer,
    ) -> Result<ExecReply, ClientError>;

    /// The kernel's name, as the user called it.
    fn kernel_name(&self) -> String;

    /// One line about where the kernel is, for the REPL's `.kernel`.
    fn describe(&self) -> String;
}

impl Session for Client {
    fn request(&self, msg_type: &str, content: Value, timeout: Duration) -> Result<Value, ClientError> {
        Client::request(self, msg_type, content, timeout)
    }

    fn execute(
        &mut self,
        code: &str,
        opts: &ExecOptions,
        sigint: Option<RawFd>,
        on_event: &mut dyn FnMut(Event),
        on_input: &mut dyn FnMut(&str, bool) -> LineAnswer,
    ) -> Result<ExecReply, ClientError> {
        Client::execute(self, code, opts, sigint, on_event, on_input)
    }

    fn kernel_name(&self) -> String {
        self.connection_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }

    fn describe(&self) -> String {
        let pid = self.info.pid.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into());
        format!(
            "kernel {} pid {} connection file {}",
            self.kernel_name(),
            pid,
            self.connection_file.display()
        )
    }
}
