//! The debugger's copies of cell sources (`source` requests), bounded: the latest cells stay in
//! memory; one that leaves is written to its file (the path the debugger named it after, in the
//! kernel's private temporary directory), where `source` reads it back.

use std::collections::VecDeque;
use std::path::Path;

/// Cells, and bytes of code, kept in memory.
const CELLS: usize = 64;
const BYTES: usize = 4 << 20;

#[derive(Default)]
pub(super) struct RecentCells {
    /// (path, code), oldest first.
    cells: VecDeque<(String, String)>,
    bytes: usize,
}

impl RecentCells {
    pub(super) fn insert(&mut self, path: &str, code: &str) {
        if let Some(at) = self.cells.iter().position(|(p, _)| p == path) {
            if let Some((_, old)) = self.cells.remove(at) {
                self.bytes -= old.len();
            }
        }
        self.bytes += code.len();
        self.cells.push_back((path.to_string(), code.to_string()));
        while self.cells.len() > CELLS || (self.bytes > BYTES && self.cells.len() > 1) {
            let Some((path, code)) = self.cells.pop_front() else { break };
            self.bytes -= code.len();
            write_out(Path::new(&path), &code);
        }
    }

    pub(super) fn get(&self, path: &str) -> Option<&str> {
        self.cells.iter().rev().find(|(p, _)| p == path).map(|(_, code)| code.as_str())
    }
}

/// Keeps a cell that leaves memory on disk (dumped cells are there already).
fn write_out(path: &Path, code: &str) {
    if path.exists() {
        return;
    }
    let written = crate::private_files::create_private_dir(crate::private_files::parent_dir(path))
        .and_then(|()| crate::private_files::write_private_atomic(path, code.as_bytes()));
    if let Err(e) = written {
        log::warn!(
            "debugger: cannot keep the source of {} on disk ({e}); `source` will not find it",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_cells_leave_memory_for_their_files() {
        let dir = std::env::temp_dir().join(format!("llmspell-cells-{}", crate::wire::random_hex(8)));
        let path = |i: usize| dir.join(format!("{i}.lua")).to_string_lossy().into_owned();
        let mut cells = RecentCells::default();
        for i in 0..CELLS + 10 {
            cells.insert(&path(i), &format!("x = {i}"));
        }
        assert_eq!(cells.cells.len(), CELLS);
        assert_eq!(cells.get(&path(CELLS + 9)), Some(format!("x = {}", CELLS + 9).as_str()));
        assert_eq!(cells.get(&path(0)), None);
        assert_eq!(std::fs::read_to_string(path(0)).unwrap(), "x = 0");
        assert!(!Path::new(&path(CELLS + 9)).exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
