//! Giving freed memory back to the system. glibc's malloc keeps what a large output freed (in the
//! heap, and in each thread's arena) for reuse, so without this a kernel stays at the peak of its
//! biggest output for the rest of its life. Elsewhere the allocator decides, and this does nothing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Output published since memory was last given back; past this much, a request's end gives it back.
const TRIM_AFTER_BYTES: u64 = 1 << 20;

/// Counts the bytes a kernel publishes, to know when giving memory back is worth it.
#[derive(Default)]
pub(super) struct OutputSinceTrim(AtomicU64);

impl OutputSinceTrim {
    pub(super) fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A subscriber has gone, and with it what was queued for it (a stalled one's queue can be
    /// IOPUB_HWM messages): memory goes back now, and after the next request (ZeroMQ's I/O thread
    /// may free the queue a moment after the unsubscription arrives).
    pub(super) fn subscriber_left(&self) {
        give_back_freed_memory();
        self.0.fetch_add(TRIM_AFTER_BYTES, Ordering::Relaxed);
    }

    /// After a request: returns freed memory to the system if a large output passed since the last
    /// time (a cell that printed or returned megabytes, a stalled subscriber's queue let go).
    pub(super) fn trim_if_large(&self) {
        if self.0.load(Ordering::Relaxed) >= TRIM_AFTER_BYTES {
            self.0.store(0, Ordering::Relaxed);
            give_back_freed_memory();
        }
    }
}

/// Blocks at least this large get pages of their own, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const OWN_PAGES_FROM_BYTES: i32 = 256 << 10;

/// At start: a large block (a 5 MB result, a big string the session dropped) goes back to the
/// system as soon as it is freed. glibc's default raises that threshold to the largest block freed
/// so far (up to 32 MiB), after which such blocks stay in the heap until a trim.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn tune_allocator() {
    // SAFETY: mallopt only changes the allocator's parameters; called before other threads start.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_PAGES_FROM_BYTES) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn tune_allocator() {}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_freed_memory() {
    // SAFETY: malloc_trim only releases free pages of the allocator's own arenas.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_freed_memory() {}
