//! The layer map of docs/design.md, checked: every module of the library sits in one layer, and
//! a module names (`use crate::x`, `crate::x::y`) only modules of layers below its own. A new
//! module fails this test until it is placed; an import upwards or sideways fails it with the
//! file and the edge.
//!
//! Unit-test modules (`#[cfg(test)] mod ...`) are left out: a test may build its fixtures with
//! a higher layer without the code depending on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Layers from the bottom up; modules on one line are peers and may not use each other.
const LAYERS: &[&[&str]] = &[
    &["format", "bitmap", "mountinfo", "holders"],
    &["cli", "progress"],
    &["device"],
    &["error", "image", "kmount"],
    &["rundir", "mem", "cache"],
    &["log"],
    &["resv"],
    &["sbselect"],
    &["engine"],
    &["trans"],
    &["btree"],
    &["alloc"],
    &["inode"],
    &["dir", "file", "xattr", "symlink"],
    &["fs", "verify", "budget"],
    &["check", "ops"],
    &["repair", "proto"],
    &["db", "devfuse", "ring"],
    &["stats"],
    &["mkfs"],
    &["daemon"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file belongs to: the first component under src/.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The text without comments and without `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        // A `//` outside a string literal starts a comment (an even count of quotes before it).
        let mut cut = line.len();
        let mut quotes = 0;
        let b = line.as_bytes();
        for i in 0..b.len() {
            match b[i] {
                b'"' if i == 0 || b[i - 1] != b'\\' => quotes += 1,
                b'/' if quotes % 2 == 0 && b.get(i + 1) == Some(&b'/') => {
                    cut = i;
                    break;
                }
                _ => {}
            }
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    // Drop each `#[cfg(test)]` item that is a module, by matching its braces.
    const ATTR: &str = "#[cfg(test)]";
    let mut code = out;
    let mut from = 0;
    while let Some(found) = code[from..].find(ATTR) {
        let at = from + found;
        let rest = &code[at..];
        let item_end = rest.find(['{', ';']).unwrap_or(rest.len());
        if !rest[..item_end].contains("mod ") || !rest[item_end..].starts_with('{') {
            from = at + ATTR.len(); // On something other than a module: it stays.
            continue;
        }
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest.char_indices().skip(item_end) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        code = format!("{}{}", &code[..at], &rest[end..]);
        from = at;
    }
    code
}

/// The modules of the crate a text names: `crate::x` paths, `use crate::{x, y::z}` groups, and
/// `super::` chains that climb to the crate root from a file `depth` modules down (`src/a.rs`
/// and `src/a/mod.rs` are 1, `src/a/b.rs` 2). A glob of the root (`crate::*`) is named "*",
/// which no layer holds.
fn named(code: &str, depth: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let to_root = "super::".repeat(depth);
    let mut rest = code;
    while let Some(at) = rest.find(&to_root) {
        let after = &rest[at + to_root.len()..];
        // Not a longer chain (which the compiler refuses past the root anyway).
        if !after.starts_with("super::") {
            if after.starts_with('*') || after.starts_with("{*") {
                out.insert("*".to_string());
            }
            out.insert(first_ident(after.trim_start_matches('{')));
        }
        rest = after;
    }
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if after.starts_with('*') {
            out.insert("*".to_string());
        }
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if item.trim() == "*" {
                            out.insert("*".to_string());
                        }
                        out.insert(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(first_ident(&item));
        } else {
            out.insert(first_ident(after));
        }
        rest = after;
    }
    out.remove("");
    out
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn no_module_uses_a_higher_or_peer_layer() {
    let rank: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(r, ms)| ms.iter().map(move |m| (*m, r)))
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut unplaced = BTreeSet::new();
    let mut edges = 0;
    for f in &files {
        let rel = f.strip_prefix(src()).unwrap();
        let m = module_of(rel);
        if m == "lib" || m == "main" {
            continue; // The crate's face and the mount binary sit above every layer.
        }
        let Some(&r) = rank.get(m.as_str()) else {
            unplaced.insert(m);
            continue;
        };
        // src/a.rs and src/a/mod.rs are one module down from the root, src/a/b.rs two.
        let depth = rel.components().count() - usize::from(rel.ends_with("mod.rs"));
        for used in named(&code_of(&fs::read_to_string(f).unwrap()), depth) {
            if used == m {
                continue;
            }
            let Some(&u) = rank.get(used.as_str()) else {
                unplaced.insert(used);
                continue;
            };
            edges += 1;
            if u >= r {
                wrong.push(format!(
                    "src/{}: {m} (layer {r}) uses {used} (layer {u}{})",
                    rel.display(),
                    if u == r { ", a peer" } else { "" }
                ));
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules missing from the layer map (tests/layers.rs, docs/design.md), or names the \
         crate root re-exports (inside the crate, name them by their module): {unplaced:?}"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layer map:\n{}",
        wrong.join("\n")
    );
    // The scan found the crate's edges at all (a parser that sees nothing passes nothing).
    assert!(edges > 100, "only {edges} edges found: the scan is broken");
}

#[test]
fn the_scan_sees_groups_paths_and_skips_comments_and_tests() {
    let text = "use crate::{alloc::A, btree::{B, C}, format};\n\
                // crate::ring in a comment\n\
                fn f() { crate::log::x(); let s = \"a // b\"; crate::mem::y(); }\n\
                #[cfg(test)]\nmod tests { use crate::stats; }\n";
    let got: Vec<String> = named(&code_of(text), 1).into_iter().collect();
    assert_eq!(got, ["alloc", "btree", "format", "log", "mem"]);
    // From a file two modules down, `super::super::x` is the crate's x and `super::y` its own
    // module's; from one down, `super::y` is the crate's. A glob of the root is caught.
    let text = "use super::super::daemon::Options;\nuse super::sibling;\n";
    let got: Vec<String> = named(&code_of(text), 2).into_iter().collect();
    assert_eq!(got, ["daemon"]);
    let got: Vec<String> = named(&code_of("use super::stats;\n"), 1)
        .into_iter()
        .collect();
    assert_eq!(got, ["stats"]);
    let got: Vec<String> = named(&code_of("use crate::*;\n"), 1).into_iter().collect();
    assert_eq!(got, ["*"]);
}
