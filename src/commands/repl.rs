//! `llmspell repl`: an interactive session on the shared kernel. Line editing and history come from
//! rustyline; multi-line input is decided by the kernel's `is_complete`, completion by its `complete`.
//! When stdin is not a terminal it reads lines without prompts, so it can be scripted.

use super::help::REPL_HELP;
use super::{connect, no_more, CommandError, Target};
use crate::client::{
    self, ClientError, Event, ExecOptions, LineAnswer, Renderer, Results, Session, StdinMode,
};
use crate::connection;
use pico_args::Arguments;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use serde_json::json;
use std::cell::RefCell;
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

/// `llmspell repl`.
pub fn exec(target: &Target, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let mut a = Arguments::from_vec(args);
    if a.contains(["-h", "--help"]) {
        print!("{REPL_HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    no_more(a)?;
    let c = connect(target)?;
    // A kernel of ours can be started again if it stops under the REPL; one we were
    // pointed at (--connect) is not ours to start.
    // (A remote kernel is started again on its server, under the same name.)
    let restart = target.connect.is_none().then(|| {
        let target = Target {
            connect: None,
            kernel: target.kernel.clone(),
            idle_timeout: target.idle_timeout,
            remote: target.remote.clone(),
        };
        Box::new(move || connect(&target)) as Restart
    });
    Ok(ExitCode::from(run(c, restart)?))
}

const HELP: &str = "\
Lua 5.4 on the shared llmspell kernel. Globals persist across lines, `exec` and Jupyter clients.
  .help     this text
  .kernel   which kernel this is: id, pid, connection file
  .exit     leave (Ctrl-D too); the kernel keeps running
Ctrl-C interrupts running code, or clears the line. help() lists the kernel's globals.";

/// The REPL's one client, shared with the line editor's completion.
type SharedClient = Rc<RefCell<Box<dyn Session>>>;

/// Tab completion through the kernel's complete_request.
struct KernelHelper {
    client: SharedClient,
}

impl Completer for KernelHelper {
    type Candidate = String;
    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        let cursor = line[..pos].chars().count();
        let Ok(client) = self.client.try_borrow() else { return Ok((pos, Vec::new())) };
        let reply = client.request(
            "complete_request",
            json!({ "code": line, "cursor_pos": cursor }),
            Duration::from_secs(2),
        );
        let Ok(r) = reply else { return Ok((pos, Vec::new())) };
        let start_chars = r["cursor_start"].as_u64().unwrap_or(cursor as u64) as usize;
        let start = line.char_indices().nth(start_chars).map(|(i, _)| i).unwrap_or(line.len());
        let matches = r["matches"]
            .as_array()
            .map(|m| m.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default();
        Ok((start, matches))
    }
}

impl Hinter for KernelHelper {
    type Hint = String;
}
impl Highlighter for KernelHelper {}
impl Validator for KernelHelper {}
impl Helper for KernelHelper {}

/// Whether a cell is ready to run, as the kernel's is_complete says.
enum CellStatus {
    Complete,
    /// More lines are needed; the indent the kernel suggests for the next one.
    Incomplete(String),
}

fn is_complete(client: &dyn Session, code: &str) -> CellStatus {
    match client.request("is_complete_request", json!({ "code": code }), Duration::from_secs(5)) {
        Ok(r) if r["status"] == "incomplete" => {
            CellStatus::Incomplete(r["indent"].as_str().unwrap_or("").to_string())
        }
        _ => CellStatus::Complete,
    }
}

/// Starts the REPL's kernel again (after it was stopped from elsewhere, or died).
pub type Restart = Box<dyn Fn() -> Result<Box<dyn Session>, CommandError>>;

/// Runs the REPL; returns the exit code.
pub fn run(client: Box<dyn Session>, restart: Option<Restart>) -> Result<u8, CommandError> {
    let client: SharedClient = Rc::new(RefCell::new(client));
    let sigint = client::sigint_pipe();
    if std::io::stdin().is_terminal() {
        interactive(client, sigint, restart)
    } else {
        scripted(client, sigint)
    }
}

/// One line of input, or why there is none.
enum Line {
    Text(String),
    /// Ctrl-C at the prompt: drop the cell.
    Cancel,
    /// End of input.
    End,
}

/// Reads lines until they form a cell the kernel calls complete (or a meta command). `next` gets the
/// indent the kernel suggests for a continuation line (None for the first line). At end of input a
/// partial cell is returned as it is, so its error is reported. `status` asks the kernel.
fn read_cell(status: &dyn Fn(&str) -> CellStatus, next: &mut dyn FnMut(Option<&str>) -> Line) -> Line {
    let mut cell = String::new();
    let mut indent: Option<String> = None;
    loop {
        match next(indent.as_deref()) {
            Line::Text(line) => {
                if !cell.is_empty() {
                    cell.push('\n');
                }
                cell.push_str(&line);
                if cell.trim().is_empty() {
                    cell.clear();
                    continue;
                }
                if cell.trim_start().starts_with('.') && !cell.contains('\n') {
                    return Line::Text(cell);
                }
                match status(&cell) {
                    CellStatus::Complete => return Line::Text(cell),
                    CellStatus::Incomplete(i) => indent = Some(i),
                }
            }
            Line::Cancel => return Line::Cancel,
            Line::End if cell.trim().is_empty() => return Line::End,
            Line::End => return Line::Text(cell),
        }
    }
}

fn interactive(
    client: SharedClient,
    sigint: Option<i32>,
    restart: Option<Restart>,
) -> Result<u8, CommandError> {
    // Tab completes as far as the candidates agree and, on a second Tab, lists them (as IPython and
    // jupyter console show them) instead of cycling through them silently.
    let config = rustyline::Config::builder()
        .completion_type(rustyline::CompletionType::List)
        .auto_add_history(false)
        .build();
    let mut rl: Editor<KernelHelper, rustyline::history::DefaultHistory> = Editor::with_config(config)
        .map_err(|e| CommandError::Failed(format!("cannot start line editing: {e}")))?;
    rl.set_helper(Some(KernelHelper { client: client.clone() }));
    let history = connection::home().join("history");
    let _ = rl.load_history(&history);
    println!(
        "llmspell {} — Lua 5.4 on kernel {} (.help for help, Ctrl-D to leave)",
        env!("CARGO_PKG_VERSION"),
        client.borrow().kernel_name()
    );
    // The session is shared: the first prompt follows the kernel's count, not 1.
    let mut count = kernel_count(client.borrow().as_ref()).map_or(1, |n| n + 1);
    loop {
        let first = format!("In [{count}]: ");
        let more = format!("{:>w$}: ", "...", w = first.len() - 2);
        let mut next = |indent: Option<&str>| {
            let prompt = if indent.is_some() { &more } else { &first };
            match rl.readline_with_initial(prompt, (indent.unwrap_or(""), "")) {
                Ok(line) => Line::Text(line),
                Err(ReadlineError::Interrupted) => Line::Cancel,
                Err(_) => Line::End,
            }
        };
        let cell = match read_cell(&|code| is_complete(client.borrow().as_ref(), code), &mut next) {
            Line::Text(cell) => cell,
            Line::Cancel => continue,
            Line::End => return Ok(0),
        };
        let _ = rl.add_history_entry(cell.as_str());
        let _ = rl.append_history(&history).or_else(|_| rl.save_history(&history));
        match meta(&cell, client.borrow().as_ref()) {
            Some(true) => return Ok(0),
            Some(false) => continue,
            None => {}
        }
        let mut input = |prompt: &str, _password: bool| match rl.readline(prompt) {
            Ok(line) => LineAnswer::Line(line),
            Err(ReadlineError::Eof) => LineAnswer::Eof,
            Err(_) => LineAnswer::Interrupt,
        };
        let ran = match execute(&client, &cell, sigint, true, &mut input) {
            Err(e) if kernel_gone(&e) => {
                // As IPython's console does: say so, and offer a new kernel to go on with.
                let Some(restart) = &restart else { return Err(e) };
                eprintln!("llmspell: {e}");
                match rl
                    .readline("Start a new kernel and continue (its globals are gone; state is kept)? [Y/n] ")
                {
                    Ok(answer) if matches!(answer.trim(), "" | "y" | "Y" | "yes") => {}
                    _ => return Err(e),
                }
                *client.borrow_mut() = restart()?;
                count = kernel_count(client.borrow().as_ref()).map_or(1, |n| n + 1);
                eprintln!("llmspell: a new kernel is running; the cell above did not run");
                continue;
            }
            other => other?,
        };
        if ran.exit {
            return Ok(0);
        }
        if let Some(n) = ran.count {
            count = n + 1;
        }
    }
}

/// Whether an error means the kernel is no longer there (stopped elsewhere, or died).
fn kernel_gone(e: &CommandError) -> bool {
    matches!(
        e,
        CommandError::Client(
            ClientError::KernelDied { .. } | ClientError::NotRunning { .. } | ClientError::Timeout
        )
    )
}

fn scripted(client: SharedClient, sigint: Option<i32>) -> Result<u8, CommandError> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut status = 0u8;
    loop {
        let mut next = |_: Option<&str>| match lines.next() {
            Some(Ok(line)) => Line::Text(line),
            _ => Line::End,
        };
        let cell = match read_cell(&|code| is_complete(client.borrow().as_ref(), code), &mut next) {
            Line::Text(cell) => cell,
            Line::Cancel => continue,
            Line::End => return Ok(status),
        };
        match meta(&cell, client.borrow().as_ref()) {
            Some(true) => return Ok(status),
            Some(false) => continue,
            None => {}
        }
        let mut input = |_: &str, _: bool| match lines.next() {
            Some(Ok(line)) => LineAnswer::Line(line),
            _ => LineAnswer::Eof,
        };
        let ran = execute(&client, &cell, sigint, false, &mut input)?;
        if !ran.ok {
            status = 1;
        }
        if ran.exit {
            return Ok(status);
        }
    }
}

/// Meta commands: Some(true) to leave, Some(false) handled, None for Lua code.
fn meta(cell: &str, client: &dyn Session) -> Option<bool> {
    match cell.trim() {
        ".exit" | ".quit" => Some(true),
        ".help" => {
            println!("{HELP}");
            Some(false)
        }
        ".kernel" => {
            println!("{}", client.describe());
            Some(false)
        }
        other if other.starts_with('.') && !other.starts_with("..") => {
            println!("unknown command {other} (.help lists them)");
            Some(false)
        }
        _ => None,
    }
}

/// The kernel's execution count now: a silent empty cell's reply carries it (and counts nothing).
fn kernel_count(client: &dyn Session) -> Option<u64> {
    let content = json!({ "code": "", "silent": true, "store_history": false, "allow_stdin": false });
    let reply = client.request("execute_request", content, Duration::from_secs(10)).ok()?;
    reply["execution_count"].as_u64()
}

/// Runs one cell: the kernel's execution count after it, and whether it succeeded. A client failure
/// ends the REPL.
/// What one cell did.
struct Ran {
    count: Option<u64>,
    ok: bool,
    /// The kernel asked the front end to leave (`exit`, `quit`).
    exit: bool,
}

fn execute(
    client: &SharedClient,
    code: &str,
    sigint: Option<i32>,
    tty: bool,
    input: &mut dyn FnMut(&str, bool) -> LineAnswer,
) -> Result<Ran, CommandError> {
    let opts = ExecOptions { silent: false, store_history: true, stdin: StdinMode::Lines };
    let mut shown = Renderer::new(std::io::stdout(), std::io::stderr(), Results::Cells { numbered: tty });
    // The code's unfinished last line of output (`io.write("Name: ")` before `io.read()`): the line
    // editor redraws its line, so that text becomes the start of its prompt instead of being erased.
    let partial = std::cell::RefCell::new(String::new());
    let mut on_event = |ev: Event| {
        match &ev {
            Event::Stream { name: "stdout", text } => {
                let mut p = partial.borrow_mut();
                match text.rfind('\n') {
                    Some(at) => *p = text[at + 1..].to_string(),
                    None => p.push_str(text),
                }
            }
            Event::Stream { .. } | Event::Waiting { .. } | Event::ClearOutput => {}
            _ => partial.borrow_mut().clear(),
        }
        shown.event(ev)
    };
    let mut ask = |prompt: &str, password: bool| {
        let shown_already = std::mem::take(&mut *partial.borrow_mut());
        if tty && !shown_already.is_empty() {
            // Back to the start of the line and clear it: the prompt writes the text again.
            print!("\r\x1b[K");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        input(&format!("{shown_already}{prompt}"), password)
    };
    let result = client.borrow_mut().execute(code, &opts, sigint, &mut on_event, &mut ask);
    shown.finish(&result);
    match result {
        Ok(reply) => Ok(Ran {
            count: reply.content["execution_count"].as_u64(),
            ok: reply.status() == "ok",
            exit: reply.asks_exit(),
        }),
        // Only a dead kernel means a fresh one next time (CommandError says so then).
        Err(e) => Err(CommandError::Client(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel's is_complete for the tests: a cell is incomplete while it has more `do` than `end`.
    fn status(code: &str) -> CellStatus {
        let count = |w: &str| code.split_whitespace().filter(|t| *t == w).count();
        if count("do") > count("end") {
            CellStatus::Incomplete("  ".into())
        } else {
            CellStatus::Complete
        }
    }

    /// Reads one cell from `lines` (None: Ctrl-C); the cell and the indents offered for each line.
    fn read(lines: &[Option<&str>]) -> (String, Vec<Option<String>>) {
        let mut lines = lines.iter();
        let mut indents = Vec::new();
        let mut next = |indent: Option<&str>| {
            indents.push(indent.map(String::from));
            match lines.next() {
                Some(Some(l)) => Line::Text(l.to_string()),
                Some(None) => Line::Cancel,
                None => Line::End,
            }
        };
        let cell = match read_cell(&status, &mut next) {
            Line::Text(c) => c,
            Line::Cancel => "<cancel>".into(),
            Line::End => "<end>".into(),
        };
        (cell, indents)
    }

    #[test]
    fn lines_are_joined_until_the_kernel_calls_the_cell_complete() {
        let (cell, indents) = read(&[Some("for i = 1, 2 do"), Some("  print(i)"), Some("end"), Some("x")]);
        assert_eq!(cell, "for i = 1, 2 do\n  print(i)\nend");
        assert_eq!(
            indents,
            [None, Some("  ".into()), Some("  ".into())],
            "continuation lines get the indent"
        );
    }

    #[test]
    fn blank_lines_are_skipped_and_meta_commands_need_no_kernel() {
        assert_eq!(read(&[Some(""), Some("   "), Some("x = 1")]).0, "x = 1");
        assert_eq!(read(&[Some(".help")]).0, ".help");
        assert_eq!(read(&[Some(" .exit do")]).0, " .exit do", "a meta command is never continued");
    }

    #[test]
    fn ctrl_c_drops_the_cell_and_end_of_input_runs_what_there_is() {
        assert_eq!(read(&[Some("while true do"), None]).0, "<cancel>");
        assert_eq!(read(&[Some("while true do")]).0, "while true do", "its error is reported");
        assert_eq!(read(&[Some("")]).0, "<end>");
    }
}
