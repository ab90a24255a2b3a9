//! The kernel's side of the runner: starting the zygote on its socket, and the runs counter the two
//! share (an anonymous file, `sys::anonymous_file`), which the kernel's idle timeout reads.

use crate::connection::KernelFiles;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Shared with the kernel through an anonymous file: runs in progress, and when the last one started or ended
/// (milliseconds since the epoch). The kernel's idle timeout counts runs as activity.
#[repr(C)]
pub(crate) struct Activity {
    pub(crate) active: AtomicU64,
    pub(crate) last: AtomicU64,
}

static ACTIVITY: OnceLock<usize> = OnceLock::new();

pub(crate) fn map_activity(fd: RawFd) -> Option<&'static Activity> {
    // SAFETY: mapping 16 bytes of an anonymous file we own (or inherited); the mapping lives for the process.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<Activity>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let addr = *ACTIVITY.get_or_init(|| p as usize);
    // SAFETY: the page is zero-filled or written only as these atomics, and never unmapped.
    Some(unsafe { &*(addr as *const Activity) })
}

/// For the kernel's idle timeout: (runs in progress, last start or end in ms since the epoch).
pub fn activity() -> Option<(u64, u64)> {
    let addr = *ACTIVITY.get()?;
    // SAFETY: see map_activity.
    let a = unsafe { &*(addr as *const Activity) };
    Some((a.active.load(Ordering::Relaxed), a.last.load(Ordering::Relaxed)))
}

pub(crate) fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The kernel's handle on its zygote. Dropping it removes the socket and closes the pipe the zygote
/// watches: it ends its runs and exits.
pub struct Zygote {
    socket: PathBuf,
    _kernel_end: OwnedFd,
    child: Option<std::process::Child>,
}

impl Zygote {
    /// The zygote of a kernel: on `kernels/<id>.run` for our own kernels (`files`), on
    /// `kernels/key-<hash of the key>.run` for one launched by Jupyter. A kernel without one still
    /// serves its session: the failure is logged, and `run` says it cannot reach the runner.
    pub fn start_for(files: Option<&KernelFiles>, key: &str) -> Option<Zygote> {
        let socket = match files {
            Some(f) => super::socket_path(f.connection.parent().unwrap_or(std::path::Path::new(".")), &f.id),
            None => match crate::connection::kernels_dir() {
                Ok(dir) => super::key_socket_path(&dir, key),
                Err(e) => {
                    log::warn!("no runner for `llmspell run`: {e}");
                    return None;
                }
            },
        };
        match Zygote::start(socket) {
            Ok(z) => Some(z),
            Err(e) => {
                log::warn!("no runner for `llmspell run`: {e}");
                None
            }
        }
    }

    /// The socket runs are requested on.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Binds `socket` (0600) and starts the zygote on it. The caller holds the kernel lock (or the
    /// socket is named after its random key).
    fn start(socket: PathBuf) -> Result<Zygote, String> {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let _ = std::fs::remove_file(&socket); // a crashed kernel's
        let listener =
            UnixListener::bind(&socket).map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", socket.display()))?;
        // Both ends close on exec (the read end is dup'ed onto the zygote's stdin by Command,
        // which clears that flag there).
        let (read_end, write_end) = crate::sys::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let shared = crate::sys::anonymous_file(std::mem::size_of::<Activity>())
            .map_err(|e| format!("cannot create the runs counter: {e}"))?;
        map_activity(shared.as_raw_fd()).ok_or("cannot map the runs counter")?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the llmspell binary: {e}"))?;
        let (lfd, mfd) = (listener.as_raw_fd(), shared.as_raw_fd());
        let mut cmd = Command::new(exe);
        cmd.args(["kernel", "runner", "--listen-fd", &lfd.to_string(), "--activity-fd", &mfd.to_string()])
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::fcntl(lfd, libc::F_SETFD, 0);
                libc::fcntl(mfd, libc::F_SETFD, 0);
                // Its own process group: a Ctrl-C meant for a foreground kernel is not for the runs.
                libc::setpgid(0, 0);
                crate::sys::end_with_parent_pre_exec(libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start the runner zygote: {e}"))?;
        drop(listener);
        drop(shared);
        log::info!("runner zygote pid {} on {}", child.id(), socket.display());
        Ok(Zygote { socket, _kernel_end: write_end, child: Some(child) })
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        if let Some(mut child) = self.child.take() {
            // It exits on its own (our pipe end closes with us); reap it if it already has.
            let _ = child.try_wait();
        }
    }
}
