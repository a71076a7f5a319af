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

/// A use of one top-level module by another: `crate::<to>` at `file:line` in `from`.
struct Use {
    from: String,
    to: String,
    at: String,
}

/// Every use of a top-level module of `host/src` by another.
fn module_uses() -> (Vec<String>, Vec<Use>) {
    let files = rust_files(&host_src());
    let mut modules: Vec<String> = files.iter().filter_map(|f| module_of(f)).collect();
    modules.dedup();
    let mut uses = Vec::new();
    for file in &files {
        let Some(from) = module_of(file) else { continue };
        for to in modules.iter().filter(|m| **m != from) {
            for at in occurrences(std::slice::from_ref(file), &format!("crate::{to}")) {
                uses.push(Use {
                    from: from.clone(),
                    to: to.clone(),
                    at,
                });
            }
        }
    }
    (modules, uses)
}

/// The rules file: its layers (bottom first) and its `may not use` rules, each with its line.
struct Rules {
    path: PathBuf,
    layers: Vec<(usize, Vec<String>)>,
    forbidden: Vec<(usize, String, Vec<String>)>,
}

fn rules(modules: &[String]) -> Rules {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tidy-rules.txt");
    let text = fs::read_to_string(&path).expect("host/tidy-rules.txt");
    let mut rules = Rules {
        path: path.clone(),
        layers: Vec::new(),
        forbidden: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        let n = i + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let names: Vec<String> = if let Some(rest) = line.strip_prefix("layer ") {
            let names: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            rules.layers.push((n, names.clone()));
            names
        } else if let Some((module, forbidden)) = line.split_once(" may not use ") {
            let forbidden: Vec<String> = forbidden.split_whitespace().map(str::to_string).collect();
            rules.forbidden.push((n, module.to_string(), forbidden.clone()));
            std::iter::once(module.to_string()).chain(forbidden).collect()
        } else {
            panic!(
                "{}:{n}: expected `layer <module> ...` or `<module> may not use <module> ...`",
                path.display()
            )
        };
        for name in names {
            assert!(
                modules.contains(&name),
                "{}:{n}: {name:?} is not a top-level module of host/src",
                path.display()
            );
        }
    }
    rules
}

/// The layers of `host/tidy-rules.txt` hold every module once, and each module uses only
/// modules on layers below its own: the top-level modules form a DAG.
#[test]
fn module_graph_follows_the_layers() {
    let (modules, uses) = module_uses();
    let rules = rules(&modules);
    print_graph(&rules, &uses);
    let layer_of = |m: &str| rules.layers.iter().position(|(_, l)| l.iter().any(|x| x == m));
    for m in &modules {
        let on: Vec<usize> = rules
            .layers
            .iter()
            .filter(|(_, l)| l.contains(m))
            .map(|(n, _)| *n)
            .collect();
        assert!(
            on.len() == 1,
            "{}: module {m:?} must be on exactly one `layer` line (it is on lines {on:?})",
            rules.path.display()
        );
    }
    let broken: Vec<String> = uses
        .iter()
        .filter(|u| layer_of(&u.to) >= layer_of(&u.from))
        .map(|u| {
            let line = |m: &str| rules.layers[layer_of(m).expect("checked above")].0;
            format!(
                "{}\n    {} (layer at {}:{}) may use only modules on lower layers; {} is at line {}",
                u.at,
                u.from,
                rules.path.display(),
                line(&u.from),
                u.to,
                line(&u.to)
            )
        })
        .collect();
    assert!(broken.is_empty(), "module layers broken:\n{}", broken.join("\n"));
}

/// The module graph, top layer first (`--nocapture` shows it).
fn print_graph(rules: &Rules, uses: &[Use]) {
    for (_, layer) in rules.layers.iter().rev() {
        for m in layer {
            let mut to: Vec<&str> = uses
                .iter()
                .filter(|u| &u.from == m)
                .map(|u| u.to.as_str())
                .collect();
            to.sort();
            to.dedup();
            println!("{m:>12} -> {}", to.join(" "));
        }
    }
}

/// The `may not use` rules of `host/tidy-rules.txt`.
#[test]
fn module_rules_hold() {
    let (modules, uses) = module_uses();
    let rules = rules(&modules);
    let mut broken = Vec::new();
    for (n, module, forbidden) in &rules.forbidden {
        for u in uses
            .iter()
            .filter(|u| &u.from == module && forbidden.contains(&u.to))
        {
            broken.push(format!(
                "{}\n    breaks `{module} may not use {}` ({}:{n})",
                u.at,
                forbidden.join(" "),
                rules.path.display()
            ));
        }
    }
    assert!(broken.is_empty(), "module rules broken:\n{}", broken.join("\n"));
}
