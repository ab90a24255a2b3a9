//! The user's side of an execute: output rendered on stdout/stderr (the one renderer of `run`,
//! `exec` and `repl`), Ctrl-C as a pollable pipe, and our stdin read in chunks for raw input.

use super::{ClientError, Event, ExecReply};
use std::io::{Read, Write};
use std::os::unix::io::RawFd;

/// Which results (execute_result, display_data) are shown, and how.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Results {
    /// None (`run`: a script prints what it wants).
    Hidden,
    /// The text/plain form of each; results without one are skipped (`exec`).
    Plain,
    /// Every one, with a placeholder for rich output; `Out[n]: ` before it when numbered (`repl`).
    Cells { numbered: bool },
}

/// The ename of every error Lua raises in a cell (runtime, syntax, memory), as the kernel sends it.
pub const LUA_ERROR: &str = "LuaError";

const RICH_PLACEHOLDER: &str = "<rich output: open it in Jupyter>";

/// Writes execute events as they arrive: stdout text to `out` (flushed at once), stderr text and
/// tracebacks to `err` after flushing `out`, so the two stay in order on a terminal.
pub struct Renderer<O: Write, E: Write> {
    out: O,
    err: E,
    results: Results,
    /// An error event was shown: a failed reply needs no line of its own.
    error_shown: bool,
}

impl<O: Write, E: Write> Renderer<O, E> {
    pub fn new(out: O, err: E, results: Results) -> Self {
        Renderer { out, err, results, error_shown: false }
    }

    /// Shows one event. Write errors (a closed pipe) are ignored: the code runs on regardless.
    pub fn event(&mut self, event: Event) {
        match event {
            Event::Stream { name: "stderr", text } => {
                let _ = self.out.flush();
                let _ = self.err.write_all(text.as_bytes());
            }
            Event::Stream { text, .. } => {
                let _ = self.out.write_all(text.as_bytes()).and_then(|_| self.out.flush());
            }
            Event::Display { data, execution_count } => {
                let text = data["text/plain"].as_str();
                let _ = match (self.results, text, execution_count) {
                    (Results::Hidden, ..) | (Results::Plain, None, _) => Ok(()),
                    (Results::Plain, Some(text), _) => writeln!(self.out, "{text}"),
                    (Results::Cells { numbered: true }, _, Some(n)) => {
                        writeln!(self.out, "Out[{n}]: {}", text.unwrap_or(RICH_PLACEHOLDER))
                    }
                    (Results::Cells { .. }, ..) => writeln!(self.out, "{}", text.unwrap_or(RICH_PLACEHOLDER)),
                };
            }
            Event::Error { ename, traceback } => {
                self.error_shown = true;
                let _ = self.out.flush();
                // A Lua error reads as the stock interpreter's uncaught error: `lua: msg` and the
                // traceback (the kernel sends them in lua's form); other errors are shown as sent.
                let prefix = if ename == LUA_ERROR { "llmspell: " } else { "" };
                for (i, line) in traceback.iter().enumerate() {
                    let _ = writeln!(self.err, "{}{line}", if i == 0 { prefix } else { "" });
                }
            }
            Event::ClearOutput => {}
            Event::Waiting { text } => {
                let _ = self.out.flush();
                let _ = writeln!(self.err, "llmspell: {text}");
            }
        }
    }

    /// After the execute: the pages of a reply (`help()`), then flushes. A reply that failed
    /// without an error event (the request was aborted, or the kernel failed serving it) gets one
    /// line: a non-zero exit code never comes without a word.
    pub fn finish(&mut self, result: &Result<ExecReply, ClientError>) {
        if let Ok(reply) = result {
            for page in reply.pages() {
                let _ = writeln!(self.out, "{page}");
            }
        }
        let _ = self.out.flush();
        if let Some(line) = result.as_ref().ok().and_then(|r| unexplained_failure(r, self.error_shown)) {
            let _ = writeln!(self.err, "llmspell: {line}");
        }
    }
}

/// What to say of a reply that is not ok when no error event said it.
fn unexplained_failure(reply: &ExecReply, error_shown: bool) -> Option<String> {
    match reply.status() {
        "ok" => None,
        _ if error_shown => None,
        "aborted" => {
            Some("the kernel did not run the code: the request was aborted (its log says why)".into())
        }
        _ => {
            let evalue = reply.content["evalue"].as_str().unwrap_or("no reason given");
            Some(format!("{}: {evalue}", if reply.ename().is_empty() { "error" } else { reply.ename() }))
        }
    }
}

/// A socket that becomes readable on SIGINT, for `execute`'s poll (Ctrl-C interrupts the kernel
/// instead of killing the client).
pub fn sigint_pipe() -> Option<RawFd> {
    use std::os::unix::io::IntoRawFd;
    let (read, write) = std::os::unix::net::UnixStream::pair().ok()?;
    read.set_nonblocking(true).ok()?;
    write.set_nonblocking(true).ok()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, write).ok()?;
    Some(read.into_raw_fd())
}

/// Our stdin in chunks for raw input replies, never splitting a UTF-8 character between two.
#[derive(Default)]
pub(crate) struct StdinChunks {
    /// Bytes read but not yet sent (an incomplete UTF-8 character).
    carry: Vec<u8>,
}

impl StdinChunks {
    /// Up to 64 KiB of what `input` has now; "" at end of input.
    pub(crate) fn next(&mut self, input: &mut impl Read) -> String {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = loop {
                match input.read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break 0,
                }
            };
            let mut bytes = std::mem::take(&mut self.carry);
            bytes.extend_from_slice(&buf[..n]);
            if n == 0 {
                return String::from_utf8_lossy(&bytes).into_owned();
            }
            // Keep an incomplete trailing character for the next chunk.
            let cut = match std::str::from_utf8(&bytes) {
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                _ => bytes.len(),
            };
            self.carry = bytes.split_off(cut);
            if !bytes.is_empty() {
                return String::from_utf8_lossy(&bytes).into_owned();
            }
            // A lone partial character: read on for its rest.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A writer that records what reaches the terminal in one log shared by stdout and stderr:
    /// `out` entries when flushed (stdout is buffered), `err` entries at once (stderr is not).
    /// Consecutive pieces of one stream are joined.
    struct Tape {
        tag: &'static str,
        log: Rc<RefCell<Vec<String>>>,
        buffer: Vec<u8>,
    }

    impl Write for Tape {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.buffer.extend_from_slice(b);
            if self.tag == "err" {
                self.flush()?;
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            if self.buffer.is_empty() {
                return Ok(());
            }
            let text = String::from_utf8(std::mem::take(&mut self.buffer)).unwrap();
            let mut log = self.log.borrow_mut();
            match log.last_mut() {
                Some(last) if last.starts_with(self.tag) => last.push_str(&text),
                _ => log.push(format!("{}:{text}", self.tag)),
            }
            Ok(())
        }
    }

    /// Renders `events` then finishes with `reply`; what reached stdout and stderr, in order.
    fn render(results: Results, events: Vec<Event>, reply: serde_json::Value) -> Vec<String> {
        let log = Rc::new(RefCell::new(Vec::new()));
        let out = Tape { tag: "out", log: log.clone(), buffer: vec![] };
        let err = Tape { tag: "err", log: log.clone(), buffer: vec![] };
        let mut r = Renderer::new(out, err, results);
        for e in events {
            r.event(e);
        }
        r.finish(&Ok(ExecReply { content: reply }));
        let v = log.borrow().clone();
        v
    }

    fn result(text: Option<&str>) -> serde_json::Value {
        match text {
            Some(t) => json!({ "text/plain": t }),
            None => json!({ "image/png": "..." }),
        }
    }

    #[test]
    fn stdout_is_flushed_before_stderr_and_tracebacks_so_they_stay_in_order() {
        let events = vec![
            Event::Stream { name: "stdout", text: "a\n" },
            Event::Stream { name: "stderr", text: "b\n" },
            Event::Stream { name: "stdout", text: "c" },
            Event::Error { ename: "Interrupted", traceback: vec!["boom".into(), "  at line 1".into()] },
        ];
        let log = render(Results::Hidden, events, json!({"status": "error"}));
        assert_eq!(log, ["out:a\n", "err:b\n", "out:c", "err:boom\n  at line 1\n"]);
    }

    #[test]
    fn a_lua_error_reads_as_the_stock_interpreters_with_the_program_name_first() {
        let tb = ["[cell]:1: boom", "stack traceback:", "\t[C]: in function 'error'"].map(String::from);
        let events = vec![Event::Error { ename: LUA_ERROR, traceback: tb.to_vec() }];
        let log = render(Results::Plain, events, json!({"status": "error"}));
        assert_eq!(log, ["err:llmspell: [cell]:1: boom\nstack traceback:\n\t[C]: in function 'error'\n"]);
    }

    #[test]
    fn results_are_hidden_plain_or_numbered_cells() {
        let data = [result(Some("42")), result(None)];
        let events = || {
            vec![
                Event::Display { data: &data[0], execution_count: Some(3) },
                Event::Display { data: &data[1], execution_count: Some(3) },
                Event::Display { data: &data[0], execution_count: None },
            ]
        };
        assert_eq!(render(Results::Hidden, events(), json!({"status": "ok"})), Vec::<String>::new());
        assert_eq!(render(Results::Plain, events(), json!({"status": "ok"})), ["out:42\n42\n"]);
        let rich = "<rich output: open it in Jupyter>";
        assert_eq!(
            render(Results::Cells { numbered: true }, events(), json!({"status": "ok"})),
            [format!("out:Out[3]: 42\nOut[3]: {rich}\n42\n")]
        );
        assert_eq!(
            render(Results::Cells { numbered: false }, events(), json!({"status": "ok"})),
            [format!("out:42\n{rich}\n42\n")]
        );
    }

    #[test]
    fn pages_of_the_reply_are_printed_at_the_end() {
        let reply = json!({"status": "ok", "payload": [
            {"source": "page", "data": {"text/plain": "help text"}},
            {"source": "set_next_input", "text": "x"},
        ]});
        let log = render(Results::Plain, vec![Event::Stream { name: "stdout", text: "out\n" }], reply);
        assert_eq!(log, ["out:out\nhelp text\n"]);
    }

    #[test]
    fn a_reply_that_failed_without_an_error_event_still_gets_one_line() {
        let aborted = render(Results::Plain, vec![], json!({"status": "aborted"}));
        assert_eq!(aborted.len(), 1);
        assert!(aborted[0].starts_with("err:llmspell: the kernel did not run the code"), "{aborted:?}");
        let internal = json!({"status": "error", "ename": "InternalError", "evalue": "see its log"});
        assert_eq!(render(Results::Plain, vec![], internal), ["err:llmspell: InternalError: see its log\n"]);
        let tb = vec!["[cell]:1: boom".to_string()];
        let shown = render(
            Results::Plain,
            vec![Event::Error { ename: LUA_ERROR, traceback: tb }],
            json!({"status": "error"}),
        );
        assert_eq!(shown, ["err:llmspell: [cell]:1: boom\n"], "an error shown once is not said twice");
    }

    /// A reader that hands out the given pieces one read at a time.
    struct Pieces(Vec<&'static [u8]>);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let piece = self.0.remove(0);
            buf[..piece.len()].copy_from_slice(piece);
            Ok(piece.len())
        }
    }

    #[test]
    fn stdin_chunks_never_split_a_utf8_character_and_end_with_empty() {
        let e_acute = "é".as_bytes(); // two bytes
        let mut input = Pieces(vec![b"ab", &e_acute[..1], &e_acute[1..], b"c", b"x\xc3"]);
        let mut chunks = StdinChunks::default();
        assert_eq!(chunks.next(&mut input), "ab");
        assert_eq!(chunks.next(&mut input), "é", "a lone first byte waits for its rest");
        assert_eq!(chunks.next(&mut input), "c");
        assert_eq!(chunks.next(&mut input), "x", "the partial character is held back");
        assert_eq!(chunks.next(&mut input), "\u{fffd}", "at EOF a partial character is sent as it is");
        assert_eq!(chunks.next(&mut input), "");
    }
}
