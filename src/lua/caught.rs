//! The session's `pcall` and `xpcall`: the base library's own, except that while a debugger asks to
//! stop on caught errors (DAP's "raised" exception filter) they run the code under a message handler
//! that lets the debugger stop where the error is raised, with that stack still there. Otherwise they
//! go straight to the library's functions: no wrapper frame, no upvalue, one atomic load.

use mlua::ffi::{self, lua_CFunction, lua_State};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// A debugger asks to stop on errors caught by pcall/xpcall (set from the control thread).
static BREAK_ON_CAUGHT: AtomicBool = AtomicBool::new(false);

/// The base library's pcall and xpcall (the same C functions in every state).
static RAW: OnceLock<(lua_CFunction, lua_CFunction)> = OnceLock::new();

/// Registry key of the function the handler calls with the error value: the debugger's stop.
pub(super) const ON_CAUGHT_KEY: &std::ffi::CStr = c"llmspell debug_on_caught";

/// Registry key of the library's own pcall, for the kernel's and the debugger's Lua code.
pub(super) const RAW_PCALL_KEY: &std::ffi::CStr = c"llmspell raw pcall";

pub fn set_break_on_caught(on: bool) {
    BREAK_ON_CAUGHT.store(on, Ordering::SeqCst);
}

/// Whether the debugger still asks to stop on caught errors (it may have changed its mind since the
/// pcall started).
pub(super) fn break_on_caught() -> bool {
    BREAK_ON_CAUGHT.load(Ordering::SeqCst)
}

/// Calls the debugger's stop (if one is registered) with the error value at index 1.
unsafe fn notify(l: *mut lua_State) {
    if ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, ON_CAUGHT_KEY.as_ptr()) == ffi::LUA_TFUNCTION {
        ffi::lua_pushvalue(l, 1);
        if ffi::lua_pcall(l, 1, 0, 0) != ffi::LUA_OK {
            ffi::lua_pop(l, 1);
        }
    } else {
        ffi::lua_pop(l, 1);
    }
}

/// pcall's message handler: the debugger may stop; the error value goes on unchanged.
unsafe extern "C-unwind" fn caught(l: *mut lua_State) -> c_int {
    notify(l);
    ffi::lua_settop(l, 1);
    1
}

/// xpcall's message handler: the debugger may stop, then the user's handler (upvalue 1) runs.
unsafe extern "C-unwind" fn caught_then_users(l: *mut lua_State) -> c_int {
    notify(l);
    ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
    ffi::lua_insert(l, 1);
    ffi::lua_call(l, ffi::lua_gettop(l) - 1, 1);
    1
}

unsafe extern "C-unwind" fn pcall(l: *mut lua_State) -> c_int {
    let Some(&(raw_pcall, raw_xpcall)) = RAW.get() else { return 0 };
    if !BREAK_ON_CAUGHT.load(Ordering::Relaxed) {
        return raw_pcall(l);
    }
    ffi::luaL_checkany(l, 1);
    ffi::lua_pushcfunction(l, caught);
    ffi::lua_insert(l, 2);
    raw_xpcall(l)
}

unsafe extern "C-unwind" fn xpcall(l: *mut lua_State) -> c_int {
    let Some(&(_, raw_xpcall)) = RAW.get() else { return 0 };
    if BREAK_ON_CAUGHT.load(Ordering::Relaxed) && ffi::lua_type(l, 2) == ffi::LUA_TFUNCTION {
        ffi::lua_pushvalue(l, 2);
        ffi::lua_pushcclosure(l, caught_then_users, 1);
        ffi::lua_replace(l, 2);
    }
    raw_xpcall(l)
}

/// Puts the session's pcall and xpcall in the globals; the library's pcall stays in the registry.
pub(super) fn install(lua: &mlua::Lua) {
    // SAFETY: balanced stack work on a live state; the functions replaced are the base library's C
    // functions, which ours call with the arguments they were called with.
    lua.exec_raw_lua(|raw| unsafe {
        let l = raw.state();
        ffi::lua_getglobal(l, c"pcall".as_ptr());
        ffi::lua_getglobal(l, c"xpcall".as_ptr());
        if let (Some(p), Some(x)) = (ffi::lua_tocfunction(l, -2), ffi::lua_tocfunction(l, -1)) {
            let &(raw_p, raw_x) = RAW.get_or_init(|| (p, x));
            if std::ptr::fn_addr_eq(raw_p, p) && std::ptr::fn_addr_eq(raw_x, x) {
                ffi::lua_pushvalue(l, -2);
                ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, RAW_PCALL_KEY.as_ptr());
                ffi::lua_pushcfunction(l, pcall);
                ffi::lua_setglobal(l, c"pcall".as_ptr());
                ffi::lua_pushcfunction(l, xpcall);
                ffi::lua_setglobal(l, c"xpcall".as_ptr());
            }
        }
        ffi::lua_pop(l, 2);
    });
}
