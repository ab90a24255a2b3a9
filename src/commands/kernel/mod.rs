//! `llmspell kernel start|stop|list|status|interrupt|install` (and the hidden `runner`): the local
//! kernels; with `--remote`, the server's (`commands/remote.rs`).

mod install;
mod start;

use super::help::KERNEL_HELP;
use super::{no_more, CommandError, Target};
use crate::client::{self, Client};
use crate::connection::{self, ConnectionInfo, KernelFiles};
use crate::runner;
use pico_args::Arguments;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `kernel ...`. `kernel install` writes a kernelspec here, whatever --remote says (LLMSPELL_REMOTE
/// may be set).
pub fn exec(target: &Target, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    match &target.remote {
        Some(r) if args.first().is_none_or(|a| a != "install") => super::remote::kernel(r, args),
        _ => local(args),
    }
}

fn local(args: Vec<OsString>) -> Result<ExitCode, CommandError> {
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
        "start" => start::exec(a),
        // runner (issue 12): the zygote of `llmspell run`, started by the kernel itself (hidden).
        "runner" => Ok(runner::zygote_main(a.finish())),
        "stop" => kernel_stop(a),
        "list" => kernel_list(a),
        "status" => kernel_status(a),
        "interrupt" => kernel_interrupt(a),
        "install" => install::exec(a),
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
