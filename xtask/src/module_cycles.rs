//! No two modules of a crate import each other: a type two modules share lives in the
//! lower one (docs/design.md, "Module map"). Read from the sources as text: `use` trees and
//! paths through `crate::` and `super::`, test modules left out; a module and the modules
//! inside it may use each other (a parent declares its children).

use std::{collections::BTreeSet, fs, path::Path};

type Module = Vec<String>;

/// Pairs of modules of the crate whose sources are in `src` that import each other.
pub fn mutual_imports(src: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    collect(src, src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|(module, _)| module.clone()).collect();
    let mut edges = BTreeSet::new();
    for (module, text) in &files {
        for path in paths(&without_tests(text)) {
            let Some(target) = resolve(module, &path, &modules) else { continue };
            if !nested(module, &target) {
                edges.insert((module.clone(), target));
            }
        }
    }
    edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| (a.join("::"), b.join("::")))
        .collect()
}

/// Every source file below `dir` with its module (lib.rs and main.rs are both the root).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(Module, String)>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "rs")
            && let (Ok(rel), Ok(text)) = (path.strip_prefix(root), fs::read_to_string(&path))
        {
            let mut module: Module =
                rel.with_extension("").iter().map(|part| part.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|last| ["mod", "lib", "main"].contains(&last.as_str())) {
                module.pop();
            }
            files.push((module, text));
        }
    }
}

/// The code before the file's `#[cfg(test)] mod tests`, without line comments.
fn without_tests(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let next = lines.peek().map(|l| l.trim()).unwrap_or_default();
        if line.trim() == "#[cfg(test)]" && next.contains("mod tests") {
            break;
        }
        if !line.trim_start().starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    code
}

/// Every path that starts at `crate` or `super`, `use` trees expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("use ") {
        if code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // "because ", not a `use` statement
        }
        let start = at + 4;
        let Some(end) = code[start..].find(';') else { break };
        let tree: String = code[start..start + end].split_whitespace().collect();
        if tree.starts_with("crate::") || tree.starts_with("super::") {
            expand(Vec::new(), &tree, &mut out);
        }
    }
    // Paths written in place (`crate::cli::DEFAULT_LISTEN`).
    for (i, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '{') {
            continue; // part of a `use` tree, handled above
        }
        let path: String =
            code[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        out.push(path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect());
    }
    out
}

/// `a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e.
fn expand(prefix: Vec<String>, tree: &str, out: &mut Vec<Vec<String>>) {
    let Some(open) = tree.find('{') else {
        let mut path = prefix;
        path.extend(tree.split("::").filter(|s| !s.is_empty() && *s != "self").map(str::to_owned));
        out.push(path);
        return;
    };
    let mut head = prefix;
    head.extend(tree[..open].split("::").filter(|s| !s.is_empty()).map(str::to_owned));
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(head.clone(), &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(head, &inner[start..], out);
    }
}

/// The module `path`, written in `module`, points into (the longest known prefix).
fn resolve(module: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let mut absolute: Module = Vec::new();
    let mut parts = path.iter().peekable();
    if parts.peek().is_some_and(|p| *p == "crate") {
        parts.next();
    } else {
        absolute = module.clone();
        while parts.peek().is_some_and(|p| *p == "super") {
            parts.next();
            absolute.pop()?;
        }
    }
    absolute.extend(parts.cloned());
    (1..=absolute.len()).rev().map(|n| absolute[..n].to_vec()).find(|prefix| modules.contains(prefix))
}

/// One module inside the other (or the same).
fn nested(a: &Module, b: &Module) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::workspace_root;

    #[test]
    fn no_two_modules_import_each_other() {
        for krate in ["tracer", "tracer-ebpf", "tracer-common", "workloads", "xtask", "tests", "vm-init"] {
            let src = workspace_root().join(krate).join("src");
            assert!(src.is_dir(), "{}", src.display());
            assert_eq!(mutual_imports(&src), [], "{krate}: move what both use into the lower module");
        }
    }

    #[test]
    fn a_cycle_through_use_trees_super_and_paths_is_found() {
        let dir = std::env::temp_dir().join(format!("xtask-module-cycles-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("kernel")).unwrap();
        fs::write(dir.join("lib.rs"), "mod cli;\nmod daemon;\nmod kernel;\n").unwrap();
        fs::write(dir.join("cli.rs"), "pub struct Args(crate::daemon::listen::Addr);\n").unwrap();
        fs::write(dir.join("daemon.rs"), "use crate::{\n    cli::Args,\n    kernel,\n};\n").unwrap();
        fs::write(dir.join("kernel/mod.rs"), "pub mod loader;\npub mod drops;\n").unwrap();
        fs::write(dir.join("kernel/loader.rs"), "use super::drops::Maps;\nuse super::super::cli;\n").unwrap();
        fs::write(
            dir.join("kernel/drops.rs"),
            "use super::loader::take;\n#[cfg(test)]\nmod tests {\n    use crate::daemon;\n}\n",
        )
        .unwrap();
        let found = mutual_imports(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            [
                ("cli".to_owned(), "daemon".to_owned()),
                ("kernel::drops".to_owned(), "kernel::loader".to_owned())
            ]
        );
    }
}
