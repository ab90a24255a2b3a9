//! The kernel's debugger attached to an interpreter: its Lua side (`debugger.lua`) loaded with the
//! natives it needs, the hook logic (`debug_hook.rs`) installed, and stops at errors; and the debug
//! requests served while nothing runs.

use super::{caught, convert, debug_hook, DebugPort, Interpreter};
use mlua::{Function, Lua, Table, Value};
use serde_json::Value as Json;
use std::rc::Rc;

impl Interpreter {
    /// Attaches the kernel's debugger: its hook logic on this thread, its Lua side in this state, and
    /// the error handler's stop on uncaught errors.
    pub fn attach_debugger(&mut self, port: Rc<dyn DebugPort>) -> Result<(), String> {
        let lua = &self.lua;
        let fail = |e: mlua::Error| format!("cannot set up the debugger: {e}");
        let n = self.debugger_natives(&port).map_err(fail)?;
        let d: Table =
            lua.load(include_str!("debugger.lua")).set_name("=[llmspell debugger]").call(n).map_err(fail)?;
        let enter: Function = d.get("enter").map_err(fail)?;
        lua.set_named_registry_value(debug_hook::ENTER_KEY.to_str().unwrap_or_default(), enter.clone())
            .map_err(fail)?;
        // The prelude's error handler calls this at an error that leaves the cell, the session's
        // pcall/xpcall (caught.rs) at one they catch: with its stack still there.
        let stopped_at_error = Rc::new(std::cell::Cell::new(false));
        let stop_at_error = |caught: bool| {
            let (interrupt, enter, stopped_at_error) =
                (self.interrupt.clone(), enter.clone(), stopped_at_error.clone());
            move |lua: &Lua, err: Value| {
                let Some(port) = debug_hook::port() else { return Ok(()) };
                // Not for the interrupt's error, and not again for an error inside the stop (an
                // expression evaluated there).
                let wanted = if caught { caught::break_on_caught() } else { port.config().break_on_uncaught };
                if interrupt.is_set() || stopped_at_error.get() || !wanted {
                    return Ok(());
                }
                let text = match &err {
                    Value::String(s) => s.to_string_lossy(),
                    other => lua
                        .globals()
                        .get::<Function>("tostring")
                        .and_then(|f| f.call::<String>(other.clone()))
                        .unwrap_or_else(|_| other.type_name().to_string()),
                };
                stopped_at_error.set(true);
                port.stopped("exception", Some(&text));
                // Skip this native and the handler: the frames start where the error was raised.
                let how =
                    enter.call::<String>(("stop", text.as_str(), 2)).unwrap_or_else(|_| "continue".into());
                port.resumed(&how);
                stopped_at_error.set(false);
                Ok(())
            }
        };
        self.k
            .set("debug_on_error", lua.create_function(stop_at_error(false)).map_err(fail)?)
            .map_err(fail)?;
        lua.set_named_registry_value(
            caught::ON_CAUGHT_KEY.to_str().unwrap_or_default(),
            lua.create_function(stop_at_error(true)).map_err(fail)?,
        )
        .map_err(fail)?;
        debug_hook::install(port);
        self.debugger = Some(d);
        Ok(())
    }

    /// What the debugger's Lua side (`debugger.lua`) is given: the port's wait, respond and
    /// canonical, the session's repr, the raw pcall and the builtins.
    fn debugger_natives(&self, port: &Rc<dyn DebugPort>) -> mlua::Result<Table> {
        let lua = &self.lua;
        let n = lua.create_table()?;
        {
            let port = port.clone();
            n.set(
                "wait",
                lua.create_function(move |lua, ()| convert::from_json(lua, &port.next_command()))?,
            )?;
        }
        {
            let port = port.clone();
            let respond = move |_: &Lua, (id, ok, text): (u64, bool, mlua::LuaString)| {
                port.respond(id, ok, &text.to_string_lossy());
                Ok(())
            };
            n.set("respond", lua.create_function(respond)?)?;
        }
        {
            let port = port.clone();
            let canonical = move |_: &Lua, path: mlua::LuaString| Ok(port.canonical(&path.to_string_lossy()));
            n.set("canonical", lua.create_function(canonical)?)?;
        }
        n.set("repr", self.k.get::<Value>("repr")?)?;
        n.set(
            "pcall",
            lua.named_registry_value::<Value>(caught::RAW_PCALL_KEY.to_str().unwrap_or_default())?,
        )?;
        n.set("builtins", self.builtins.clone())?;
        Ok(n)
    }

    /// A debug request while nothing runs (inspectVariables, evaluate, ...): whether it succeeded,
    /// and its body as JSON text or its error message.
    pub fn debug_request(&mut self, request: &Json) -> (bool, String) {
        let Some(d) = &self.debugger else { return (false, "the debugger is not attached".into()) };
        let call = || -> mlua::Result<(bool, String)> {
            let idle: Function = d.get("idle")?;
            idle.call(convert::from_json(&self.lua, request)?)
        };
        call().unwrap_or_else(|e| (false, e.to_string()))
    }
}
