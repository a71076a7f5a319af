//! House rules checked from the source, as `cargo test` runs them (the model:
//! rust-analyzer's `xtask/src/tidy.rs`). Each failure names the file and line that breaks a
//! rule and the rule itself, so a newcomer learns the layout from the error.
//!
//! The module rules live in `host/tidy-rules.txt`, one per line: `<module> may not use
//! <module> ...`, where a module is a top-level module of `host/src` (`session` covers
//! `session.rs` and `session/`). A use is any `crate::<module>` in the module's files.

use std::fs;
use std::path::{Path, PathBuf};

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file of `host/src` belongs to (`None` for `lib.rs`, `main.rs`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(host_src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Lines of `file` outside comments, with their 1-based numbers (line comments and doc
/// comments only: the code base has no block comments).
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let code = line.find("//").map_or(line, |at| &line[..at]);
            (i + 1, code.to_string())
        })
        .collect()
}

fn is_word_at(line: &str, at: usize, word: &str) -> bool {
    let before = line[..at].chars().next_back();
    let after = line[at + word.len()..].chars().next();
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    !ident(before) && !ident(after)
}

/// (file:line, text) of every line of `files` where `word` appears as a word.
fn occurrences(files: &[PathBuf], word: &str) -> Vec<String> {
    let mut out = Vec::new();
    for file in files {
        for (n, line) in code_lines(file) {
            if line
                .match_indices(word)
                .any(|(at, _)| is_word_at(&line, at, word))
            {
                out.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    out
}

fn fail_if_any(rule: &str, offenders: Vec<String>) {
    assert!(
        offenders.is_empty(),
        "rule broken: {rule}\n{}",
        offenders.join("\n")
    );
}

/// ARCHITECTURE.md invariant 2: only `host/src/plugins/` names wasmtime.
#[test]
fn only_plugins_names_wasmtime() {
    let outside: Vec<PathBuf> = rust_files(&host_src())
        .into_iter()
        .filter(|f| module_of(f).as_deref() != Some("plugins"))
        .collect();
    fail_if_any(
        "only host/src/plugins/ names wasmtime (ARCHITECTURE.md invariant 2)",
        occurrences(&outside, "wasmtime"),
    );
}

/// Unsafe code only in `host/src/plugins/` (the crate also denies it elsewhere).
#[test]
fn unsafe_code_only_in_plugins() {
    let outside: Vec<PathBuf> = rust_files(&host_src())
        .into_iter()
        .filter(|f| module_of(f).as_deref() != Some("plugins"))
        .collect();
    let offenders = occurrences(&outside, "unsafe")
        .into_iter()
        .filter(|l| !l.contains("unsafe_code"))
        .collect();
    fail_if_any("unsafe code only in host/src/plugins/", offenders);
}

/// ARCHITECTURE.md invariant 1: the codec depends on `bytes` and `thiserror` only.
#[test]
fn protocol_depends_on_bytes_and_thiserror_only() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/Cargo.toml");
    let text = fs::read_to_string(&manifest).expect("protocol/Cargo.toml");
    let mut section = String::new();
    let mut offenders = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            if !matches!(name, "bytes" | "thiserror") {
                offenders.push(format!("{}:{}: {line}", manifest.display(), i + 1));
            }
        }
    }
    fail_if_any(
        "protocol depends on bytes and thiserror only (ARCHITECTURE.md invariant 1)",
        offenders,
    );
}

/// The module rules of `host/tidy-rules.txt`.
#[test]
fn module_rules_hold() {
    let rules_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tidy-rules.txt");
    let rules = fs::read_to_string(&rules_path).expect("host/tidy-rules.txt");
    let files = rust_files(&host_src());
    let modules: Vec<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut broken = Vec::new();
    for (i, rule) in rules.lines().enumerate() {
        let rule = rule.trim();
        if rule.is_empty() || rule.starts_with('#') {
            continue;
        }
        let (module, forbidden) = rule.split_once(" may not use ").unwrap_or_else(|| {
            panic!(
                "{}:{}: expected `<module> may not use <module> ...`",
                rules_path.display(),
                i + 1
            )
        });
        for name in std::iter::once(module).chain(forbidden.split_whitespace()) {
            assert!(
                modules.iter().any(|m| m == name),
                "{}:{}: {name:?} is not a top-level module of host/src",
                rules_path.display(),
                i + 1
            );
        }
        let own: Vec<PathBuf> = files
            .iter()
            .filter(|f| module_of(f).as_deref() == Some(module))
            .cloned()
            .collect();
        for target in forbidden.split_whitespace() {
            for hit in occurrences(&own, &format!("crate::{target}")) {
                broken.push(format!(
                    "{hit}\n    breaks `{rule}` ({}:{})",
                    rules_path.display(),
                    i + 1
                ));
            }
        }
    }
    assert!(broken.is_empty(), "module rules broken:\n{}", broken.join("\n"));
}
