//! What lies outside the open file: the workspace's files on disk (their globals, for "defined
//! elsewhere"), `require` resolution as `package.path` would do it, and the live session's snapshot.
//! This is the analysis' `World`.

use super::documents::Documents;
use crate::analysis::{module_files, LiveSnapshot, Module, SourceFile, World};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Files the workspace scan reads at most, and the largest file read from disk (as the largest
/// message an editor may send).
const MAX_SCANNED_FILES: usize = 2000;
const MAX_FILE_BYTES: u64 = 64 << 20;
/// The scan skips files larger than this (a workspace's globals come from ordinary sources).
const MAX_SCANNED_BYTES: u64 = 2 << 20;
/// Parsed modules kept; the cache starts over when it is full.
const MAX_CACHED_MODULES: usize = 256;

/// A cached module is good while its file (or open document) is the one it was parsed from.
#[derive(PartialEq, Clone)]
enum Stamp {
    Disk(Option<SystemTime>, u64),
    Open(i64),
}

pub struct Workspace {
    pub root: Option<PathBuf>,
    /// `package.path` templates, the workspace's own first.
    search: Vec<String>,
    modules: RefCell<HashMap<PathBuf, (Stamp, Arc<Module>)>>,
    /// Globals each workspace file assigns (from disk, or from the editor's text while open).
    pub globals: HashMap<PathBuf, HashSet<String>>,
}

impl Workspace {
    pub fn new(root: Option<PathBuf>) -> Workspace {
        let mut search = Vec::new();
        if let Some(r) = &root {
            search.push(format!("{}/?.lua", r.display()));
            search.push(format!("{}/?/init.lua", r.display()));
        }
        for t in crate::lua::lua_path().split(';').filter(|t| !t.is_empty()) {
            // `./?.lua` is relative to where the code runs: for an editor, the workspace root.
            match (t.strip_prefix("./"), &root) {
                (Some(rel), Some(r)) => search.push(format!("{}/{rel}", r.display())),
                _ => search.push(t.to_string()),
            }
        }
        search.dedup();
        Workspace { root, search, modules: RefCell::default(), globals: HashMap::new() }
    }

    /// The file `require(name)` would load from the document `current`, if any: a notebook's copy
    /// under `.virtual_documents/` looks first beside the notebook (where its kernel runs).
    fn find_module(&self, name: &str, current: Option<&Path>) -> Option<PathBuf> {
        let notebook = current.filter(|p| is_virtual(p)).map(real_path);
        let dir = notebook.as_deref().and_then(Path::parent).map(Path::display);
        let beside: Vec<String> =
            dir.iter().flat_map(|d| [format!("{d}/?.lua"), format!("{d}/?/init.lua")]).collect();
        module_files(beside.iter().chain(&self.search), name).into_iter().find(|p| p.is_file())
    }

    fn module(&self, name: &str, docs: &Documents, current: Option<&Path>) -> Option<Arc<Module>> {
        let path = self.find_module(name, current)?;
        let open = docs.open.get(&uri_of(&path));
        let stamp = match open {
            Some(d) => Stamp::Open(d.version),
            None => {
                let meta = std::fs::metadata(&path).ok()?;
                Stamp::Disk(meta.modified().ok(), meta.len())
            }
        };
        if let Some((s, m)) = self.modules.borrow().get(&path) {
            if *s == stamp {
                return Some(m.clone());
            }
        }
        let file = match open {
            Some(d) => SourceFile::parse(d.text()),
            None => SourceFile::parse(&read_bounded(&path)?),
        };
        let module = Arc::new(Module { path: path.clone(), file });
        let mut cache = self.modules.borrow_mut();
        if cache.len() >= MAX_CACHED_MODULES {
            cache.clear();
        }
        cache.insert(path, (stamp, module.clone()));
        Some(module)
    }
}

/// jupyter-lsp gives a notebook's language server a copy of its cells under `.virtual_documents/`
/// in the server's root (and that folder as the workspace root, for servers that read files).
const VIRTUAL_DOCUMENTS: &str = ".virtual_documents";

fn is_virtual(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == VIRTUAL_DOCUMENTS)
}

/// Where a path really is: a notebook's virtual copy stands for the notebook (the same path without
/// `.virtual_documents`), whose folder is where its code runs and its modules are found.
pub fn real_path(path: &Path) -> PathBuf {
    path.components().filter(|c| c.as_os_str() != VIRTUAL_DOCUMENTS).collect()
}

/// A text file of a bounded size, as UTF-8 (lossy); None if unreadable or too big.
pub fn read_bounded(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_FILE_BYTES {
        return None;
    }
    std::fs::read(path).ok().map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The globals each `.lua` file under `root` assigns (hidden directories, `target` and
/// `node_modules` skipped; bounded in files and size). Runs on a thread of its own.
pub fn scan_globals(root: &Path) -> HashMap<PathBuf, HashSet<String>> {
    let mut out = HashMap::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() && !name.starts_with('.') && name != "target" && name != "node_modules" {
                dirs.push(e.path());
            } else if kind.is_file() && name.ends_with(".lua") {
                seen += 1;
                if seen > MAX_SCANNED_FILES {
                    return out;
                }
                let small = e.metadata().is_ok_and(|m| m.len() <= MAX_SCANNED_BYTES);
                if let Some(text) = read_bounded(&e.path()).filter(|_| small) {
                    let globals = SourceFile::parse(&text).defined_globals().into_iter().collect();
                    out.insert(e.path(), globals);
                }
            }
        }
    }
    out
}

/// The analysis' view of everything outside one document.
pub struct View<'a> {
    pub workspace: &'a Workspace,
    pub docs: &'a Documents,
    /// The document being analysed: its own globals do not count as "defined elsewhere".
    pub current: Option<PathBuf>,
    pub live: Option<Arc<LiveSnapshot>>,
}

impl World for View<'_> {
    fn module(&self, name: &str) -> Option<Arc<Module>> {
        self.workspace.module(name, self.docs, self.current.as_deref())
    }
    fn is_workspace_global(&self, name: &str) -> bool {
        let current = self.current.as_deref();
        self.workspace.globals.iter().any(|(p, g)| Some(p.as_path()) != current && g.contains(name))
    }
    fn live(&self) -> Option<&LiveSnapshot> {
        self.live.as_deref()
    }
}

/// The path of a `file:` URI (percent-decoded); None for other schemes.
pub fn path_of(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || {
            std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        match (bytes[i], hex()) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

/// The `file:` URI of a path, as editors write them (unreserved characters and `/` as they are).
pub fn uri_of(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notebooks_virtual_copy_requires_modules_from_beside_the_notebook() {
        // jupyter-lsp: the root is `<dir>/.virtual_documents`, a cell's document is
        // `<dir>/.virtual_documents/sub/nb.ipynb`; its kernel runs in `<dir>/sub`.
        let dir = std::env::temp_dir().join(format!("llmspell-ws-virtual-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".virtual_documents/sub")).unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/helpers.lua"), "return {}").unwrap();
        std::fs::write(dir.join("top.lua"), "return {}").unwrap();
        let root = real_path(&dir.join(".virtual_documents"));
        assert_eq!(root, dir);
        let ws = Workspace::new(Some(root));
        let docs = Documents::default();
        let cell = dir.join(".virtual_documents/sub/nb.ipynb");
        assert_eq!(ws.module("helpers", &docs, Some(&cell)).unwrap().path, dir.join("sub/helpers.lua"));
        assert_eq!(ws.module("top", &docs, Some(&cell)).unwrap().path, dir.join("top.lua"));
        // An ordinary file does not search its own folder: `./?.lua` is the root, as for `lua`.
        assert!(ws.module("helpers", &docs, Some(&dir.join("sub/x.lua"))).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn uris_and_paths_round_trip() {
        let p = Path::new("/tmp/a dir/é.lua");
        assert_eq!(uri_of(p), "file:///tmp/a%20dir/%C3%A9.lua");
        assert_eq!(path_of(&uri_of(p)).unwrap(), p);
        assert_eq!(path_of("untitled:1"), None);
    }

    #[test]
    fn require_finds_workspace_modules_first() {
        let root = std::env::temp_dir().join(format!("llmspell-ws-{}", std::process::id()));
        std::fs::create_dir_all(root.join("pkg")).unwrap();
        std::fs::write(root.join("util.lua"), "return {}").unwrap();
        std::fs::write(root.join("pkg/init.lua"), "return {}").unwrap();
        let ws = Workspace::new(Some(root.clone()));
        let docs = Documents::default();
        assert_eq!(ws.module("util", &docs, None).unwrap().path, root.join("util.lua"));
        assert_eq!(ws.module("pkg", &docs, None).unwrap().path, root.join("pkg/init.lua"));
        assert!(ws.module("nope_not_here", &docs, None).is_none());
        let _ = std::fs::remove_dir_all(root);
    }
}
