//! The cells this kernel has run, for `history_request`. The whole history is on disk
//! (`history_file.rs`); memory holds a bounded window of the latest cells, with a short preview of
//! each result. Without a usable file (no writable home, a full disk) the window is all there is.

use super::history_file::{self, Entry, HistoryFile};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::PathBuf;

/// Cells kept in memory, and the bytes of text they may hold together.
const WINDOW_CELLS: usize = 1000;
const WINDOW_BYTES: usize = 1 << 20;
/// What a kernel start reads of the file: enough for the window.
const START_READS_BYTES: u64 = 2 * WINDOW_BYTES as u64;
/// A result is kept as its first characters only.
const OUTPUT_PREVIEW_CHARS: usize = 200;

pub(super) struct History {
    /// This kernel start's number: one more than the highest in the file (IPython's session).
    session: u64,
    window: VecDeque<Entry>,
    window_bytes: usize,
    /// None without a usable file: then the window answers everything.
    file: Option<HistoryFile>,
}

/// The content of a `history_request`.
#[derive(Deserialize)]
#[serde(default)]
pub(super) struct HistoryRequest {
    output: bool,
    hist_access_type: String,
    /// None: all (search), 10 (tail).
    n: Option<u64>,
    /// range: 0 is this kernel start, negative counts back from it, positive is absolute.
    session: i64,
    start: u64,
    stop: Option<u64>,
    pattern: String,
    unique: bool,
}

impl Default for HistoryRequest {
    fn default() -> Self {
        HistoryRequest {
            output: false,
            hist_access_type: "tail".into(),
            n: None,
            session: 0,
            start: 1,
            stop: None,
            pattern: "*".into(),
            unique: false,
        }
    }
}

impl History {
    /// The history kept in `path` (None: in memory only). A file that cannot be used is logged once
    /// and the history goes on in memory.
    pub(super) fn open(path: Option<PathBuf>) -> History {
        let mut history = History { session: 1, window: VecDeque::new(), window_bytes: 0, file: None };
        let Some(path) = path else { return history };
        let file = HistoryFile::open(&path).and_then(|file| {
            let summary = history_file::scan_last(&path, START_READS_BYTES, |entry| history.remember(entry))?;
            if summary.skipped > 0 {
                log::warn!(
                    "history: {} unreadable line(s) in {} skipped (a crash cut one short, or the file was damaged)",
                    summary.skipped,
                    path.display()
                );
            }
            history.session = summary.last_session + 1;
            Ok(file)
        });
        match file {
            Ok(file) => history.file = Some(file),
            Err(e) => {
                log::warn!("history: {e}; this kernel keeps only its last {WINDOW_CELLS} cells in memory")
            }
        }
        history
    }

    /// Stores a cell as it starts: on disk at once, so even a cell that never ends is in history.
    pub(super) fn push(&mut self, line: u64, input: &str) {
        let entry = Entry { session: self.session, line, input: input.to_string(), output: None };
        if let Some(file) = &mut self.file {
            if let Err(e) = file.append(&entry) {
                log::warn!(
                    "history: {e}; from now on only the last {WINDOW_CELLS} cells are kept, in memory"
                );
                self.file = None;
            }
        }
        self.remember(entry);
    }

    /// The result of the cell pushed last, of which a short preview is kept.
    pub(super) fn set_last_output(&mut self, output: Option<String>) {
        if let Some(entry) = self.window.back_mut() {
            entry.output = output.map(|text| match text.char_indices().nth(OUTPUT_PREVIEW_CHARS) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            });
            self.window_bytes += entry.output.as_ref().map_or(0, String::len);
        }
        self.trim_window();
    }

    fn remember(&mut self, entry: Entry) {
        self.window_bytes += entry.input.len();
        self.window.push_back(entry);
        self.trim_window();
    }

    fn trim_window(&mut self) {
        while self.window.len() > WINDOW_CELLS || (self.window_bytes > WINDOW_BYTES && self.window.len() > 1)
        {
            if let Some(old) = self.window.pop_front() {
                self.window_bytes -= old.input.len() + old.output.as_ref().map_or(0, String::len);
            }
        }
    }

    /// tail, range and search, over every kernel start this history has seen.
    pub(super) fn query(&self, req: &HistoryRequest) -> Vec<Value> {
        let selected = match req.hist_access_type.as_str() {
            "range" => self.range(req),
            "search" => self.search(req),
            _ => self.tail(req.n.unwrap_or(10)),
        };
        let row = |e: &Entry| {
            if req.output {
                let output = self.output_of(e);
                json!([e.session, e.line, [e.input, output]])
            } else {
                json!([e.session, e.line, e.input])
            }
        };
        selected.iter().map(row).collect()
    }

    fn tail(&self, n: u64) -> Vec<Entry> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n <= self.window.len() || self.file.is_none() {
            return self.window.iter().skip(self.window.len().saturating_sub(n)).cloned().collect();
        }
        let mut last = VecDeque::new();
        self.each_stored(|e| {
            if last.len() == n {
                last.pop_front();
            }
            last.push_back(e);
        });
        last.into()
    }

    fn range(&self, req: &HistoryRequest) -> Vec<Entry> {
        let session = match req.session {
            s if s > 0 => s as u64,
            s => self.session.saturating_sub(s.unsigned_abs()),
        };
        let stop = req.stop.unwrap_or(u64::MAX);
        let wanted = |e: &Entry| e.session == session && e.line >= req.start && e.line < stop;
        // The window holds the whole range if it reaches back before the range's first line.
        let covered = self.window.front().is_some_and(|f| (f.session, f.line) <= (session, req.start));
        if covered || self.file.is_none() {
            return self.window.iter().filter(|e| wanted(e)).cloned().collect();
        }
        let mut rows = Vec::new();
        self.each_stored(|e| {
            if wanted(&e) {
                rows.push(e);
            }
        });
        rows
    }

    fn search(&self, req: &HistoryRequest) -> Vec<Entry> {
        let mut hits = Vec::new();
        let mut look = |e: Entry| {
            if glob_match(&req.pattern, &e.input) {
                hits.push(e);
            }
        };
        if self.file.is_some() {
            self.each_stored(look);
        } else {
            self.window.iter().cloned().for_each(&mut look);
        }
        // The latest n, each input once if unique (its latest time), in the order they ran.
        let mut seen = std::collections::HashSet::new();
        let mut latest: Vec<Entry> = hits
            .into_iter()
            .rev()
            .filter(|e| !req.unique || seen.insert(e.input.clone()))
            .take(req.n.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)))
            .collect();
        latest.reverse();
        latest
    }

    /// Every entry in the file, oldest first (the window is its tail). A file that has become
    /// unreadable yields the window instead.
    fn each_stored(&self, mut each: impl FnMut(Entry)) {
        let Some(file) = &self.file else { return };
        let mut seen = 0usize;
        if let Err(e) = history_file::scan(file.path(), |entry| {
            seen += 1;
            each(entry)
        }) {
            log::warn!("history: {e}; answering from the last {} cells in memory", self.window.len());
            if seen == 0 {
                self.window.iter().cloned().for_each(each);
            }
        }
    }

    /// The preview of an entry's result, if it is still in the window.
    fn output_of(&self, e: &Entry) -> Option<String> {
        let key = (e.session, e.line);
        let at = self.window.binary_search_by(|w| (w.session, w.line).cmp(&key)).ok()?;
        self.window[at].output.clone()
    }
}

/// Shell-style glob: `*` any run, `?` one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content: Value) -> HistoryRequest {
        serde_json::from_value(content).unwrap()
    }

    fn sample() -> History {
        let mut h = History::open(None);
        for (line, code) in [(1, "x = 1"), (2, "print(x)"), (3, "x = 1"), (4, "1 + 2")] {
            h.push(line, code);
            h.set_last_output(Some(format!("out{line}")));
        }
        h
    }

    #[test]
    fn glob_matches_like_the_history_search_expects() {
        assert!(glob_match("1?2*", "1+2"));
        assert!(glob_match("1?2*", "1+2 -- more"));
        assert!(!glob_match("1?2*", "12"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*print*", "x = 1 print(x)"));
        assert!(!glob_match("a", "b"));
    }

    #[test]
    fn tail_returns_the_last_n_cells_and_outputs_on_request() {
        let h = sample();
        let rows = h.query(&request(json!({"hist_access_type": "tail", "n": 2})));
        assert_eq!(rows, vec![json!([1, 3, "x = 1"]), json!([1, 4, "1 + 2"])]);
        let rows = h.query(&request(json!({"n": 1, "output": true})));
        assert_eq!(rows, vec![json!([1, 4, ["1 + 2", "out4"]])]);
    }

    #[test]
    fn range_is_half_open_and_search_can_be_unique() {
        let h = sample();
        let rows = h.query(&request(json!({"hist_access_type": "range", "start": 2, "stop": 4})));
        assert_eq!(rows, vec![json!([1, 2, "print(x)"]), json!([1, 3, "x = 1"])]);
        let rows = h.query(&request(json!({"hist_access_type": "search", "pattern": "x*"})));
        assert_eq!(rows.len(), 2);
        let rows = h.query(&request(json!({"hist_access_type": "search", "pattern": "x*", "unique": true})));
        assert_eq!(rows, vec![json!([1, 3, "x = 1"])]);
    }

    fn temp_path() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("llmspell-history-{}", crate::wire::random_hex(8)));
        history_file::path_for(&dir, "kernel-test")
    }

    fn inputs(rows: &[Value]) -> Vec<String> {
        rows.iter().map(|r| r[2].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn a_restart_finds_the_history_again_under_a_new_session_number() {
        let path = temp_path();
        let mut first = History::open(Some(path.clone()));
        first.push(1, "a = 1");
        first.push(2, "a + 1");
        drop(first);
        let mut second = History::open(Some(path.clone()));
        second.push(1, "b = 2");
        let rows = second.query(&request(json!({"n": 3})));
        assert_eq!(rows, vec![json!([1, 1, "a = 1"]), json!([1, 2, "a + 1"]), json!([2, 1, "b = 2"])]);
        let rows = second.query(&request(json!({"hist_access_type": "range", "session": -1, "start": 2})));
        assert_eq!(rows, vec![json!([1, 2, "a + 1"])]);
        let rows = second.query(&request(json!({"hist_access_type": "range", "session": 0})));
        assert_eq!(rows, vec![json!([2, 1, "b = 2"])]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn memory_holds_a_bounded_window_and_the_file_answers_the_rest() {
        let path = temp_path();
        let mut h = History::open(Some(path.clone()));
        let cells = 3 * WINDOW_CELLS as u64;
        for line in 1..=cells {
            h.push(line, &format!("x = {line}"));
            h.set_last_output(Some("y".repeat(10_000)));
        }
        assert!(h.window.len() <= WINDOW_CELLS && h.window_bytes <= WINDOW_BYTES, "{}", h.window.len());
        let all = h.query(&request(json!({"n": cells + 10})));
        assert_eq!(all.len() as u64, cells);
        assert_eq!(inputs(&all[..2]), ["x = 1", "x = 2"]);
        let early = h.query(&request(json!({"hist_access_type": "range", "start": 5, "stop": 7})));
        assert_eq!(inputs(&early), ["x = 5", "x = 6"]);
        let found =
            h.query(&request(json!({"hist_access_type": "search", "pattern": "x = 1?", "unique": true})));
        assert_eq!(found.len(), 10);
        let last = h.query(&request(json!({"n": 1, "output": true})));
        let preview = last[0][2][1].as_str().unwrap();
        assert!(preview.chars().count() == OUTPUT_PREVIEW_CHARS + 1 && preview.ends_with('…'), "{preview}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_file_that_cannot_be_written_leaves_the_window() {
        let blocker =
            std::env::temp_dir().join(format!("llmspell-history-file-{}", crate::wire::random_hex(8)));
        std::fs::write(&blocker, "a file where the home directory should be").unwrap();
        let mut h = History::open(Some(history_file::path_for(&blocker, "k")));
        assert!(h.file.is_none());
        h.push(1, "still kept");
        assert_eq!(inputs(&h.query(&request(json!({"n": 5})))), ["still kept"]);
        let _ = std::fs::remove_file(blocker);
    }
}
