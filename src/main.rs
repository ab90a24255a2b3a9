//! `llmspell`: argument parsing, dispatch to the subcommands, exit codes.

use llmspell::cli::CommandError;
use llmspell::client::remote::RemoteOptions;
use llmspell::client::{self, Client, ExecOptions, ExecReply, Renderer, Results, Session, StdinMode};
use llmspell::connection::{self, ConnectionInfo, KernelFiles};
use llmspell::help::{EXEC_HELP, HELP, KERNEL_HELP, REPL_HELP, RUN_HELP};
use llmspell::{kernel, private_files, remote_cli, repl, runner, state_cli};
use pico_args::Arguments;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
const COMMANDS: [&str; 8] = ["run", "exec", "repl", "kernel", "state", "dap", "lsp", "help"];
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
            let takes_next = !text.contains('=');
            line.globals.push(w);
            if let (true, Some(v)) = (takes_next, words.next()) {
                line.globals.push(v);
            }
            continue;
        }
        if line.command.is_none() {
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
    let target = Target {
        kernel: g.opt_value_from_str("--kernel")?.unwrap_or_else(|| "default".to_string()),
        connect: g.opt_value_from_os_str("--connect", |s| Ok::<_, String>(PathBuf::from(s)))?,
        idle_timeout: match g.opt_value_from_str::<_, u64>("--idle-timeout")? {
            Some(t) => t,
            None => std::env::var("LLMSPELL_IDLE_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(3600),
        },
        remote: None,
    };
    let remote = remote_cli::options(&mut g)?;
    let leftover = g.finish();
    if !leftover.is_empty() {
        return Err(CommandError::Usage(format!("unknown option {:?}", leftover[0])));
    }
    if remote.is_some() && target.connect.is_some() {
        return Err(CommandError::Usage("use either --remote or --connect".into()));
    }
    let target = Target { remote, ..target };
    match sub.as_str() {
        "run" => cmd_run(&target, args),
        "exec" => cmd_exec(&target, args),
        "repl" => {
            let mut a = Arguments::from_vec(args);
            if a.contains(["-h", "--help"]) {
                print!("{REPL_HELP}");
                return Ok(ExitCode::SUCCESS);
            }
            no_more(a)?;
            let c = connect(&target)?;
            // A kernel of ours can be started again if it stops under the REPL; one we were
            // pointed at (--connect) is not ours to start.
            // (A remote kernel is started again on its server, under the same name.)
            let restart = target.connect.is_none().then(|| {
                let target = Target { connect: None, ..target };
                Box::new(move || connect(&target)) as repl::Restart
            });
            Ok(ExitCode::from(repl::run(c, restart)?))
        }
        // `kernel install` writes a kernelspec here, whatever --remote says (LLMSPELL_REMOTE may be set).
        "kernel" => match &target.remote {
            Some(r) if args.first().is_none_or(|a| a != "install") => remote_cli::kernel(r, args),
            _ => cmd_kernel(args),
        },
        "state" => state_cli::run(args),
        "dap" => {
            let mut a = Arguments::from_vec(args);
            if a.contains(["-h", "--help"]) {
                print!("{}", llmspell::help::DAP_HELP);
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(socket) = a.opt_value_from_str::<_, String>("--terminal")? {
                no_more(a)?;
                let code = llmspell::dap::lend_terminal(&socket).map_err(CommandError::Failed)?;
                return Ok(ExitCode::from(code));
            }
            no_more(a)?;
            let code = llmspell::dap::serve().map_err(CommandError::Failed)?;
            Ok(ExitCode::from(code))
        }
        "lsp" => cmd_lsp(&target, args),
        "help" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        _ => unreachable!("subcommands are matched above"),
    }
}

struct Target {
    kernel: String,
    connect: Option<PathBuf>,
    idle_timeout: u64,
    /// `--remote URL`: the kernel runs under a Jupyter Server (nothing local is started).
    remote: Option<RemoteOptions>,
}

fn connect(t: &Target) -> Result<Box<dyn Session>, CommandError> {
    if let Some(r) = &t.remote {
        return Ok(Box::new(client::remote::RemoteClient::connect(r, &t.kernel)?));
    }
    Ok(match &t.connect {
        Some(path) => Box::new(Client::connect_file(path, Duration::from_secs(10))?),
        None => Box::new(client::find_or_spawn(&t.kernel, t.idle_timeout)?),
    })
}

fn no_more(a: Arguments) -> Result<(), CommandError> {
    let rest = a.finish();
    match rest.first() {
        Some(x) => Err(CommandError::Usage(format!("unexpected argument {x:?}"))),
        None => Ok(()),
    }
}

/// `lsp`: the language server on stdio; the live part follows the kernel the global options name,
/// never starting one.
fn cmd_lsp(t: &Target, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let mut a = Arguments::from_vec(args);
    if a.contains(["-h", "--help"]) {
        print!("{}", llmspell::help::LSP_HELP);
        return Ok(ExitCode::SUCCESS);
    }
    let _ = a.contains("--stdio"); // what VS Code's clients pass; stdio is the only transport
    no_more(a)?;
    let live = match (&t.remote, &t.connect) {
        (Some(r), _) => llmspell::lsp::live::Target::Remote(r.clone(), t.kernel.clone()),
        (None, Some(path)) => llmspell::lsp::live::Target::ConnectionFile(path.clone()),
        (None, None) => llmspell::lsp::live::Target::Local(t.kernel.clone()),
    };
    init_lsp_logging();
    Ok(ExitCode::from(llmspell::lsp::serve(live)))
}

/// The language server's log goes to stderr (editors show or keep it): warnings unless LLMSPELL_LOG.
fn init_lsp_logging() {
    let mut b = env_logger::Builder::new();
    b.parse_filters(&std::env::var("LLMSPELL_LOG").unwrap_or_else(|_| "warn".into()));
    b.target(env_logger::Target::Stderr);
    let _ = b.try_init();
}

fn cmd_run(t: &Target, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    if args.first().is_some_and(|a| a == "-h" || a == "--help") {
        print!("{RUN_HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(r) = &t.remote {
        return remote_cli::run(r, &t.kernel, args);
    }
    // The run's `arg` is this whole command line, the script at index 0 (as lua's); the run reads
    // lua's options (-e, -l, -i, -v, -E, -W) from the words after `run`.
    let argv: Vec<OsString> = std::env::args_os().collect();
    let first_arg = argv.len() - args.len();
    let target = match &t.connect {
        Some(path) => runner::client::Target::ConnectionFile(path),
        None => runner::client::Target::Kernel { id: &t.kernel, idle_timeout: t.idle_timeout },
    };
    let outcome = runner::client::run(&target, argv, first_arg)?;
    runner::client::exit_like(outcome)
}

fn cmd_exec(t: &Target, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
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

fn cmd_kernel(args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let mut a = Arguments::from_vec(args);
    if a.contains(["-h", "--help"]) {
        print!("{KERNEL_HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(verb) = a.subcommand()? else {
        return Err(CommandError::Usage(
            "kernel needs one of start, stop, list, status, interrupt, install".into(),
        ));
    };
    match verb.as_str() {
        "start" => kernel_start(a),
        // runner (issue 12): the zygote of `llmspell run`, started by the kernel itself (hidden).
        "runner" => Ok(runner::zygote_main(a.finish())),
        "stop" => kernel_stop(a),
        "list" => kernel_list(a),
        "status" => kernel_status(a),
        "interrupt" => kernel_interrupt(a),
        "install" => kernel_install(a),
        other => Err(CommandError::Usage(format!("unknown kernel command {other:?}"))),
    }
}

/// `kernel stop [ID | --all]`.
fn kernel_stop(mut a: Arguments) -> Result<ExitCode, CommandError> {
    let all = a.contains("--all");
    let id: Option<String> = a.opt_free_from_str()?;
    no_more(a)?;
    let dir = connection::kernels_dir_to_look_in();
    let targets = if all {
        KernelFiles::all(&dir)
    } else {
        vec![KernelFiles::new(&dir, &id.unwrap_or_else(|| "default".into()))]
    };
    let mut stopped = 0;
    for files in targets {
        connection::valid_id(&files.id)?;
        if client::stop_kernel(&files)? {
            stopped += 1;
            let _ = std::fs::remove_file(&files.spawn_lock);
            eprintln!("stopped kernel {}", files.id);
        } else if !all {
            eprintln!("kernel {} is not running", files.id);
        }
    }
    if all && stopped == 0 {
        eprintln!("no kernels running");
    }
    // Asked to stop one kernel that is not there: say so in the exit code too.
    Ok(if all || stopped > 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A live kernel's own account of itself (kernel_info's `llmspell` section), asked on control.
fn kernel_activity(conn: &std::path::Path) -> Option<serde_json::Value> {
    let c = Client::connect_file(conn, Duration::from_secs(5)).ok()?;
    let reply =
        c.control_request("kernel_info_request", serde_json::json!({}), Duration::from_secs(5)).ok()?;
    Some(reply["llmspell"].clone())
}

/// "busy (pid 123 for 4 s)" or "idle", from a kernel's activity.
fn describe_activity(activity: &serde_json::Value) -> String {
    if activity["busy"] != true {
        return "idle".into();
    }
    let running = &activity["running"];
    match (running["client_pid"].as_u64(), running["seconds"].as_f64()) {
        (Some(pid), Some(s)) => format!("busy (client pid {pid}, for {s:.0} s)"),
        (None, Some(s)) => format!("busy (a Jupyter client, for {s:.0} s)"),
        _ => "busy".into(),
    }
}

/// The kernel `[ID]` (default: default) of a `kernel` verb, if it is running (else says so).
fn named_live_kernel(mut a: Arguments) -> Result<Option<(String, PathBuf)>, CommandError> {
    let id: String = a.opt_free_from_str()?.unwrap_or_else(|| "default".into());
    no_more(a)?;
    connection::valid_id(&id)?;
    // No kernels directory: nothing runs (and looking must not create the home directory).
    let conn = match connection::kernels_dir_to_look_in().is_dir() {
        true => client::live_connection(&id)?,
        false => None,
    };
    if conn.is_none() {
        eprintln!("kernel {id} is not running");
    }
    Ok(conn.map(|c| (id, c)))
}

/// `kernel interrupt [ID]`: interrupts whatever the kernel runs, as Jupyter's interrupt does.
fn kernel_interrupt(a: Arguments) -> Result<ExitCode, CommandError> {
    let Some((id, conn)) = named_live_kernel(a)? else { return Ok(ExitCode::from(1)) };
    let c = Client::connect_file(&conn, Duration::from_secs(5))?;
    c.control_request("interrupt_request", serde_json::json!({}), Duration::from_secs(10))?;
    eprintln!("interrupted kernel {id}");
    Ok(ExitCode::SUCCESS)
}

/// `kernel list`: live kernels in a table; a crashed kernel's leftovers are removed on the way.
fn kernel_list(a: Arguments) -> Result<ExitCode, CommandError> {
    no_more(a)?;
    let dir = connection::kernels_dir_to_look_in();
    KernelFiles::sweep(&dir);
    let mut rows = Vec::new();
    for files in KernelFiles::all(&dir) {
        if !files.is_alive() {
            continue; // swept below
        }
        let info = ConnectionInfo::read(&files.connection).ok();
        let pid = info.as_ref().and_then(|i| i.pid).map(|p| p.to_string()).unwrap_or("?".into());
        let uptime = std::fs::metadata(&files.connection)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
            .unwrap_or("?".into());
        let addr = info.as_ref().map(|i| format!("{}:{}", i.ip, i.shell_port)).unwrap_or("?".into());
        let state = kernel_activity(&files.connection).map(|a| describe_activity(&a)).unwrap_or("?".into());
        rows.push([files.id.clone(), pid, uptime, state, addr, files.connection.display().to_string()]);
    }
    if rows.is_empty() {
        eprintln!("no kernels running");
        return Ok(ExitCode::SUCCESS);
    }
    let header = ["ID", "PID", "UPTIME", "STATE", "ADDRESS", "CONNECTION FILE"].map(String::from);
    let widths: Vec<usize> =
        (0..6).map(|i| rows.iter().chain([&header]).map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// `kernel status [ID]`: exit 0 if the kernel answers, 1 if not.
fn kernel_status(a: Arguments) -> Result<ExitCode, CommandError> {
    let Some((id, conn)) = named_live_kernel(a)? else { return Ok(ExitCode::from(1)) };
    match kernel_activity(&conn) {
        Some(activity) => {
            println!("kernel {id} is running, {} ({})", describe_activity(&activity), conn.display());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("kernel {id} does not answer ({})", conn.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// `kernel install [--user | --prefix DIR] [--name NAME]`.
fn kernel_install(mut a: Arguments) -> Result<ExitCode, CommandError> {
    let user = a.contains("--user");
    let prefix: Option<PathBuf> =
        a.opt_value_from_os_str("--prefix", |s| Ok::<_, String>(PathBuf::from(s)))?;
    let name: String = a.opt_value_from_str("--name")?.unwrap_or_else(|| "llmspell".into());
    no_more(a)?;
    if user && prefix.is_some() {
        return Err(CommandError::Usage("use either --user or --prefix".into()));
    }
    let dir = install_kernelspec(prefix.clone(), &name)?;
    println!("installed kernelspec {name} in {}", dir.display());
    // JupyterLab with jupyterlab-lsp: diagnostics and completion in llmspell notebook cells.
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let registered =
        llmspell::lsp::jupyter_lsp::install(prefix.as_deref(), &exe.canonicalize().unwrap_or(exe))
            .map_err(CommandError::Failed)?;
    println!("registered the language server (llmspell lsp) with jupyter-lsp in {}", registered.display());
    Ok(ExitCode::SUCCESS)
}

/// Enterprise Gateway's launcher flags, with or without their `RemoteProcessProxy.` prefix (EG's
/// kernelspecs pass the long form, its bootstrap-kernel.sh the short one).
fn gateway_flags(a: &mut Arguments) -> Result<kernel::gateway_launch::Flags, CommandError> {
    let mut value = |[long, short]: [&'static str; 2]| -> Result<Option<String>, CommandError> {
        let long: Option<String> = a.opt_value_from_str(long)?;
        let short: Option<String> = a.opt_value_from_str(short)?;
        Ok(long.or(short))
    };
    let mut flags = kernel::gateway_launch::Flags {
        kernel_id: value(["--RemoteProcessProxy.kernel-id", "--kernel-id"])?,
        response_address: value(["--RemoteProcessProxy.response-address", "--response-address"])?,
        public_key: value(["--RemoteProcessProxy.public-key", "--public-key"])?,
        port_range: value(["--RemoteProcessProxy.port-range", "--port-range"])?,
        ignored: Vec::new(),
    };
    for (name, keys) in [
        (
            "spark-context-initialization-mode",
            ["--RemoteProcessProxy.spark-context-initialization-mode", "--spark-context-initialization-mode"],
        ),
        ("cluster-type", ["--RemoteProcessProxy.cluster-type", "--cluster-type"]),
        ("kernel-class-name", ["--RemoteProcessProxy.kernel-class-name", "--kernel-class-name"]),
    ] {
        if let Some(v) = value(keys)? {
            flags.ignored.push((name, v));
        }
    }
    Ok(flags)
}

fn kernel_start(mut a: Arguments) -> Result<ExitCode, CommandError> {
    let daemon = a.contains("--daemon");
    let gateway = gateway_flags(&mut a)?;
    let id: Option<String> = a.opt_value_from_str("--id")?;
    let connection_file: Option<PathBuf> =
        a.opt_value_from_os_str("--connection-file", |s| Ok::<_, String>(PathBuf::from(s)))?;
    // A kernel Jupyter launched is known by its connection file's name (kernel-<uuid>), as Jupyter
    // names it; "default" is the CLI's own session.
    let launched_name =
        connection_file.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned());
    let ip: Option<String> = a.opt_value_from_str("--ip")?;
    let opts = kernel::Options {
        id: id.or(launched_name).unwrap_or_else(|| "default".into()),
        connection_file,
        // Launched by Enterprise Gateway, the kernel must be reachable from the gateway's host.
        ip: ip.unwrap_or_else(|| if gateway.any() { "0.0.0.0" } else { "127.0.0.1" }.into()),
        memory_limit_mb: a.opt_value_from_str("--memory-limit")?,
        idle_timeout: a
            .opt_value_from_str::<_, u64>("--idle-timeout")?
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
        max_message_bytes: a
            .opt_value_from_str::<_, usize>("--max-message-mb")?
            .map(|mb| mb << 20)
            .unwrap_or(kernel::DEFAULT_MAX_MESSAGE_BYTES),
        input_timeout: Duration::from_secs(a.opt_value_from_str("--input-timeout")?.unwrap_or(3600)),
        gateway: None,
    };
    let log_file: Option<PathBuf> =
        a.opt_value_from_os_str("--log-file", |s| Ok::<_, String>(PathBuf::from(s)))?;
    no_more(a)?;
    if gateway.any() && (daemon || opts.connection_file.is_some()) {
        return Err(CommandError::Usage(
            "--RemoteProcessProxy.* (Enterprise Gateway's launch) goes without --daemon and --connection-file".into(),
        ));
    }
    if daemon {
        if opts.connection_file.is_some() {
            return Err(CommandError::Usage(
                "--daemon manages its own connection file; drop --connection-file".into(),
            ));
        }
        connection::valid_id(&opts.id)?;
        let files = KernelFiles::new(&connection::kernels_dir()?, &opts.id);
        if files.is_alive() {
            return Err(CommandError::Failed(format!(
                "kernel {:?} is already running (connection file {})",
                opts.id,
                files.connection.display()
            )));
        }
        files.remove_stale();
        let mut extra = vec!["--ip".to_string(), opts.ip.clone()];
        if let Some(mb) = opts.memory_limit_mb {
            extra.extend(["--memory-limit".into(), mb.to_string()]);
        }
        if let Some(t) = opts.idle_timeout {
            extra.extend(["--idle-timeout".into(), t.as_secs().to_string()]);
        }
        extra.extend(["--input-timeout".into(), opts.input_timeout.as_secs().to_string()]);
        extra.extend(["--max-message-mb".into(), (opts.max_message_bytes >> 20).to_string()]);
        client::spawn_detached(&files, &extra)?;
        println!("{}\t{}", opts.id, files.connection.display());
        return Ok(ExitCode::SUCCESS);
    }
    let to_file = log_file.is_some();
    // Under a Jupyter launcher our stderr is the front end's screen (jupyter console, papermill's
    // progress bar, `jupyter execute`): only warnings go there unless a log file or LLMSPELL_LOG asks.
    let quiet = opts.connection_file.is_some() && !to_file;
    // Under Enterprise Gateway the kernel's name is EG's kernel id (--id means nothing there).
    let log_name = gateway.kernel_id.clone().filter(|_| gateway.any()).unwrap_or_else(|| opts.id.clone());
    init_logging(log_file.as_deref(), &log_name, quiet);
    let mut opts = opts;
    if gateway.any() {
        // After the logger: the flags' warnings (ignored Spark options) are logged.
        let launch = kernel::gateway_launch::Launch::from_flags(gateway).map_err(CommandError::Failed)?;
        opts.id = launch.kernel_id.clone();
        opts.gateway = Some(launch);
    }
    if let Err(e) = kernel::start(opts) {
        if to_file {
            log::error!("{e}"); // in the foreground the one-line error below is enough
        }
        return Err(CommandError::Failed(e));
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(file: Option<&std::path::Path>, kernel: &str, quiet: bool) {
    let mut b = env_logger::Builder::new();
    let default = if quiet { "warn" } else { "info" };
    b.parse_filters(&std::env::var("LLMSPELL_LOG").unwrap_or_else(|_| default.into()));
    // Each line names the kernel: several kernels' warnings can share one terminal or log collector.
    let kernel = kernel.to_string();
    b.format(move |out, record| {
        use std::io::Write;
        let ts = out.timestamp_seconds();
        writeln!(out, "[{ts} {} llmspell {kernel}] {}", record.level(), record.args())
    });
    if let Some(path) = file {
        // Logs stay bounded: a large one is moved aside (replacing the one before) at start.
        if std::fs::metadata(path).map(|m| m.len() > connection::LOG_ROTATE_BYTES).unwrap_or(false) {
            let _ = std::fs::rename(path, path.with_extension("log.1"));
        }
        if let Ok(f) = private_files::open_append(path) {
            b.target(env_logger::Target::Pipe(Box::new(f)));
        }
    } else {
        // The kernel turns fds 1 and 2 into pipes that capture child processes' output: log to a
        // copy of the original stderr.
        use std::os::unix::io::FromRawFd;
        // SAFETY: dup(2) returns a new fd we own (or -1, checked).
        let fd = unsafe { libc::dup(2) };
        if fd >= 0 {
            b.target(env_logger::Target::Pipe(Box::new(unsafe { std::fs::File::from_raw_fd(fd) })));
        }
    }
    b.init();
    // Panics go to the log too: a detached kernel's stderr is /dev/null.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("panic: {info}");
        default(info);
    }));
}

/// Writes `<prefix>/share/jupyter/kernels/<name>/kernel.json` (prefix default: the user's data dir).
const KERNELSPEC_LOGOS: [(&str, &[u8]); 3] = [
    ("logo-32x32.png", include_bytes!("../assets/logo-32x32.png")),
    ("logo-64x64.png", include_bytes!("../assets/logo-64x64.png")),
    ("logo-svg.svg", include_bytes!("../assets/logo-svg.svg")),
];

fn install_kernelspec(prefix: Option<PathBuf>, name: &str) -> Result<PathBuf, CommandError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(CommandError::Usage(format!("invalid kernelspec name {name:?}")));
    }
    let base = match prefix {
        Some(p) => p.join("share/jupyter"),
        None => match std::env::var_os("JUPYTER_DATA_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .ok_or_else(|| CommandError::Failed("HOME is not set".into()))?;
                if cfg!(target_os = "macos") {
                    home.join("Library/Jupyter")
                } else {
                    std::env::var_os("XDG_DATA_HOME")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| home.join(".local/share"))
                        .join("jupyter")
                }
            }
        },
    };
    let dir = base.join("kernels").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let spec = serde_json::json!({
        "argv": [exe, "kernel", "start", "--connection-file", "{connection_file}"],
        "display_name": "Lua 5.4 (llmspell)",
        "language": "lua",
        "interrupt_mode": "message",
        "metadata": { "debugger": true },
    });
    let path = dir.join("kernel.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // The logos JupyterLab's launcher and About dialog look for; built into the binary so an
    // installed llmspell needs no data files.
    for (name, bytes) in KERNELSPEC_LOGOS {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(dir)
}
