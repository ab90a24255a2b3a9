//! The natives table `K` that the prelude (prelude.lua) builds the kernel's Lua side on.

use super::store::state_natives;
use super::{convert, Input, InputError, Run, SharedHost, Stream};
use crate::state::Store;
use base64::Engine;
use mlua::{Function, Lua, LuaString, Table, Value, Variadic};
use std::cell::RefCell;
use std::rc::Rc;

/// The natives table `K` the prelude builds on.
pub(super) fn natives(
    lua: &Lua,
    host: &SharedHost,
    run: &Rc<RefCell<Run>>,
    store: &Rc<RefCell<Store>>,
) -> mlua::Result<Table> {
    let k = lua.create_table()?;
    output_natives(lua, &k, host)?;
    frontend_natives(lua, &k, host, run)?;
    run_natives(lua, &k, run)?;
    k.set(
        "base64",
        lua.create_function(|_, bytes: LuaString| {
            Ok(base64::engine::general_purpose::STANDARD.encode(&*bytes.as_bytes()))
        })?,
    )?;
    k.set("session_id", crate::wire::random_hex(6))?;
    let docs: Table = lua.load(include_str!("lua_docs.lua")).set_name("=[llmspell docs]").call(())?;
    k.set("docs", docs)?;
    k.set("state", state_natives(lua, store)?)?;
    Ok(k)
}

/// print and write: output to the host, which coalesces it into stream messages.
fn output_natives(lua: &Lua, k: &Table, host: &SharedHost) -> mlua::Result<()> {
    let tostring: Function = lua.globals().get("tostring")?;
    // print: tab-separated tostring of each argument, as the standard print does.
    {
        let host = host.clone();
        let tostring = tostring.clone();
        k.set(
            "print",
            lua.create_function(move |lua, args: Variadic<Value>| {
                let mut line = Vec::with_capacity(32);
                for (i, v) in args.iter().enumerate() {
                    if i > 0 {
                        line.push(b'\t');
                    }
                    append_text(&mut line, v, &tostring)?;
                }
                line.push(b'\n');
                host.borrow_mut().write(Stream::Stdout, &line);
                look_again_later(lua);
                Ok(())
            })?,
        )?;
    }
    // write(stream, ...): strings and numbers, as file:write takes them.
    {
        let host = host.clone();
        k.set(
            "write",
            lua.create_function(move |lua, (stream, args): (i64, Variadic<Value>)| {
                let mut out = Vec::new();
                for (i, v) in args.iter().enumerate() {
                    match v {
                        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
                        Value::Integer(_) | Value::Number(_) => {
                            if let Some(s) = lua.coerce_string(v.clone())? {
                                out.extend_from_slice(&s.as_bytes());
                            }
                        }
                        other => {
                            return Err(mlua::Error::runtime(format!(
                                "bad argument #{} to 'write' (string expected, got {})",
                                i + 1,
                                other.type_name()
                            )))
                        }
                    }
                }
                let stream = if stream == 2 { Stream::Stderr } else { Stream::Stdout };
                host.borrow_mut().write(stream, &out);
                look_again_later(lua);
                Ok(())
            })?,
        )?;
    }
    Ok(())
}

/// What reaches the client: iopub messages, input, output of child processes.
fn frontend_natives(lua: &Lua, k: &Table, host: &SharedHost, run: &Rc<RefCell<Run>>) -> mlua::Result<()> {
    {
        let host = host.clone();
        k.set(
            "publish",
            lua.create_function(move |_, (msg_type, content): (String, Value)| {
                let content = convert::to_json_lenient(&content, 0);
                host.borrow_mut().publish(&msg_type, content);
                Ok(())
            })?,
        )?;
    }
    {
        let host = host.clone();
        let run = run.clone();
        k.set(
            "input",
            lua.create_function(move |_, prompt: String| {
                let answer = host.borrow_mut().input(&prompt, false);
                Ok(match answer {
                    Ok(Input::Line(s)) => ("line", Some(s)),
                    Ok(Input::Chunk(s)) => ("chunk", Some(s)),
                    Ok(Input::Eof) => ("eof", None),
                    Err(InputError::Interrupted) => {
                        run.borrow_mut().interrupted = true;
                        return Err(mlua::Error::runtime("Interrupted"));
                    }
                    Err(InputError::Failed(why)) => ("error", Some(why)),
                })
            })?,
        )?;
    }
    {
        let host = host.clone();
        k.set("line_input", lua.create_function(move |_, ()| Ok(host.borrow().line_input()))?)?;
    }
    {
        let host = host.clone();
        k.set(
            "sync_output",
            lua.create_function(move |_, ()| {
                host.borrow_mut().sync_output();
                Ok(())
            })?,
        )?;
    }
    Ok(())
}

/// What a cell leaves for its reply: pager texts.
fn run_natives(lua: &Lua, k: &Table, run: &Rc<RefCell<Run>>) -> mlua::Result<()> {
    {
        let run = run.clone();
        k.set(
            "page",
            lua.create_function(move |_, text: String| {
                run.borrow_mut().pages.push(text);
                Ok(())
            })?,
        )?;
    }
    Ok(())
}

/// Output may be left waiting to be coalesced: have the hook look at it in a while (on the thread
/// that wrote it, the one running).
fn look_again_later(lua: &Lua) {
    let state = lua.exec_raw_lua(|raw| raw.state());
    // SAFETY: the state this callback runs on, on its own thread.
    unsafe { super::interrupt::arm_tick(state) };
}

fn append_text(out: &mut Vec<u8>, v: &Value, tostring: &Function) -> mlua::Result<()> {
    match v {
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        Value::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        other => {
            let s: LuaString = tostring.call(other.clone())?;
            out.extend_from_slice(&s.as_bytes());
        }
    }
    Ok(())
}
