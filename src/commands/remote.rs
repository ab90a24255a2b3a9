//! The commands that differ under `--remote URL`: reading the remote options, `run` (isolated in a
//! process of its own on the server) and the `kernel` verbs, which talk to the server's REST API. `exec`
//! and `repl` need nothing here: they get a `RemoteClient` as their `Session`. Nothing is written
//! to the local `kernels/` directory.

use crate::client::remote::http::{self, Server};
use crate::client::remote::websocket::Format;
use crate::client::remote::{names, RemoteClient, RemoteOptions};
use crate::client::{self, ClientError, ExecOptions, LineAnswer, Renderer, Results, StdinMode};
use crate::commands::help::KERNEL_HELP;
use crate::commands::CommandError;
use crate::runner::{self, client::Outcome};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use pico_args::Arguments;
use serde_json::json;
use std::ffi::OsString;
use std::io::{IsTerminal, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

/// `--remote URL` (or `LLMSPELL_REMOTE`) with its token (`--token`, `--token-file`,
/// `LLMSPELL_TOKEN`), `--cacert FILE` and `--ws-format json|v1`; None without a URL.
pub fn options(g: &mut Arguments) -> Result<Option<RemoteOptions>, CommandError> {
    let url: Option<String> = g.opt_value_from_str("--remote")?;
    let token: Option<String> = g.opt_value_from_str("--token")?;
    let token_file: Option<PathBuf> =
        g.opt_value_from_os_str("--token-file", |s| Ok::<_, String>(PathBuf::from(s)))?;
    let cacert: Option<PathBuf> =
        g.opt_value_from_os_str("--cacert", |s| Ok::<_, String>(PathBuf::from(s)))?;
    let ws_format: Option<String> = g.opt_value_from_str("--ws-format")?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(url) = url.or_else(|| env("LLMSPELL_REMOTE")) else {
        if token.is_some() || token_file.is_some() || cacert.is_some() || ws_format.is_some() {
            return Err(CommandError::Usage(
                "--token, --token-file, --cacert and --ws-format need --remote URL".into(),
            ));
        }
        return Ok(None);
    };
    let token = match (token, token_file) {
        (Some(_), Some(_)) => return Err(CommandError::Usage("use either --token or --token-file".into())),
        (Some(t), None) => Some(t),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                CommandError::Failed(format!("cannot read the token file {}: {e}", path.display()))
            })?;
            Some(text.trim().to_string())
        }
        (None, None) => env("LLMSPELL_TOKEN"),
    };
    let ws_format = match ws_format.as_deref() {
        None => None,
        Some("json") => Some(Format::Json),
        Some("v1") => Some(Format::V1),
        Some(other) => return Err(CommandError::Usage(format!("--ws-format {other:?}: use json or v1"))),
    };
    let kernelspec = env("LLMSPELL_KERNELSPEC").unwrap_or_else(|| http::KERNELSPEC.to_string());
    Ok(Some(RemoteOptions { url, token, cacert, ws_format, kernelspec }))
}

/// The most a remote run sends (script and stdin, before base64): Jupyter Server and Kernel Gateway
/// (tornado) refuse websocket messages over 10 MiB, and base64 adds a third.
const MAX_RUN_BYTES: usize = 7 << 20;

/// `run [lua options] SCRIPT [ARGS]` on the remote kernel, isolated as a local run is: the kernel
/// forks a fresh process for it from its zygote (metadata `llmspell.run`, see the kernel's
/// `remote_run.rs`). The script's text travels with the request, and so does our stdin, whole, when
/// it is not a terminal (a terminal: the script sees EOF at once). Output comes back as streams;
/// we end as the run did: its exit code, or its signal.
pub fn run(r: &RemoteOptions, kernel: &str, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let too_big = || {
        CommandError::Failed(format!(
            "a remote run sends its script and stdin in one message, at most {} MiB: this one is larger",
            MAX_RUN_BYTES >> 20
        ))
    };
    // As locally: `arg` is this whole command line, lua's options read from the first word after `run`.
    let argv: Vec<OsString> = std::env::args_os().collect();
    let first_arg = argv.len() - args.len();
    let bytes: Vec<Vec<u8>> = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut run = json!({
        "argv": argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        "first_arg": first_arg,
    });
    let mut sent = 0;
    let mut stdin = None;
    match runner::child::script_position(&bytes, first_arg) {
        // `run -`: the script is our stdin, read by the run from its stdin as lua does.
        Some(pos) if bytes[pos] == b"-" && bytes[pos - 1] != b"--" => {
            stdin = Some(read_stdin().ok_or_else(too_big)?);
        }
        Some(pos) => {
            let path = Path::new(&argv[pos]);
            let text = std::fs::read(path)
                .map_err(|e| CommandError::Failed(format!("cannot open {}: {e}", path.display())))?;
            sent += text.len();
            match String::from_utf8(text) {
                Ok(t) => run["script"] = json!(t),
                Err(e) => run["script_base64"] = json!(BASE64.encode(e.into_bytes())),
            }
        }
        None => {}
    }
    // Our stdin goes whole, when it is not a terminal (with no script and no -e, lua runs it). A
    // terminal sends nothing: the run sees EOF at once (it cannot wait for lines typed here).
    if stdin.is_none() && !std::io::stdin().is_terminal() {
        stdin = Some(read_stdin().ok_or_else(too_big)?);
    }
    if let Some(bytes) = stdin {
        sent += bytes.len();
        run["stdin"] = json!(BASE64.encode(bytes));
    }
    if sent > MAX_RUN_BYTES {
        return Err(too_big());
    }
    let mut c = RemoteClient::connect(r, kernel)?;
    // A kernel that does not know `llmspell.run` runs the code instead: it says why in one line.
    let code =
        "error('this kernel cannot run a script in a process of its own: update llmspell on its host', 0)";
    let opts = ExecOptions { silent: false, store_history: false, stdin: StdinMode::None };
    let sigint = client::sigint_pipe();
    let mut shown = Renderer::new(std::io::stdout().lock(), std::io::stderr(), Results::Hidden);
    let result = c.execute_with(code, &opts, Some(run), sigint, &mut |ev| shown.event(ev), &mut |_, _| {
        LineAnswer::Interrupt
    });
    shown.finish(&result);
    drop(shown);
    let reply = result?;
    let exit = &reply.content["llmspell"]["exit"];
    let outcome = match (exit["code"].as_u64(), exit["signal"].as_i64()) {
        (Some(code), _) => Outcome::Exited(code as u8),
        (None, Some(sig)) => Outcome::Signaled(sig as i32),
        // Refused (the reason was shown as the error), or not an llmspell kernel.
        _ => return Ok(ExitCode::from(1)),
    };
    drop(c); // closes the websocket: exit_like does not return
    runner::client::exit_like(outcome)
}

/// All of our stdin (an unreadable or closed one is empty); None past MAX_RUN_BYTES.
fn read_stdin() -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let limit = MAX_RUN_BYTES as u64 + 1;
    let _ = std::io::stdin().lock().take(limit).read_to_end(&mut bytes);
    (bytes.len() <= MAX_RUN_BYTES).then_some(bytes)
}

/// `kernel list|start|stop|interrupt|status` on the server.
pub fn kernel(r: &RemoteOptions, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let mut a = Arguments::from_vec(args);
    if a.contains(["-h", "--help"]) {
        print!("{KERNEL_HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let verb = a.subcommand()?.unwrap_or_default();
    let all = verb == "stop" && a.contains("--all");
    let name: String = a.opt_free_from_str()?.unwrap_or_else(|| "default".into());
    if let Some(x) = a.finish().first() {
        return Err(CommandError::Usage(format!("unexpected argument {x:?}")));
    }
    let server = Server::new(r)?;
    match verb.as_str() {
        "start" => {
            let (id, started) = names::find_or_start(&server, &name)?;
            if !started {
                eprintln!("kernel {name} is already running");
            }
            println!("{name}\t{id}\t{}", server.base);
            Ok(ExitCode::SUCCESS)
        }
        "stop" => {
            let targets = if all { names::all(&server) } else { vec![name] };
            let mut stopped = 0;
            for n in &targets {
                let gone = match names::remembered(&server, n) {
                    Some(id) => server.delete_kernel(&id)?,
                    None => false,
                };
                names::forget(&server, n);
                if gone {
                    stopped += 1;
                    eprintln!("stopped kernel {n}");
                } else if !all {
                    eprintln!("kernel {n} is not running");
                }
            }
            if all && stopped == 0 {
                eprintln!("no kernels running");
            }
            Ok(if all || stopped > 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        "interrupt" => match live(&server, &name)? {
            Some((id, _)) => {
                server.interrupt(&id)?;
                eprintln!("interrupted kernel {name}");
                Ok(ExitCode::SUCCESS)
            }
            None => Ok(ExitCode::from(1)),
        },
        "status" => match live(&server, &name)? {
            Some((id, model)) => {
                let state = model["execution_state"].as_str().unwrap_or("?");
                println!("kernel {name} is running, {state} (id {id} on {})", server.base);
                Ok(ExitCode::SUCCESS)
            }
            None => Ok(ExitCode::from(1)),
        },
        "list" => list(&server),
        "" => Err(CommandError::Usage("kernel needs one of start, stop, list, status, interrupt".into())),
        other => Err(CommandError::Usage(format!("unknown kernel command {other:?}"))),
    }
}

/// The remembered kernel `name`, if the server still has it (else says so and forgets it).
fn live(server: &Server, name: &str) -> Result<Option<(String, serde_json::Value)>, ClientError> {
    if let Some(id) = names::remembered(server, name) {
        if let Some(model) = server.kernel(&id)? {
            return Ok(Some((id, model)));
        }
        names::forget(server, name);
    }
    eprintln!("kernel {name} is not running");
    Ok(None)
}

/// Our named kernels on the server, in a table; names whose kernel is gone are forgotten.
fn list(server: &Server) -> Result<ExitCode, CommandError> {
    server.kernelspecs()?; // an unreachable server or a refused token is an error, not "no kernels"
    let mut rows = Vec::new();
    for name in names::all(server) {
        let Some(id) = names::remembered(server, &name) else { continue };
        match server.kernel(&id)? {
            Some(m) => rows.push([
                name,
                id,
                m["execution_state"].as_str().unwrap_or("?").to_string(),
                m["connections"].as_u64().map(|c| c.to_string()).unwrap_or("?".into()),
                m["last_activity"].as_str().unwrap_or("?").to_string(),
            ]),
            None => names::forget(server, &name),
        }
    }
    if rows.is_empty() {
        eprintln!("no kernels running on {}", server.base);
        return Ok(ExitCode::SUCCESS);
    }
    let header = ["NAME", "ID", "STATE", "CONNECTIONS", "LAST ACTIVITY"].map(String::from);
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().chain([&header]).map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
