//! `llmspell kernel start`: the kernel in the foreground (as Jupyter launches it, or under Enterprise
//! Gateway), or detached with `--daemon`; and the kernel's logging.

use super::super::{no_more, CommandError};
use crate::client;
use crate::connection::{self, KernelFiles};
use crate::{kernel, private_files};
use pico_args::Arguments;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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

pub(super) fn exec(mut a: Arguments) -> Result<ExitCode, CommandError> {
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
        return start_detached(&opts);
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

/// `kernel start --daemon`: the kernel detached, with its own connection file.
fn start_detached(opts: &kernel::Options) -> Result<ExitCode, CommandError> {
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
