//! Reading callgrind's output files: instructions (Ir) per dump, self Ir per function, and
//! the wasmtime epoch ticker thread (the one thread that sleeps in `clock_nanosleep`). The
//! measurement that writes the files is in `under_callgrind.rs`; this is pure text in,
//! numbers out.

use std::collections::HashMap;

/// Total Ir of a file: the sum of its `summary:` lines.
pub fn summary_ir(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("summary: "))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Resolves callgrind's compressed names: `fn=(id) name` defines an id (shared by `fn=`
/// and `cfn=`), a later `fn=(id)` refers to it.
#[derive(Default)]
struct Names {
    by_id: HashMap<String, String>,
}

impl Names {
    /// For a `fn=` or `cfn=` line: which of the two, and the function's name.
    fn parse<'a>(&mut self, line: &'a str) -> Option<(&'a str, String)> {
        let (key, v) = line.split_once('=')?;
        if key != "fn" && key != "cfn" {
            return None;
        }
        let name = match v.strip_prefix('(').and_then(|r| r.split_once(')')) {
            Some((id, rest)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                if !rest.is_empty() {
                    self.by_id.insert(id.to_owned(), rest.to_owned());
                }
                self.by_id.get(id).cloned().unwrap_or_default()
            }
            _ => v.to_owned(),
        };
        Some((key, name))
    }
}

/// Self Ir per function in one file, added to `costs`. The cost line right after a
/// `calls=` line is the call's inclusive cost, not the caller's own, and is skipped.
pub fn add_fn_costs(text: &str, costs: &mut HashMap<String, i64>) {
    let mut names = Names::default();
    let mut current = String::new();
    let mut after_call = false;
    for line in text.lines() {
        if let Some((key, name)) = names.parse(line) {
            if key == "fn" {
                current = name;
            }
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+*-".contains(c)) {
            if std::mem::take(&mut after_call) {
                continue;
            }
            if let Some(ir) = line.split_whitespace().nth(1).and_then(|v| v.parse::<i64>().ok()) {
                *costs.entry(current.clone()).or_default() += ir;
            }
        }
    }
}

/// Calls to `clock_nanosleep` (from outside it) in one file: the epoch ticker's ticks.
pub fn sleeps(text: &str) -> u64 {
    let mut names = Names::default();
    let (mut current, mut callee) = (String::new(), String::new());
    let mut n = 0;
    for line in text.lines() {
        if let Some((key, name)) = names.parse(line) {
            if key == "fn" {
                current = name;
            } else {
                callee = name;
            }
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if callee.contains("nanosleep") && !current.contains("nanosleep") {
                n += rest
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    n
}

/// Whether a thread's file names `nanosleep` in a `fn=`/`cfn=` line (the ticker thread).
pub fn names_nanosleep(text: &str) -> bool {
    text.lines()
        .any(|l| (l.starts_with("fn=") || l.starts_with("cfn=")) && l.contains("nanosleep"))
}

/// The functions with the most extra self Ir per transaction: `plus` minus `minus` (each a
/// sum over files), divided by `tx`, highest first, the top `n`. Addresses without a symbol
/// are code wasmtime compiled at run time and are counted as one.
pub fn top_extra(
    plus: &HashMap<String, i64>,
    minus: &HashMap<String, i64>,
    tx: u64,
    n: usize,
) -> Vec<(f64, String)> {
    let mut diff: HashMap<String, i64> = HashMap::new();
    for (sign, costs) in [(1, plus), (-1, minus)] {
        for (f, ir) in costs {
            let is_addr = f
                .strip_prefix("0x")
                .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
            let f = if is_addr {
                "(no symbol: JIT code)".to_owned()
            } else {
                f.clone()
            };
            *diff.entry(f).or_default() += sign * ir;
        }
    }
    let mut rows: Vec<(f64, String)> = diff.into_iter().map(|(f, d)| (d as f64 / tx as f64, f)).collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    rows.truncate(n);
    rows
}

/// A function name as a markdown table cell: `|` escaped, at most 120 characters.
pub fn table_name(f: &str) -> String {
    let f = f.replace('|', "\\|");
    if f.chars().count() > 120 {
        format!("{}...", f.chars().take(117).collect::<String>())
    } else {
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
version: 1
creator: callgrind-3.19.0
events: Ir
fl=(1) /src/main.rs
fn=(1) main
16 100
cfn=(2) work
calls=3 20
16 900
fn=(2)
20 300
+1 50
cfn=(3) clock_nanosleep
calls=7 0
* 70
fn=(3)
0 7
fn=(4) 0x000000000401a2b0
0 40
summary: 1497
totals: 1497
";

    /// Self cost: main's own 100 (not the 900 of its call), work's 350 (not the 70 of its
    /// sleeps), the sleep's 7, the JIT address's 40; names defined once are resolved later.
    #[test]
    fn self_cost_per_function() {
        let mut costs = HashMap::new();
        add_fn_costs(FILE, &mut costs);
        assert_eq!(costs.get("main"), Some(&100));
        assert_eq!(costs.get("work"), Some(&350));
        assert_eq!(costs.get("clock_nanosleep"), Some(&7));
        assert_eq!(costs.get("0x000000000401a2b0"), Some(&40));
        assert_eq!(costs.len(), 4);
    }

    /// The summary line is the file's total; several summaries (threads) add up.
    #[test]
    fn summary_is_the_total() {
        assert_eq!(summary_ir(FILE), 1497);
        assert_eq!(summary_ir("summary: 5\nsummary: 7\n"), 12);
        assert_eq!(summary_ir("events: Ir\n"), 0);
    }

    /// Ticks are the calls into clock_nanosleep from outside it; the ticker is the thread
    /// whose file names it.
    #[test]
    fn ticker_thread_and_its_ticks() {
        assert_eq!(sleeps(FILE), 7);
        assert!(names_nanosleep(FILE));
        assert!(!names_nanosleep("fn=(1) main\n16 5\n"));
        assert_eq!(
            sleeps("fn=(1) nanosleep_loop\ncfn=(2) clock_nanosleep\ncalls=4 0\n0 1\n"),
            0
        );
    }

    /// plugin minus built-in, per transaction, highest first, JIT addresses counted as one.
    #[test]
    fn extra_cost_per_transaction() {
        let plus = HashMap::from([
            ("a".to_owned(), 3_000),
            ("0x1f".to_owned(), 1_000),
            ("0xabc".to_owned(), 1_000),
            ("b".to_owned(), 500),
        ]);
        let minus = HashMap::from([("a".to_owned(), 1_000), ("c".to_owned(), 100)]);
        let rows = top_extra(&plus, &minus, 100, 3);
        assert_eq!(
            rows,
            vec![
                (20.0, "(no symbol: JIT code)".to_owned()),
                (20.0, "a".to_owned()),
                (5.0, "b".to_owned())
            ]
        );
    }

    /// Pipes would end the markdown cell; long names are cut to 120 characters.
    #[test]
    fn names_fit_a_table_cell() {
        assert_eq!(table_name("<F as FnOnce>|x"), "<F as FnOnce>\\|x");
        let long = "é".repeat(130);
        let cut = table_name(&long);
        assert_eq!(cut.chars().count(), 120);
        assert!(cut.ends_with("..."));
    }
}
