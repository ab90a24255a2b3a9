//! `llmspell`: the command line split into global options, command and its arguments, and dispatch
//! to the command's module (`src/commands/`); a command's failure becomes one line and an exit code.

use llmspell::commands::help::HELP;
use llmspell::commands::{self, CommandError, Target};
use pico_args::Arguments;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("llmspell: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The commands, for dispatch and for "did you mean".
const COMMANDS: [&str; 7] = ["run", "exec", "repl", "kernel", "state", "dap", "help"];
/// Options that apply to every command, and take a value.
const GLOBAL_OPTIONS: [&str; 3] = ["--kernel", "--connect", "--idle-timeout"];
/// The options of `--remote` (a Jupyter Server): global even after `kernel`, which has none of these.
const REMOTE_OPTIONS: [&str; 5] = ["--remote", "--token", "--token-file", "--cacert", "--ws-format"];

/// A command line split into the global options (wherever they stand, up to `--` or a run's
/// script), the command, and its own arguments.
struct CommandLine {
    globals: Vec<OsString>,
    command: Option<OsString>,
    args: Vec<OsString>,
}

fn split_command_line(raw: Vec<OsString>) -> CommandLine {
    let mut line = CommandLine { globals: Vec::new(), command: None, args: Vec::new() };
    let mut words = raw.into_iter().peekable();
    let mut options_end = false;
    while let Some(w) = words.next() {
        let text = w.to_str().unwrap_or("");
        let is = |o: &&&str| text == **o || text.starts_with(&format!("{o}="));
        let global = GLOBAL_OPTIONS.iter().find(is);
        let remote = REMOTE_OPTIONS.iter().find(is);
        // `kernel` and `state` have options of their own (kernel start --idle-timeout).
        let own_options = matches!(line.command.as_ref().and_then(|c| c.to_str()), Some("kernel" | "state"))
            && remote.is_none();
        let global = global.or(remote);
        if !options_end && global.is_some() && !own_options {
            // `--kernel ID` takes the next word; `--kernel=ID` does not.
            let takes_next = !text.contains('=');
            line.globals.push(w);
            if let Some(v) = words.next_if(|_| takes_next) {
                line.globals.push(v);
            }
            continue;
        }
        if line.command.is_none() {
            if starts_lua_command_line(&w) {
                // lua's command line, given to llmspell directly: `llmspell -e X`, `llmspell x.lua`.
                line.command = Some("run".into());
                line.args.push(w);
                line.args.extend(words.by_ref());
                break;
            }
            if !options_end && text.starts_with('-') && text != "-" {
                line.globals.push(w); // -h, -V, or an unknown option reported below
                continue;
            }
            line.command = Some(w);
            continue;
        }
        if text == "--" && !options_end {
            options_end = true;
            if line.command.as_deref() != Some(std::ffi::OsStr::new("run")) {
                continue; // `exec -- -x`: the rest is positional
            }
        }
        let run_script = line.command.as_deref() == Some(std::ffi::OsStr::new("run"));
        line.args.push(w);
        if run_script {
            // From lua's first option or the script on, everything belongs to the run.
            line.args.extend(words.by_ref());
        }
    }
    line
}

/// Whether the first word after llmspell's own options starts lua's command line, so that this
/// binary is also `lua` for the scripts that start their interpreter again (`arg`'s most negative
/// entry): one of lua's options (`-e STAT`, `-eSTAT`, `-l MOD`, `-lMOD`, `-i`, `-v`, `-E`, `-W`, `-`,
/// `--`), or a script, which is no command name but an existing file or names one (a '/' in it or
/// `.lua` at its end). Command names come first: a script called `run` is `llmspell ./run`.
fn starts_lua_command_line(word: &std::ffi::OsStr) -> bool {
    let bytes = word.as_encoded_bytes();
    let lua_option = matches!(bytes, b"-" | b"--" | b"-i" | b"-v" | b"-E" | b"-W")
        || bytes.starts_with(b"-e")
        || bytes.starts_with(b"-l");
    if lua_option {
        return true;
    }
    let command = word.to_str().is_some_and(|w| COMMANDS.contains(&w));
    !command
        && !bytes.starts_with(b"-")
        && (bytes.contains(&b'/') || bytes.ends_with(b".lua") || Path::new(word).exists())
}

/// The known command nearest to a mistyped one, if it is near enough.
fn did_you_mean(word: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    COMMANDS.iter().copied().map(|c| (distance(word, c), c)).filter(|(d, _)| *d <= 2).min().map(|(_, c)| c)
}

/// Global options may stand anywhere (up to `--`, or a run's first word); everything after `run`'s
/// first option or script belongs to the run (lua's options, the script and its arguments).
fn run(raw: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let CommandLine { globals, command, args } = split_command_line(raw);
    let mut g = Arguments::from_vec(globals);
    if g.contains(["-V", "--version"]) {
        println!("llmspell {}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    if g.contains(["-h", "--help"]) && command.is_none() {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(command) = command else {
        // Nothing to do but read stdin: lua's empty command line, when stdin is not a terminal (a
        // script that starts its interpreter again may feed it code); in a terminal, this help.
        if !std::io::stdin().is_terminal() {
            return commands::run::exec(&target(g)?, Vec::new());
        }
        if let Some(unknown) = g.finish().first() {
            return Err(CommandError::Usage(format!("unknown option {unknown:?}")));
        }
        eprint!("{HELP}");
        return Ok(ExitCode::from(2));
    };
    let sub = command.to_string_lossy().into_owned();
    if !COMMANDS.contains(&sub.as_str()) {
        let hint = did_you_mean(&sub).map(|c| format!("; did you mean `{c}`?")).unwrap_or_default();
        return Err(CommandError::Usage(format!("unknown command {sub:?}{hint}")));
    }
    let target = target(g)?;
    match sub.as_str() {
        "run" => commands::run::exec(&target, args),
        "exec" => commands::exec::exec(&target, args),
        "repl" => commands::repl::exec(&target, args),
        "kernel" => commands::kernel::exec(&target, args),
        "state" => commands::state::exec(args),
        "dap" => commands::dap::exec(args),
        "help" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        _ => unreachable!("subcommands are matched above"),
    }
}

/// The kernel the global options name (nothing may be left over).
fn target(mut g: Arguments) -> Result<Target, CommandError> {
    let target = Target {
        kernel: g.opt_value_from_str("--kernel")?.unwrap_or_else(|| "default".to_string()),
        connect: g.opt_value_from_os_str("--connect", |s| Ok::<_, String>(PathBuf::from(s)))?,
        idle_timeout: match g.opt_value_from_str::<_, u64>("--idle-timeout")? {
            Some(t) => t,
            None => std::env::var("LLMSPELL_IDLE_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(3600),
        },
        remote: None,
    };
    let remote = commands::remote::options(&mut g)?;
    let leftover = g.finish();
    if !leftover.is_empty() {
        return Err(CommandError::Usage(format!("unknown option {:?}", leftover[0])));
    }
    if remote.is_some() && target.connect.is_some() {
        return Err(CommandError::Usage("use either --remote or --connect".into()));
    }
    Ok(Target { remote, ..target })
}
