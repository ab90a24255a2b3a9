//! Lua values and JSON: strict for `state` (what is stored comes back as it went in), lenient for
//! messages (display data never fails to convert).

use base64::Engine;
use mlua::{Lua, Table, Value};
use serde_json::Value as Json;

/// Strings that are not UTF-8 are stored as `{"$base64": "..."}` so arbitrary bytes round-trip.
const BYTES_TAG: &str = "$base64";
const MAX_DEPTH: usize = 100;

/// Lua value to JSON for `state`: refuses what would not come back as it went in, naming the path.
pub(super) fn to_json_strict(
    v: &Value,
    path: &str,
    seen: &mut Vec<*const std::ffi::c_void>,
) -> Result<Json, String> {
    Ok(match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(n) => Json::from(*n),
        Value::Number(f) => {
            if !f.is_finite() {
                return Err(format!("{path} is {f} (only finite numbers can be stored)"));
            }
            serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .ok_or(format!("{path} is not a storable number"))?
        }
        Value::String(s) => match s.to_str() {
            Ok(text) => Json::String(text.to_string()),
            Err(_) => {
                serde_json::json!({ BYTES_TAG: base64::engine::general_purpose::STANDARD.encode(&*s.as_bytes()) })
            }
        },
        Value::Table(t) => {
            let ptr = t.to_pointer();
            if seen.contains(&ptr) {
                return Err(format!("{path} refers back to a table that contains it (a cycle)"));
            }
            if seen.len() >= MAX_DEPTH {
                return Err(format!("{path} is nested more than {MAX_DEPTH} levels deep"));
            }
            seen.push(ptr);
            let result = table_to_json_strict(t, path, seen);
            seen.pop();
            result?
        }
        other => return Err(format!("{path} is a {}", other.type_name())),
    })
}

fn table_to_json_strict(
    t: &Table,
    path: &str,
    seen: &mut Vec<*const std::ffi::c_void>,
) -> Result<Json, String> {
    let len = t.raw_len();
    let mut array = Vec::with_capacity(len);
    let mut map = serde_json::Map::new();
    let mut count = 0usize;
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| format!("{path} cannot be read: {e}"))?;
        count += 1;
        match &k {
            Value::String(s) => {
                let key =
                    s.to_str().map_err(|_| format!("{path} has a key that is not UTF-8 text"))?.to_string();
                let child =
                    if is_identifier(&key) { format!("{path}.{key}") } else { format!("{path}[{key:?}]") };
                map.insert(key, to_json_strict(&v, &child, seen)?);
            }
            Value::Integer(i) if *i >= 1 && (*i as usize) <= len => {}
            other => {
                return Err(format!(
                    "{path} has the key {} (only arrays 1..n and string keys can be stored)",
                    match other {
                        Value::Integer(i) => i.to_string(),
                        Value::Number(f) => f.to_string(),
                        o => o.type_name().to_string(),
                    }
                ))
            }
        }
    }
    if !map.is_empty() && count > map.len() {
        return Err(format!("{path} mixes array items and string keys"));
    }
    if !map.is_empty() {
        if map.len() == 1 && map.contains_key(BYTES_TAG) {
            return Err(format!("{path} uses the reserved key {BYTES_TAG:?}"));
        }
        return Ok(Json::Object(map));
    }
    for i in 1..=len {
        let v: Value = t.raw_get(i).map_err(|e| format!("{path}[{i}] cannot be read: {e}"))?;
        if v.is_nil() {
            return Err(format!("{path}[{i}] is nil (arrays with holes cannot be stored)"));
        }
        array.push(to_json_strict(&v, &format!("{path}[{i}]"), seen)?);
    }
    Ok(Json::Array(array))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// JSON to Lua: integers stay integers, floats floats, tagged bytes become strings.
pub(super) fn from_json(lua: &Lua, v: &Json) -> mlua::Result<Value> {
    Ok(match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, from_json(lua, item)?)?;
            }
            Value::Table(t)
        }
        Json::Object(map) => {
            if let (1, Some(Json::String(b64))) = (map.len(), map.get(BYTES_TAG)) {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    return Ok(Value::String(lua.create_string(bytes)?));
                }
            }
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k.as_str(), from_json(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Lua value to JSON for messages (display data, metadata): never fails, shows what it cannot map.
pub(super) fn to_json_lenient(v: &Value, depth: usize) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(n) => Json::from(*n),
        Value::Number(f) => serde_json::Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
        Value::String(s) => Json::String(s.to_string_lossy()),
        Value::Table(t) if depth < MAX_DEPTH => {
            let len = t.raw_len();
            let only_array = t
                .clone()
                .pairs::<Value, Value>()
                .flatten()
                .all(|(k, _)| matches!(k, Value::Integer(i) if i >= 1 && i as usize <= len));
            if len > 0 && only_array {
                Json::Array(
                    (1..=len)
                        .map(|i| to_json_lenient(&t.raw_get(i).unwrap_or(Value::Nil), depth + 1))
                        .collect(),
                )
            } else {
                let mut map = serde_json::Map::new();
                for (k, val) in t.clone().pairs::<Value, Value>().flatten() {
                    let key = match &k {
                        Value::String(s) => s.to_string_lossy(),
                        other => to_json_lenient(other, depth + 1).to_string(),
                    };
                    map.insert(key, to_json_lenient(&val, depth + 1));
                }
                Json::Object(map)
            }
        }
        other => Json::String(format!("<{}>", other.type_name())),
    }
}
