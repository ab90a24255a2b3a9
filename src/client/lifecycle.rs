//! Our own kernels' lives: find the live one or start one (race-free under the spawn lock), start one
//! detached, stop one. Liveness is the kernel's lock on `kernels/<id>.lock`, never a pid.

use super::{Client, ClientError};
use crate::connection::{self, ConnectionInfo, KernelFiles};
use fs2::FileExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a client waits for a started kernel's first answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kernel process that is still alive gets to write its connection file: a loaded small
/// machine can take more than 10 s, and giving up then fails a request whose kernel is coming (one
/// that exits is reported at once).
const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);

/// The kernel with this id: connects to the live one, or starts one (detached) and connects.
/// Race-free: concurrent callers serialise on the spawn lock and all end up on one kernel.
pub fn find_or_spawn(id: &str, idle_timeout: u64) -> Result<Client, ClientError> {
    connection::valid_id(id).map_err(ClientError::Lifecycle)?;
    let dir = connection::kernels_dir().map_err(ClientError::Lifecycle)?;
    let files = KernelFiles::new(&dir, id);
    if files.is_alive() {
        if let Ok(c) = Client::connect_file(&files.connection, START_TIMEOUT) {
            return Ok(c);
        }
    }
    let spawn_lock = connection::open_lock_file(&files.spawn_lock)
        .map_err(|e| ClientError::Lifecycle(format!("cannot open {}: {e}", files.spawn_lock.display())))?;
    spawn_lock
        .lock_exclusive()
        .map_err(|e| ClientError::Lifecycle(format!("cannot lock {}: {e}", files.spawn_lock.display())))?;
    let result = (|| {
        if files.is_alive() {
            return Client::connect_file(&files.connection, START_TIMEOUT);
        }
        if files.connection.exists() || files.lock.exists() {
            eprintln!(
                "llmspell: kernel {id:?} had stopped without cleaning up (crashed?); starting a new one"
            );
            files.remove_stale();
        } else if std::fs::remove_file(&files.idle_marker).is_ok() {
            eprintln!(
                "llmspell: kernel {id:?} had stopped after its idle timeout; this is a new session \
                 (globals are gone, `state` is kept)"
            );
        }
        KernelFiles::sweep(&dir);
        spawn_detached(&files, &["--idle-timeout".into(), idle_timeout.to_string()])?;
        Client::connect_file(&files.connection, START_TIMEOUT)
    })();
    let _ = FileExt::unlock(&spawn_lock);
    result
}

/// Starts `llmspell kernel start --id ID` in its own session, stdio closed, logging to its log file,
/// and waits until its connection file appears. The caller holds the spawn lock.
pub fn spawn_detached(files: &KernelFiles, extra: &[String]) -> Result<(), ClientError> {
    use std::os::unix::process::CommandExt;
    let failed = ClientError::Lifecycle;
    let exe = std::env::current_exe().map_err(|e| failed(format!("cannot find the llmspell binary: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["kernel", "start", "--id", &files.id, "--log-file"])
        .arg(&files.log)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the kernel from our terminal and its signals.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| failed(format!("cannot start a kernel: {e}")))?;
    let deadline = Instant::now() + SPAWN_TIMEOUT;
    loop {
        if files.connection.exists() && files.is_alive() {
            // Reap the child later without blocking: it is its own session leader and lives on.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&files.log).unwrap_or_default();
            let last = log.lines().last().unwrap_or("no log").to_string();
            return Err(failed(format!("the kernel exited at start ({status}): {last}")));
        }
        if Instant::now() > deadline {
            return Err(failed(format!(
                "the kernel did not start within {} s (see {})",
                SPAWN_TIMEOUT.as_secs(),
                files.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The connection file of a live kernel by id, if any.
pub fn live_connection(id: &str) -> Result<Option<PathBuf>, ClientError> {
    let files = KernelFiles::new(&connection::kernels_dir().map_err(ClientError::Lifecycle)?, id);
    Ok(files.is_alive().then_some(files.connection))
}

/// Stops kernel `id`: shutdown request on control, then SIGTERM, then SIGKILL; removes its files.
/// Whether there was a kernel (or its leftovers) to stop.
pub fn stop_kernel(files: &KernelFiles) -> Result<bool, ClientError> {
    if !files.is_alive() {
        let existed = files.connection.exists() || files.lock.exists();
        files.remove_stale();
        return Ok(existed);
    }
    let info = ConnectionInfo::read(&files.connection).ok();
    let pid = info.as_ref().and_then(|i| i.pid);
    if let Ok(c) = Client::connect_file(&files.connection, Duration::from_secs(2)) {
        c.shutdown(Duration::from_secs(2));
    }
    let gone = |limit: Duration| {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if !files.is_alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        !files.is_alive()
    };
    if !gone(Duration::from_secs(3)) {
        if let Some(pid) = pid {
            // SAFETY: plain kill(2) on the pid the live kernel wrote; the lock proves it still runs.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            if !gone(Duration::from_secs(2)) {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                gone(Duration::from_secs(2));
            }
        }
    }
    files.remove_stale();
    if files.is_alive() {
        return Err(ClientError::Lifecycle(format!("kernel {:?} did not stop", files.id)));
    }
    Ok(true)
}
