//! The Lua thread's view of the outside world while a request runs: the [`Host`] the interpreter
//! writes output to and asks input from.

use super::channels::InputEvent;
use super::child_output::ChildOutput;
use super::iopub::{Publisher, STREAM_MESSAGE_BYTES};
use super::requests::send_frames;
use crate::lua::{Host, Input, InputError, Interrupter, Stream};
use crate::wire::{self, Message};
use crossbeam_channel::{select, Receiver};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STREAM_FLUSH_INTERVAL: Duration = Duration::from_millis(20);
const STREAM_FLUSH_BYTES: usize = STREAM_MESSAGE_BYTES;

/// The Lua thread's view of the outside world while a request runs: iopub publishing with coalesced
/// stream output, and stdin. `lua.rs` reaches it through the [`Host`] trait.
pub(super) struct Frontend {
    pub(super) child_output: Arc<ChildOutput>,
    /// This request started child processes: their output is synced once more before the reply.
    pub(super) children: bool,
    pub(super) publisher: Publisher,
    stdin: zmq::Socket,
    input_events: Receiver<InputEvent>,
    interrupt_wake: Receiver<()>,
    interrupt: Arc<Interrupter>,
    input_timeout: Duration,
    /// The request being served: parent of everything published.
    pub(super) parent: Arc<Message>,
    pub(super) allow_stdin: bool,
    /// Our own client sends stdin as raw chunks (with EOF) instead of lines.
    pub(super) raw_stdin: bool,
    /// A silent request publishes no output at all.
    pub(super) silent: bool,
    pending: Vec<u8>,
    pending_stream: Stream,
    last_flush: Instant,
}

impl Frontend {
    pub(super) fn new(
        child_output: Arc<ChildOutput>,
        publisher: Publisher,
        stdin: zmq::Socket,
        input_events: Receiver<InputEvent>,
        interrupt_wake: Receiver<()>,
        interrupt: Arc<Interrupter>,
        input_timeout: Duration,
    ) -> Frontend {
        Frontend {
            child_output,
            children: false,
            publisher,
            stdin,
            input_events,
            interrupt_wake,
            interrupt,
            input_timeout,
            parent: Arc::new(Message::default()),
            allow_stdin: false,
            raw_stdin: false,
            silent: false,
            pending: Vec::new(),
            pending_stream: Stream::Stdout,
            last_flush: Instant::now() - STREAM_FLUSH_INTERVAL,
        }
    }

    /// Publishes the pending output, in messages of at most STREAM_MESSAGE_BYTES. Unless `all`, a
    /// character cut by a write boundary waits for its rest; with `all` (end of a request, another
    /// message follows) it goes as it is.
    fn flush_output(&mut self, all: bool) {
        let mut sent = 0;
        while sent < self.pending.len() {
            let rest = &self.pending[sent..];
            let mut end = char_boundary_before(rest, STREAM_MESSAGE_BYTES);
            if end == rest.len() && !all {
                if let Err(e) = std::str::from_utf8(rest) {
                    if e.error_len().is_none() {
                        end = e.valid_up_to();
                    }
                }
            }
            if end == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&rest[..end]).into_owned();
            let name = match self.pending_stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            self.publisher.publish(&self.parent, "stream", json!({ "name": name, "text": text }));
            sent += end;
        }
        if sent > 0 {
            self.pending.drain(..sent);
            self.last_flush = Instant::now();
        }
        // One huge write must not leave a buffer of its size behind.
        if self.pending.capacity() > 4 * STREAM_FLUSH_BYTES {
            self.pending.shrink_to(STREAM_FLUSH_BYTES);
        }
    }

    fn flush_streams(&mut self) {
        self.flush_output(false);
    }

    pub(super) fn flush_all(&mut self) {
        self.flush_output(true);
    }

    pub(super) fn publish(&mut self, msg_type: &str, content: Value) {
        self.flush_all();
        self.publisher.publish(&self.parent, msg_type, content);
    }
}

impl Host for Frontend {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        if self.silent {
            return;
        }
        if stream != self.pending_stream {
            self.flush_all();
            self.pending_stream = stream;
        }
        self.pending.extend_from_slice(bytes);
        // The first output after a quiet spell goes out at once (live output); a burst is
        // coalesced into messages of up to STREAM_FLUSH_BYTES or 20 ms.
        if self.pending.len() >= STREAM_FLUSH_BYTES || self.last_flush.elapsed() >= STREAM_FLUSH_INTERVAL {
            self.flush_streams();
        }
    }

    fn tick(&mut self) -> bool {
        if !self.pending.is_empty() && self.last_flush.elapsed() >= STREAM_FLUSH_INTERVAL {
            self.flush_streams();
        }
        !self.pending.is_empty()
    }

    fn publish(&mut self, msg_type: &str, content: Value) {
        if !self.silent {
            Frontend::publish(self, msg_type, content);
        }
    }

    fn line_input(&self) -> bool {
        !self.raw_stdin
    }

    fn sync_output(&mut self) {
        // Before a child process may run for long: what is held goes out now.
        self.flush_all();
        self.publisher.release();
        self.child_output.sync();
        self.children = true;
    }

    fn input(&mut self, prompt: &str, password: bool) -> Result<Input, InputError> {
        self.flush_all();
        self.publisher.release();
        if !self.allow_stdin {
            return Err(InputError::Failed(
                "stdin is not available: the client did not allow input (allow_stdin is false)".into(),
            ));
        }
        while self.input_events.try_recv().is_ok() {} // stale replies to an earlier, abandoned request
        let mut msg = wire::child(
            &self.parent,
            "input_request",
            self.publisher.session(),
            json!({ "prompt": prompt, "password": password }),
        );
        msg.identities = self.parent.identities.clone();
        let request_id = msg.msg_id().to_string();
        send_frames(&self.stdin, wire::encode(&msg, self.publisher.signer()), "stdin");
        let result = self.wait_input(&request_id);
        if result.is_err() {
            let _ = self.stdin.send(&b""[..], 0); // the stdin thread forgets the request
        }
        result
    }
}

impl Frontend {
    fn wait_input(&mut self, request_id: &str) -> Result<Input, InputError> {
        let deadline = Instant::now() + self.input_timeout;
        loop {
            if self.interrupt.take() {
                return Err(InputError::Interrupted);
            }
            select! {
                recv(self.input_events) -> ev => match ev {
                    Ok(InputEvent::Reply(reply)) if reply.parent_msg_id() == request_id
                        || reply.parent_header.get("msg_id").is_none() => {
                        let value = reply.content["value"].as_str().unwrap_or("").to_string();
                        // llmspell's clients mark the end of input (Ctrl-D at the prompt).
                        let eof = reply.content["llmspell"]["eof"] == true;
                        return Ok(if eof {
                            Input::Eof
                        } else if !self.raw_stdin {
                            Input::Line(value)
                        } else if value.is_empty() {
                            Input::Eof
                        } else {
                            Input::Chunk(value)
                        });
                    }
                    Ok(InputEvent::Reply(_)) => continue,
                    Ok(InputEvent::Unreachable) => return Err(InputError::Failed(
                        "the client that asked for this code to run has disconnected".into())),
                    Err(_) => return Err(InputError::Failed("the kernel is shutting down".into())),
                },
                recv(self.interrupt_wake) -> _ => continue,
                default(deadline.saturating_duration_since(Instant::now())) => {
                    return Err(InputError::Failed(format!(
                        "no input arrived within {} s; the client may have gone", self.input_timeout.as_secs())));
                }
            }
        }
    }
}

/// Where to cut `bytes` into a piece of at most `max`: not inside a UTF-8 character (unless the
/// bytes are not UTF-8 there).
fn char_boundary_before(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    (max.saturating_sub(3)..=max).rev().find(|&end| end > 0 && !is_continuation(bytes[end])).unwrap_or(max)
}

/// A `Host` handle the interpreter keeps; the core keeps another to the same frontend.
pub(super) struct FrontendHandle(pub(super) std::rc::Rc<std::cell::RefCell<Frontend>>);

impl Host for FrontendHandle {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        self.0.borrow_mut().write(stream, bytes)
    }
    fn tick(&mut self) -> bool {
        self.0.borrow_mut().tick()
    }
    fn publish(&mut self, msg_type: &str, content: Value) {
        Host::publish(&mut *self.0.borrow_mut(), msg_type, content)
    }
    fn input(&mut self, prompt: &str, password: bool) -> Result<Input, InputError> {
        self.0.borrow_mut().input(prompt, password)
    }
    fn line_input(&self) -> bool {
        self.0.borrow().line_input()
    }
    fn sync_output(&mut self) {
        self.0.borrow_mut().sync_output()
    }
}

#[cfg(test)]
mod tests {
    use super::char_boundary_before;

    #[test]
    fn pieces_end_between_characters() {
        let text = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(char_boundary_before(text, 64), text.len());
        assert_eq!(char_boundary_before(text, 2), 1);
        assert_eq!(char_boundary_before(text, 3), 3);
        assert_eq!(char_boundary_before(text, 5), 3);
        assert_eq!(char_boundary_before(text, 8), 6);
        assert_eq!(char_boundary_before(&[0x80; 10], 5), 5);
    }
}
