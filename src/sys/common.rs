//! What both backends do the same way, with calls every Unix has.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = std::io::pipe()?;
    Ok((r.into(), w.into()))
}

pub fn set_nonblocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on an fd of the caller's.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags.max(0) | libc::O_NONBLOCK);
    }
}

/// Waits until one of `fds` is readable (or hung up), or `timeout` passes (None: no limit).
/// Returns the index of the first ready fd; None on timeout.
pub fn wait_readable(fds: &[RawFd], timeout: Option<std::time::Duration>) -> Option<usize> {
    let mut polls: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: poll on a local array of fds that outlive the call.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
        if n > 0 {
            return polls.iter().position(|p| p.revents != 0);
        }
        if n == 0 {
            return None;
        }
    }
}

/// The fds SCM_RIGHTS control messages of `msg` carry, owned.
///
/// # Safety
/// `msg` must be a msghdr that recvmsg has just filled.
pub(super) unsafe fn passed_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut fds = Vec::new();
    let mut c = libc::CMSG_FIRSTHDR(msg);
    while !c.is_null() {
        if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
            let data = libc::CMSG_DATA(c) as *const i32;
            let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
            for i in 0..count {
                fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
            }
        }
        c = libc::CMSG_NXTHDR(msg, c);
    }
    fds
}

/// `recvmsg` into `buf` with room for a few fds, retried on EINTR; the byte count.
pub(super) fn recvmsg(fd: RawFd, buf: &mut [u8], flags: i32) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = [0u64; 16]; // aligned space for a few fds
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: msghdr points at local buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
    loop {
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(fd, &mut msg, flags | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: recvmsg has just filled msg.
        return Ok((n as usize, unsafe { passed_fds(&msg) }));
    }
}

/// Closes fds `first..end` except `keep`, one by one.
pub(super) fn close_each(first: RawFd, end: RawFd, keep: &[RawFd]) {
    for fd in first..end {
        if !keep.contains(&fd) {
            // SAFETY: closing fds this (freshly forked) process does not use.
            unsafe { libc::close(fd) };
        }
    }
}
