//! The `state` natives: the persistent store seen from Lua.

use super::convert::{from_json, to_json_strict};
use crate::state::{StateError, Store};
use mlua::{Function, Lua, Table, Value};
use serde_json::Value as Json;
use std::cell::RefCell;
use std::rc::Rc;

/// Why a `state` native failed: a message the prelude raises at the caller's line, or a Lua error
/// (from the function given to `state.update`) passed on as it is.
enum NativeError {
    Message(String),
    Lua(mlua::Error),
}

impl From<StateError> for NativeError {
    fn from(e: StateError) -> Self {
        NativeError::Message(e.to_string())
    }
}

impl From<String> for NativeError {
    fn from(m: String) -> Self {
        NativeError::Message(m)
    }
}

/// A native returning `true, value` or `false, message`.
fn checked<A: mlua::FromLuaMulti>(
    lua: &Lua,
    store: &Rc<RefCell<Store>>,
    f: impl Fn(&Lua, &mut Store, A) -> Result<Value, NativeError> + 'static,
) -> mlua::Result<Function> {
    let store = store.clone();
    lua.create_function(move |lua, args: A| match f(lua, &mut store.borrow_mut(), args) {
        Ok(v) => Ok((true, v)),
        Err(NativeError::Message(m)) => Ok((false, Value::String(lua.create_string(m)?))),
        Err(NativeError::Lua(e)) => Err(e),
    })
}

/// The `state` natives; the prelude wraps them so failures are errors at the caller's line.
pub(crate) fn state_natives(lua: &Lua, store: &Rc<RefCell<Store>>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "set",
        checked(lua, store, |_, store, (key, value): (Value, Value)| {
            let key = key_of(&key)?;
            if value.is_nil() {
                store.delete(&key)?;
            } else {
                let json = to_json_strict(&value, "value", &mut Vec::new())
                    .map_err(|m| format!("key {key:?}: {m}"))?;
                store.set(&key, json)?;
            }
            Ok(Value::Nil)
        })?,
    )?;
    t.set(
        "get",
        checked(lua, store, |lua, store, (key, default): (Value, Value)| {
            match store.get(&key_of(&key)?)? {
                Some(v) => from_json(lua, &v).map_err(NativeError::Lua),
                None => Ok(default),
            }
        })?,
    )?;
    t.set(
        "delete",
        checked(lua, store, |_, store, key: Value| Ok(Value::Boolean(store.delete(&key_of(&key)?)?)))?,
    )?;
    t.set(
        "keys",
        checked(lua, store, |lua, store, prefix: Option<String>| {
            let keys = store.keys(prefix.as_deref())?;
            lua.create_sequence_from(keys).map(Value::Table).map_err(NativeError::Lua)
        })?,
    )?;
    t.set(
        "clear",
        checked(lua, store, |_, store, ()| {
            store.clear()?;
            Ok(Value::Nil)
        })?,
    )?;
    t.set(
        "update",
        checked(lua, store, |lua, store, (key, f): (Value, Function)| {
            let key = key_of(&key)?;
            // Runs under the store's cross-process lock: `f` should be quick (other kernels wait).
            let new = store.update(&key, |old| -> Result<Option<Json>, NativeError> {
                let old = match old {
                    Some(v) => from_json(lua, &v).map_err(NativeError::Lua)?,
                    None => Value::Nil,
                };
                let new: Value = f.call(old).map_err(NativeError::Lua)?;
                if new.is_nil() {
                    return Ok(None);
                }
                let json = to_json_strict(&new, "value", &mut Vec::new()).map_err(|m| {
                    format!("key {key:?}: the function returned something that cannot be stored: {m}")
                })?;
                Ok(Some(json))
            })?;
            match new {
                Some(v) => from_json(lua, &v).map_err(NativeError::Lua),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    Ok(t)
}

fn key_of(key: &Value) -> Result<String, String> {
    match key {
        Value::String(s) => match s.to_str() {
            Ok(k) => Ok(k.to_string()),
            Err(_) => Err("keys must be UTF-8 text".into()),
        },
        other => Err(format!("keys must be strings, got {}", other.type_name())),
    }
}
