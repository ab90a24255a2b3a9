//! Calling Lua as `lua.c` does: the message handler (a traceback), SIGINT armed only while Lua runs
//! (the first one raises "interrupted!", the next kills), errors as `progname: message` on C's
//! stderr; and what the run was asked (`Ctx`). Shared by the run (`child.rs`) and its interactive
//! loop (`lua_repl.rs`).

use mlua::ffi;
use std::ffi::{c_char, c_int, CString};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

/// The state the SIGINT handler sets its hook on (as `lua.c`'s `globalL`).
pub(super) static GLOBAL_L: AtomicPtr<ffi::lua_State> = AtomicPtr::new(ptr::null_mut());
static INTERRUPT_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signal the zygote sends besides SIGINT: `system()` ignores SIGINT while its child runs, so an
/// interrupt in `os.execute` would otherwise be lost. Handled exactly like SIGINT.
pub(crate) fn interrupt_signal() -> c_int {
    let s = INTERRUPT_SIGNAL.load(Ordering::Relaxed);
    if s != 0 {
        return s;
    }
    let s = crate::sys::interrupt_signal();
    INTERRUPT_SIGNAL.store(s, Ordering::Relaxed);
    s
}

extern "C" {
    pub(super) static mut stderr: *mut libc::FILE;
    pub(super) static mut stdout: *mut libc::FILE;
    pub(super) static mut stdin: *mut libc::FILE;
}

/// Writes `progname: msg` on C's stderr (so it stays in order with the script's own io.stderr).
pub(super) unsafe fn l_message(progname: Option<&CString>, msg: *const c_char) {
    let err = stderr;
    if let Some(p) = progname {
        libc::fputs(p.as_ptr(), err);
        libc::fputs(c": ".as_ptr(), err);
    }
    libc::fputs(msg, err);
    libc::fputs(c"\n".as_ptr(), err);
    libc::fflush(err);
}

pub(super) fn set_signal(sig: c_int, handler: libc::sighandler_t) {
    // SAFETY: a plain sigaction with no flags (no SA_RESTART, as lua.c on POSIX) and an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, ptr::null_mut());
    }
}

extern "C" fn on_interrupt(_sig: c_int) {
    // Another Ctrl-C kills the process, as in lua.c.
    set_signal(libc::SIGINT, libc::SIG_DFL);
    set_signal(INTERRUPT_SIGNAL.load(Ordering::Relaxed), libc::SIG_IGN);
    let flag = ffi::LUA_MASKCALL | ffi::LUA_MASKRET | ffi::LUA_MASKLINE | ffi::LUA_MASKCOUNT;
    // SAFETY: lua_sethook is the one Lua call documented as safe from a signal handler.
    unsafe { ffi::lua_sethook(GLOBAL_L.load(Ordering::Relaxed), Some(stop_hook), flag, 1) };
}

unsafe extern "C-unwind" fn stop_hook(l: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    ffi::lua_sethook(l, None, 0, 0);
    ffi::luaL_error(l, c"interrupted!".as_ptr());
}

/// Adds a traceback to string errors; other error objects become their `__tostring` or a note.
unsafe extern "C-unwind" fn msghandler(l: *mut ffi::lua_State) -> c_int {
    let mut msg = ffi::lua_tostring(l, 1);
    if msg.is_null() {
        if ffi::luaL_callmeta(l, 1, c"__tostring".as_ptr()) != 0 && ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
            return 1;
        }
        msg = ffi::lua_pushfstring(l, c"(error object is a %s value)".as_ptr(), ffi::luaL_typename(l, 1));
    }
    ffi::luaL_traceback(l, l, msg, 1);
    1
}

/// Calls the function below `narg` arguments with the message handler and SIGINT armed.
pub(super) unsafe fn docall(l: *mut ffi::lua_State, narg: c_int, nres: c_int) -> c_int {
    let base = ffi::lua_gettop(l) - narg;
    ffi::lua_pushcfunction(l, msghandler);
    ffi::lua_insert(l, base);
    GLOBAL_L.store(l, Ordering::Relaxed);
    let handler = on_interrupt as extern "C" fn(c_int) as libc::sighandler_t;
    set_signal(libc::SIGINT, handler);
    set_signal(interrupt_signal(), handler);
    let status = ffi::lua_pcall(l, narg, nres, base);
    set_signal(libc::SIGINT, libc::SIG_DFL);
    set_signal(interrupt_signal(), libc::SIG_IGN);
    ffi::lua_remove(l, base);
    status
}

pub(super) unsafe fn report(l: *mut ffi::lua_State, status: c_int, ctx: &Ctx) -> c_int {
    if status != ffi::LUA_OK {
        let mut msg = ffi::lua_tostring(l, -1);
        if msg.is_null() {
            msg = c"(error message not a string)".as_ptr();
        }
        l_message(ctx.progname.as_ref(), msg);
        ffi::lua_settop(l, -2);
    }
    status
}

pub(super) struct Ctx {
    pub(super) argv: Vec<CString>,
    /// Where lua's own argv[1] would be: lua's first option or the script (1: after the interpreter).
    pub(super) first: usize,
    pub(super) progname: Option<CString>,
    pub(super) options: Result<LuaOptions, usize>,
}

/// What `lua [options] [script [args]]` asked for; the error is the index of a bad option.
#[derive(Default)]
pub(super) struct LuaOptions {
    pub(super) interactive: bool,
    pub(super) version: bool,
    pub(super) no_env: bool,
    pub(super) execute: bool,
    pub(super) script: Option<usize>,
}
