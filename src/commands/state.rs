//! `llmspell state ...`: the persistent store from the command line, with the same locking as the
//! kernels, with or without a kernel running. JSON in and out, so it composes with `jq`.

use crate::commands::CommandError;
use crate::connection;
use crate::private_files;
use crate::state::{self, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::process::ExitCode;

const HELP: &str = "\
llmspell state — the persistent store ($LLMSPELL_HOME/state.json) shared with Lua's `state`

USAGE:
  llmspell state get KEY          print the value as JSON (exit 1 if the key is absent)
  llmspell state set KEY JSON     store a JSON value (- reads it from stdin)
  llmspell state delete KEY       remove a key (exit 1 if it was absent)
  llmspell state list [PREFIX]    the keys, one a line, sorted
  llmspell state clear            remove every key
  llmspell state export [FILE]    the whole store as one JSON object (to stdout, or FILE with mode 0600)
  llmspell state import FILE      merge the keys of a JSON object (- for stdin) into the store
  llmspell state repair           move a corrupt state.json aside and start an empty store
  llmspell state path             print the file's path
";

pub fn exec(args: Vec<OsString>) -> Result<ExitCode, CommandError> {
    let args: Vec<String> = args.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    // Help touches nothing on disk (not even the home directory).
    if words.is_empty() || words.iter().any(|w| *w == "-h" || *w == "--help") {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = connection::home().join("state.json");
    if let Some(dir) = path.parent() {
        private_files::make_private_dir(dir).map_err(CommandError::Failed)?;
    }
    let mut store = Store::open(path.clone());
    match words.as_slice() {
        [] => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        ["get", key] => match store.get(key)? {
            Some(v) => {
                println!("{}", serde_json::to_string(&v).expect("json"));
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("llmspell: no key {key:?} in the store");
                Ok(ExitCode::from(1))
            }
        },
        ["set", key, json] => set(&mut store, key, json),
        ["delete", key] => {
            let existed = store.delete(key)?;
            store.flush()?;
            Ok(if existed { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        ["list"] | ["list", _] => {
            for k in store.keys(words.get(1).copied())? {
                println!("{k}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ["clear"] => {
            store.clear()?;
            store.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        ["export"] | ["export", _] => export(&mut store, words.get(1).copied()),
        ["import", file] => import(&mut store, file),
        ["repair"] => {
            match state::repair(&path)? {
                Some(aside) => eprintln!("moved the unreadable store to {}; starting empty", aside.display()),
                None => eprintln!("{} is fine; nothing to repair", path.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        ["path"] => {
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(CommandError::Usage(format!("unknown state command: {}", words.join(" ")))),
    }
}

/// `state set KEY JSON`: JSON `null` deletes the key.
fn set(store: &mut Store, key: &str, json: &str) -> Result<ExitCode, CommandError> {
    let text = if json == "-" { read_stdin()? } else { json.to_string() };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        CommandError::Usage(format!("the value is not valid JSON ({e}); quote strings: '\"text\"'"))
    })?;
    if value.is_null() {
        store.delete(key)?;
    } else {
        store.set(key, value)?;
    }
    store.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `state export [FILE]`: to stdout without FILE or with `-`.
fn export(store: &mut Store, file: Option<&str>) -> Result<ExitCode, CommandError> {
    let map = store.export()?;
    let text = serde_json::to_string_pretty(&map).expect("json") + "\n";
    match file {
        // As private as state.json itself (0600), written atomically.
        Some(file) if file != "-" => {
            private_files::write_private_atomic(std::path::Path::new(file), text.as_bytes())
                .map_err(|e| CommandError::Failed(format!("cannot write {file}: {e}")))?
        }
        _ => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `state import FILE`: merges a JSON object's keys (`-`: from stdin).
fn import(store: &mut Store, file: &str) -> Result<ExitCode, CommandError> {
    let text = if file == "-" {
        read_stdin()?
    } else {
        std::fs::read_to_string(file).map_err(|e| CommandError::Failed(format!("cannot read {file}: {e}")))?
    };
    let map: BTreeMap<String, Value> = serde_json::from_str(&text)
        .map_err(|e| CommandError::Failed(format!("{file} is not a JSON object: {e}")))?;
    let n = map.len();
    store.import(map)?;
    eprintln!("imported {n} keys");
    Ok(ExitCode::SUCCESS)
}

fn read_stdin() -> Result<String, CommandError> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| CommandError::Failed(format!("cannot read stdin: {e}")))?;
    Ok(s)
}
