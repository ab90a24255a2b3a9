//! `llmspell exec CODE`: code run in the kernel's shared session, its output live on ours.

use super::help::EXEC_HELP;
use super::{connect, no_more, CommandError, Target};
use crate::client::{self, ExecOptions, ExecReply, Renderer, Results, Session, StdinMode};
use pico_args::Arguments;
use std::ffi::OsString;
use std::process::ExitCode;

pub fn exec(t: &Target, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let mut a = Arguments::from_vec(args);
    if a.contains(["-h", "--help"]) {
        print!("{EXEC_HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let code: String = a.free_from_str().map_err(|_| CommandError::Usage("exec needs CODE".into()))?;
    no_more(a)?;
    // `exec -`: the code comes from stdin, as `run -` takes the script.
    let code = if code == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| CommandError::Failed(format!("cannot read the code from stdin: {e}")))?;
        s
    } else {
        code
    };
    let mut c = connect(t)?;
    let opts = ExecOptions { silent: false, store_history: true, stdin: StdinMode::Raw };
    execute_and_report(c.as_mut(), &code, &opts, Results::Plain)
}

/// Runs code with live output on our stdout/stderr; maps the outcome to the exit code.
fn execute_and_report(
    c: &mut dyn Session,
    code: &str,
    opts: &ExecOptions,
    results: Results,
) -> Result<ExitCode, CommandError> {
    let sigint = client::sigint_pipe();
    let mut shown = Renderer::new(std::io::stdout().lock(), std::io::stderr(), results);
    let result =
        c.execute(code, opts, sigint, &mut |ev| shown.event(ev), &mut |_, _| client::LineAnswer::Interrupt);
    shown.finish(&result);
    drop(shown);
    Ok(reply_exit_code(&result?))
}

/// 0 for ok, 130 for an interrupt, else 1.
fn reply_exit_code(reply: &ExecReply) -> ExitCode {
    match reply.status() {
        "ok" => ExitCode::SUCCESS,
        _ if reply.ename() == "Interrupted" => ExitCode::from(130),
        _ => ExitCode::from(1),
    }
}
