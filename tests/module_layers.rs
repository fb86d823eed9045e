//! The layering of `src/` stays as `docs/architecture.md` draws it: no import circle between files or
//! between top-level folders, and `src/reconciler/` (the machinery every kind shares) imports no kind.
//!
//! A small reader of `use` lines and inline `crate::`/`super::` paths, not a Rust parser: it skips
//! comments, test modules and `#[cfg(test)]` items, and follows a `pub use` re-export in a `mod.rs` to the
//! file that defines the item, so a child importing its parent's re-export is not a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The folders of `src/` that hold one kind each.
const KINDS: [&str; 2] = ["pipeline_gate", "service_trace"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, as its module path (`["reconciler", "io"]`).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 file name")
            .to_string();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut p = prefix.to_vec();
            if stem != "mod" {
                p.push(stem.to_string());
            }
            out.insert(p, path);
        }
    }
}

/// The code of a file without comments, string literals' contents, test modules and `#[cfg(test)]`
/// items: what the non-test build compiles.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the next item: up to its closing brace, or to its `;` when it has no body.
            let mut depth = 0i32;
            let mut opened = false;
            for next in lines.by_ref() {
                for c in next.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if (opened && depth <= 0) || (!opened && next.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// `use` statements (each starts a line), expanded: `use a::{b, c::{d, self}};` gives `a::b`,
/// `a::c::d`, `a::c`.
fn use_paths(code: &str) -> Vec<String> {
    use_statements(code, false)
}

/// As [`use_paths`], for `pub use` re-exports only.
fn pub_use_paths(code: &str) -> Vec<String> {
    use_statements(code, true)
}

fn use_statements(code: &str, only_pub: bool) -> Vec<String> {
    let mut paths = Vec::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if only_pub && !t.starts_with("pub use ") {
            continue;
        }
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub(super) "))
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        let Some(first) = t.strip_prefix("use ") else {
            continue;
        };
        let mut statement = first.to_string();
        while !statement.contains(';') {
            match lines.next() {
                Some(more) => {
                    statement.push(' ');
                    statement.push_str(more);
                }
                None => break,
            }
        }
        let statement = statement.split(';').next().unwrap_or_default();
        // `a as b` loses its alias; every other space goes.
        let tree = statement.replace(" as ", "@");
        expand(&tree.split_whitespace().collect::<String>(), "", &mut paths);
    }
    paths
}

/// `word` at a word boundary (not the `use` inside `reuse`).
fn find_keyword(haystack: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = haystack[from..].find(word) {
        let at = from + i;
        let before = haystack[..at].chars().next_back();
        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let join = |p: &str, s: &str| {
        if p.is_empty() {
            s.to_string()
        } else if s == "self" {
            p.to_string()
        } else {
            format!("{p}::{s}")
        }
    };
    match tree.find('{') {
        None => {
            let path = tree.split('@').next().unwrap_or(tree);
            if !path.is_empty() {
                out.push(join(prefix, path.trim_end_matches("::")));
            }
        }
        Some(open) => {
            let head = tree[..open].trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let base = join(prefix, head);
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&inner[start..i], &base, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&inner[start..], &base, out);
        }
    }
}

/// `crate::a::b` and `super::a` paths written inline in code (outside `use`).
fn inline_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for root in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = find_keyword(rest, root) {
            let path: String = rest[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':');
            // `use super::{a, b}` leaves a bare root here; `use_paths` has those.
            if path.contains("::") {
                paths.push(path.to_string());
            }
            rest = &rest[i + root.len()..];
        }
    }
    paths
}

struct Crate {
    files: BTreeMap<Vec<String>, PathBuf>,
    code: BTreeMap<Vec<String>, String>,
}

impl Crate {
    fn load() -> Self {
        let mut files = BTreeMap::new();
        modules(&src(), &[], &mut files);
        // The binary and the test modules are no layer of the library.
        files.retain(|m, _| !(m == &["main"] || m.last().is_some_and(|s| s == "tests")));
        let code = files
            .iter()
            .map(|(m, p)| {
                let text = std::fs::read_to_string(p).expect("source is readable");
                (m.clone(), production_code(&text))
            })
            .collect();
        Self { files, code }
    }

    /// The file `path` (absolute segments) names: the deepest module it enters, or, for an item a
    /// `mod.rs` re-exports with `pub use child::…`, the child that defines it.
    fn resolve(&self, path: &[String], hops: usize) -> Option<Vec<String>> {
        let mut module: Vec<String> = Vec::new();
        for (i, seg) in path.iter().enumerate() {
            let mut deeper = module.clone();
            deeper.push(seg.clone());
            if self.files.contains_key(&deeper) {
                module = deeper;
                continue;
            }
            // `seg` is an item of `module`: follow a re-export of it.
            if hops < 8 {
                if let Some(code) = self.code.get(&module) {
                    for re in pub_use_paths(code) {
                        let segs: Vec<String> = re.split("::").map(str::to_string).collect();
                        let re_path = if segs.first().is_some_and(|s| s == "crate") {
                            segs[1..].to_vec()
                        } else {
                            let mut p = module.clone();
                            p.extend(segs.iter().filter(|s| *s != "self").cloned());
                            p
                        };
                        let named = re_path.last() == Some(seg) || re.ends_with("*");
                        if named && re_path.len() > module.len() + 1 {
                            let target = if re.ends_with('*') {
                                let mut t = re_path[..re_path.len() - 1].to_vec();
                                t.extend(path[i..].iter().cloned());
                                t
                            } else {
                                re_path
                            };
                            if let Some(found) = self.resolve(&target, hops + 1) {
                                if found != module && self.defines(&found, seg) {
                                    return Some(found);
                                }
                            }
                        }
                    }
                }
            }
            return Some(module);
        }
        Some(module)
    }

    /// Whether `module` defines `item` itself (not merely uses it).
    fn defines(&self, module: &[String], item: &str) -> bool {
        let Some(code) = self.code.get(module) else {
            return false;
        };
        [
            "struct", "enum", "fn", "const", "static", "type", "trait", "mod",
        ]
        .iter()
        .any(|k| {
            code.contains(&format!("{k} {item} "))
                || code.contains(&format!("{k} {item}("))
                || code.contains(&format!("{k} {item}<"))
                || code.contains(&format!("{k} {item}:"))
                || code.contains(&format!("{k} {item};"))
                || code.contains(&format!("{k} {item}{{"))
        })
    }

    /// Edges file → file (by module path), without self-edges.
    fn edges(&self) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (module, code) in &self.code {
            // lib.rs only declares the top-level modules.
            if module.is_empty() {
                continue;
            }
            let is_mod_rs = self.files[module].ends_with("mod.rs");
            let parent = if is_mod_rs {
                &module[..module.len() - 1]
            } else {
                &module[..module.len().saturating_sub(1)]
            };
            let mut paths = use_paths(code);
            paths.extend(inline_paths(code));
            for p in paths {
                let segs: Vec<String> = p.split("::").map(str::to_string).collect();
                let absolute = match segs.first().map(String::as_str) {
                    Some("crate") => segs[1..].to_vec(),
                    Some("super") => {
                        let mut base = if is_mod_rs {
                            parent.to_vec()
                        } else {
                            module[..module.len() - 1].to_vec()
                        };
                        let mut rest = &segs[1..];
                        while rest.first().is_some_and(|s| s == "super") {
                            base.pop();
                            rest = &rest[1..];
                        }
                        base.extend(rest.iter().cloned());
                        base
                    }
                    Some("self") => {
                        let mut base = module.clone();
                        base.extend(segs[1..].iter().cloned());
                        base
                    }
                    // `mod.rs` re-exporting a child: `pub use child::Item`.
                    Some(first)
                        if is_mod_rs
                            && self.files.contains_key(
                                &[module.clone(), vec![first.to_string()]].concat(),
                            ) =>
                    {
                        let mut base = module.clone();
                        base.extend(segs.iter().cloned());
                        base
                    }
                    _ => continue,
                };
                if let Some(target) = self.resolve(&absolute, 0) {
                    if &target != module && !target.is_empty() {
                        edges.entry(module.clone()).or_default().insert(target);
                    }
                }
            }
        }
        edges
    }
}

/// A circle in `graph`, if any, as the nodes along it.
fn find_cycle<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<N: Ord + Clone>(
        n: &N,
        graph: &BTreeMap<N, BTreeSet<N>>,
        marks: &mut BTreeMap<N, Mark>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.clone(), Mark::Open);
        stack.push(n.clone());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn show(m: &[String]) -> String {
    format!("src/{}", m.join("/"))
}

#[test]
fn no_import_circle_between_files() {
    let edges = Crate::load().edges();
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 50,
        "the reader found too few imports to be trusted: {edges:?}"
    );
    if let Some(cycle) = find_cycle(&edges) {
        let cycle: Vec<String> = cycle.iter().map(|m| show(m)).collect();
        panic!("import circle between files: {}", cycle.join(" → "));
    }
}

#[test]
fn no_import_circle_between_folders() {
    let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in Crate::load().edges() {
        for to in targets {
            if from[0] != to[0] {
                folders
                    .entry(from[0].clone())
                    .or_default()
                    .insert(to[0].clone());
            }
        }
    }
    assert!(folders.contains_key("reconciler"), "{folders:?}");
    if let Some(cycle) = find_cycle(&folders) {
        panic!("import circle between folders: {}", cycle.join(" → "));
    }
}

#[test]
fn the_shared_reconciler_imports_no_kind() {
    let edges = Crate::load().edges();
    let mut offenders = Vec::new();
    for (from, targets) in &edges {
        if from[0] != "reconciler" {
            continue;
        }
        for to in targets {
            if KINDS.contains(&to[0].as_str()) {
                offenders.push(format!("{} → {}", show(from), show(to)));
            }
        }
    }
    assert!(
        edges.keys().any(|m| m[0] == "reconciler"),
        "no reconciler files found"
    );
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// The reader itself: a kind importing the reconciler is seen, and a re-export is followed.
#[test]
fn the_reader_sees_imports_and_follows_re_exports() {
    let edges = Crate::load().edges();
    let reconcile = edges
        .get(&vec!["pipeline_gate".to_string(), "reconcile".to_string()])
        .expect("pipeline_gate/reconcile.rs imports something");
    // `use crate::reconciler::{Error, ..}` goes through reconciler/mod.rs to error.rs.
    assert!(
        reconcile.contains(&vec!["reconciler".to_string(), "error".to_string()]),
        "{reconcile:?}"
    );
    let mut paths = Vec::new();
    expand("crate::a::{b,c::{d,self}}", "", &mut paths);
    assert_eq!(paths, ["crate::a::b", "crate::a::c::d", "crate::a::c"]);
    let code =
        production_code("use a::b;\n// use x::y;\n#[cfg(test)]\nmod tests {\n use c::d;\n}\n");
    assert_eq!(use_paths(&code), ["a::b"]);
}
