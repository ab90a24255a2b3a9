//! The forked runner: becomes the caller's process in all that matters (fds 0-2, cwd, environment,
//! umask, default signal dispositions), then runs the script the way the stock `lua` program does:
//! a fresh state with every standard library, `arg`, `LUA_INIT`, `package.path`/`cpath` as Debian's
//! `lua5.4` computes them, errors as `progname: message` with a traceback, the same SIGINT handling
//! (first interrupt: "interrupted!" error; the signal is then back to its default, so a second one
//! kills). The only addition is the `state` global, on the same store as the session's.
//!
//! Written from the behaviour of `lua.c` (Lua 5.4), not from its code.

use super::proto::Request;
use crate::state::Store;
use mlua::ffi;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::path::Path;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

/// The state the SIGINT handler sets its hook on (as `lua.c`'s `globalL`).
static GLOBAL_L: AtomicPtr<ffi::lua_State> = AtomicPtr::new(ptr::null_mut());
/// The store, for the exit-time flush (os.exit never returns to us).
static STORE: AtomicPtr<RefCell<Store>> = AtomicPtr::new(ptr::null_mut());
static INTERRUPT_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signal the zygote sends besides SIGINT: `system()` ignores SIGINT while its child runs, so an
/// interrupt in `os.execute` would otherwise be lost. Handled exactly like SIGINT.
pub(crate) fn interrupt_signal() -> c_int {
    let s = INTERRUPT_SIGNAL.load(Ordering::Relaxed);
    if s != 0 {
        return s;
    }
    let s = libc::SIGRTMIN() + 4;
    INTERRUPT_SIGNAL.store(s, Ordering::Relaxed);
    s
}

extern "C" {
    static mut stderr: *mut libc::FILE;
}

/// Writes `progname: msg` on C's stderr (so it stays in order with the script's own io.stderr).
unsafe fn l_message(progname: Option<&CString>, msg: *const c_char) {
    let err = stderr;
    if let Some(p) = progname {
        libc::fputs(p.as_ptr(), err);
        libc::fputs(c": ".as_ptr(), err);
    }
    libc::fputs(msg, err);
    libc::fputs(c"\n".as_ptr(), err);
    libc::fflush(err);
}

fn set_signal(sig: c_int, handler: libc::sighandler_t) {
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
unsafe fn docall(l: *mut ffi::lua_State, narg: c_int, nres: c_int) -> c_int {
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

unsafe fn report(l: *mut ffi::lua_State, status: c_int, ctx: &Ctx) -> c_int {
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

struct Ctx {
    argv: Vec<CString>,
    script: usize,
    progname: Option<CString>,
}

unsafe fn dochunk(l: *mut ffi::lua_State, mut status: c_int, ctx: &Ctx) -> c_int {
    if status == ffi::LUA_OK {
        status = docall(l, 0, 0);
    }
    report(l, status, ctx)
}

/// `LUA_INIT_5_4`, else `LUA_INIT`: `@file` runs the file, anything else is code.
unsafe fn handle_luainit(l: *mut ffi::lua_State, ctx: &Ctx) -> c_int {
    let mut name = c"=LUA_INIT_5_4";
    let mut init = libc::getenv(c"LUA_INIT_5_4".as_ptr());
    if init.is_null() {
        name = c"=LUA_INIT";
        init = libc::getenv(c"LUA_INIT".as_ptr());
    }
    if init.is_null() {
        return ffi::LUA_OK;
    }
    if *init == b'@' as c_char {
        dochunk(l, ffi::luaL_loadfilex(l, init.add(1), ptr::null()), ctx)
    } else {
        dochunk(l, ffi::luaL_loadbufferx(l, init, libc::strlen(init), name.as_ptr(), ptr::null()), ctx)
    }
}

unsafe fn handle_script(l: *mut ffi::lua_State, ctx: &Ctx) -> c_int {
    let fname = &ctx.argv[ctx.script];
    let stdin = fname.as_bytes() == b"-" && ctx.argv[ctx.script - 1].as_bytes() != b"--";
    let mut status = ffi::luaL_loadfilex(l, if stdin { ptr::null() } else { fname.as_ptr() }, ptr::null());
    if status == ffi::LUA_OK {
        // The script's arguments: arg[1] .. arg[#arg], read back from the table as lua does.
        if ffi::lua_getglobal(l, c"arg".as_ptr()) != ffi::LUA_TTABLE {
            ffi::luaL_error(l, c"'arg' is not a table".as_ptr());
        }
        let n = ffi::luaL_len(l, -1) as c_int;
        ffi::luaL_checkstack(l, n + 3, c"too many arguments to script".as_ptr());
        for i in 1..=n {
            ffi::lua_rawgeti(l, -i, i as ffi::lua_Integer);
        }
        ffi::lua_remove(l, -(n + 1));
        status = docall(l, n, ffi::LUA_MULTRET);
    }
    report(l, status, ctx)
}

/// The protected main, as lua.c's: `arg`, generational GC, LUA_INIT, the script.
unsafe extern "C-unwind" fn pmain(l: *mut ffi::lua_State) -> c_int {
    let ctx = &*(ffi::lua_touserdata(l, 1) as *const Ctx);
    let argc = ctx.argv.len() as c_int;
    let script = ctx.script as c_int;
    ffi::lua_createtable(l, argc - (script + 1), script + 1);
    for (i, a) in ctx.argv.iter().enumerate() {
        ffi::lua_pushstring(l, a.as_ptr());
        ffi::lua_rawseti(l, -2, i as ffi::lua_Integer - script as ffi::lua_Integer);
    }
    ffi::lua_setglobal(l, c"arg".as_ptr());
    ffi::lua_gc(l, ffi::LUA_GCRESTART);
    ffi::lua_gc(l, ffi::LUA_GCGEN, 0, 0);
    if handle_luainit(l, ctx) != ffi::LUA_OK {
        return 0;
    }
    if handle_script(l, ctx) != ffi::LUA_OK {
        return 0;
    }
    ffi::lua_pushboolean(l, 1);
    1
}

/// The `state` global: the session's natives behind wrappers that put errors at the caller's line.
const STATE_WRAPPERS: &str = r#"
local native = ...
local function checked(name, f)
  return function(...)
    local ok, value = f(...)
    if not ok then error(name .. ": " .. tostring(value), 2) end
    return value
  end
end
local function checked_silent(name, f)
  return function(...)
    local ok, value = f(...)
    if not ok then error(name .. ": " .. tostring(value), 2) end
  end
end
return {
  set = checked_silent("state.set", native.set),
  get = checked("state.get", native.get),
  delete = checked("state.delete", native.delete),
  keys = checked("state.keys", native.keys),
  clear = checked_silent("state.clear", native.clear),
  update = checked("state.update", native.update),
}
"#;

/// Writes pending `state` changes; on failure says so and makes the exit status 1.
fn flush_store() -> bool {
    let p = STORE.load(Ordering::Relaxed);
    if p.is_null() {
        return true;
    }
    // SAFETY: set once to a leaked Rc's RefCell that lives until the process ends.
    let cell = unsafe { &*p };
    let Ok(mut store) = cell.try_borrow_mut() else { return true };
    match store.flush() {
        Ok(()) => true,
        Err(e) => {
            store.discard_pending();
            let msg = CString::new(format!("state changes were not saved: {e}")).unwrap_or_default();
            // SAFETY: writing a message on stderr.
            unsafe { l_message(Some(&CString::new("llmspell").unwrap()), msg.as_ptr()) };
            false
        }
    }
}

extern "C" fn flush_at_exit() {
    if !flush_store() {
        // SAFETY: flush C's streams (exit would have), then end with the failure status.
        unsafe {
            libc::fflush(ptr::null_mut());
            libc::_exit(1);
        }
    }
}

fn fail(msg: &str) -> ! {
    let m = CString::new(format!("llmspell: {msg}\n")).unwrap_or_default();
    // SAFETY: write(2) on fd 2 and _exit: nothing else is safe to rely on here.
    unsafe {
        libc::write(2, m.as_ptr() as *const libc::c_void, m.as_bytes().len());
        libc::_exit(1);
    }
}

/// Becomes the caller's process and runs the script; never returns.
pub(crate) fn run(req: Request, fds: [c_int; 3], template: Template) -> ! {
    let interrupt = interrupt_signal();
    // SAFETY: process-level set-up in a freshly forked, single-threaded child.
    unsafe {
        // A session of its own: its own process group (which the zygote signals) and its own
        // scheduler autogroup, so a busy session cell does not share its CPU share with runs.
        libc::setsid();
        // The zygote only ends before its runs if it is killed: then its clients have reported an
        // error, and their runs must not go on behind their backs.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() == 1 {
            libc::_exit(1);
        }
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::signal(interrupt, libc::SIG_IGN);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
        for (i, fd) in fds.iter().enumerate() {
            if libc::dup2(*fd, i as c_int) < 0 {
                fail(&format!("cannot take over fd {i}: {}", std::io::Error::last_os_error()));
            }
        }
        // Nothing of the zygote's (listener, other clients' connections) stays open in a run.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
        let cwd = CString::new(req.cwd.clone()).unwrap_or_default();
        if libc::chdir(cwd.as_ptr()) != 0 {
            fail(&format!(
                "cannot enter {}: {}",
                String::from_utf8_lossy(&req.cwd),
                std::io::Error::last_os_error()
            ));
        }
        libc::clearenv();
        for kv in &req.env {
            if kv.iter().skip(1).any(|&b| b == b'=') && !kv.starts_with(b"=") {
                if let Ok(c) = CString::new(kv.clone()) {
                    libc::putenv(c.into_raw());
                }
            }
        }
        libc::umask(req.umask as libc::mode_t);
    }
    let ctx = Ctx {
        argv: req.argv.iter().map(|a| CString::new(a.clone()).unwrap_or_default()).collect(),
        script: req.script as usize,
        progname: req.argv.first().filter(|a| !a.is_empty()).and_then(|a| CString::new(a.clone()).ok()),
    };
    let code = main_lua(&ctx, template);
    // SAFETY: the normal end of a C program: atexit handlers (the store), stdio flushed.
    unsafe { libc::exit(code) }
}

/// A Lua state prepared in the zygote before any fork: every standard library, as the stock
/// interpreter opens them, and `state`. Each run gets its own copy-on-write copy, never touched
/// before; what depends on the caller (package paths, the random seed) is set in the run.
pub(crate) struct Template {
    lua: mlua::Lua,
    store: Rc<RefCell<Store>>,
}

impl Template {
    pub(crate) fn new(state_path: &Path) -> Result<Template, String> {
        // SAFETY: the full standard library, debug included, as the stock interpreter opens it.
        let lua = unsafe { mlua::Lua::unsafe_new_with(mlua::StdLib::ALL, mlua::LuaOptions::default()) };
        let store = Rc::new(RefCell::new(Store::open(state_path)));
        let natives = crate::lua::state_natives(&lua, &store).map_err(|e| e.to_string())?;
        let state: mlua::Table = lua
            .load(STATE_WRAPPERS)
            .set_name("=[llmspell]")
            .call(natives)
            .map_err(|e| format!("the state wrappers failed: {e}"))?;
        lua.globals().set("state", state).map_err(|e| e.to_string())?;
        // No garbage of the set-up is left for the runs to collect.
        lua.gc_collect().map_err(|e| e.to_string())?;
        Ok(Template { lua, store })
    }
}

fn main_lua(ctx: &Ctx, template: Template) -> c_int {
    let Template { lua, store } = template;
    STORE.store(Rc::into_raw(store.clone()) as *mut RefCell<Store>, Ordering::Relaxed);
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(flush_at_exit) };
    if let Err(e) = setup(&lua) {
        fail(&format!("cannot set up Lua: {e}"));
    }
    let l = lua.state();
    // SAFETY: the raw API on the main state, as lua.c's main does.
    let (status, ok) = unsafe {
        ffi::lua_settop(l, 0);
        ffi::lua_pushcfunction(l, pmain);
        ffi::lua_pushlightuserdata(l, ctx as *const Ctx as *mut libc::c_void);
        let status = ffi::lua_pcall(l, 1, 1, 0);
        let ok = ffi::lua_toboolean(l, -1) != 0;
        report(l, status, ctx);
        (status, ok)
    };
    drop(lua); // lua_close: finalizers run, open files are closed (and flushed)
    let saved = flush_store();
    if ok && status == ffi::LUA_OK && saved {
        0
    } else {
        1
    }
}

/// What depends on the caller: package paths from its environment, and a random seed of its own.
fn setup(lua: &mlua::Lua) -> mlua::Result<()> {
    crate::lua::set_package_paths(lua)?;
    // Forked runs share the zygote's addresses and start in the same second: seed from the OS.
    let mut seed = [0u64; 2];
    // SAFETY: getrandom into a local array.
    unsafe { libc::getrandom(seed.as_mut_ptr() as *mut libc::c_void, 16, 0) };
    let math: mlua::Table = lua.globals().get("math")?;
    math.get::<mlua::Function>("randomseed")?.call::<()>((seed[0] as i64, seed[1] as i64))?;
    Ok(())
}
