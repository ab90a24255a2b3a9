//! The cells this kernel has run, for `history_request`: kept as long as the kernel process lives.

use serde::Deserialize;
use serde_json::{json, Value};

/// Every cell stored in history: its execution count, code, and result as text.
#[derive(Default)]
pub(super) struct History {
    entries: Vec<Entry>,
}

struct Entry {
    line: u64,
    input: String,
    output: Option<String>,
}

/// The content of a `history_request`.
#[derive(Deserialize)]
#[serde(default)]
pub(super) struct HistoryRequest {
    output: bool,
    hist_access_type: String,
    /// None: all (search), 10 (tail).
    n: Option<u64>,
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
            start: 1,
            stop: None,
            pattern: "*".into(),
            unique: false,
        }
    }
}

impl History {
    pub(super) fn push(&mut self, line: u64, input: &str) {
        self.entries.push(Entry { line, input: input.to_string(), output: None });
    }

    /// The result of the cell pushed last.
    pub(super) fn set_last_output(&mut self, output: Option<String>) {
        if let Some(entry) = self.entries.last_mut() {
            entry.output = output;
        }
    }

    /// tail, range and search over this kernel's cells (session number 0 = the current one).
    pub(super) fn query(&self, req: &HistoryRequest) -> Vec<Value> {
        let selected: Vec<&Entry> = match req.hist_access_type.as_str() {
            "range" => {
                let stop = req.stop.unwrap_or(u64::MAX);
                self.entries.iter().filter(|e| e.line >= req.start && e.line < stop).collect()
            }
            "search" => {
                let mut seen = std::collections::HashSet::new();
                let mut hits: Vec<&Entry> = self
                    .entries
                    .iter()
                    .rev()
                    .filter(|e| glob_match(&req.pattern, &e.input))
                    .filter(|e| !req.unique || seen.insert(e.input.as_str()))
                    .take(req.n.map_or(usize::MAX, |n| n as usize))
                    .collect();
                hits.reverse();
                hits
            }
            _ => {
                let n = req.n.unwrap_or(10) as usize;
                self.entries[self.entries.len().saturating_sub(n)..].iter().collect()
            }
        };
        let row = |e: &&Entry| {
            if req.output {
                json!([0, e.line, [e.input, e.output]])
            } else {
                json!([0, e.line, e.input])
            }
        };
        selected.iter().map(row).collect()
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
        let mut h = History::default();
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
        assert_eq!(rows, vec![json!([0, 3, "x = 1"]), json!([0, 4, "1 + 2"])]);
        let rows = h.query(&request(json!({"n": 1, "output": true})));
        assert_eq!(rows, vec![json!([0, 4, ["1 + 2", "out4"]])]);
    }

    #[test]
    fn range_is_half_open_and_search_can_be_unique() {
        let h = sample();
        let rows = h.query(&request(json!({"hist_access_type": "range", "start": 2, "stop": 4})));
        assert_eq!(rows, vec![json!([0, 2, "print(x)"]), json!([0, 3, "x = 1"])]);
        let rows = h.query(&request(json!({"hist_access_type": "search", "pattern": "x*"})));
        assert_eq!(rows.len(), 2);
        let rows = h.query(&request(json!({"hist_access_type": "search", "pattern": "x*", "unique": true})));
        assert_eq!(rows, vec![json!([0, 3, "x = 1"])]);
    }
}
