//! Path globs: which files an input follows, and which directories to walk to find them.
//!
//! `*` stays within one directory and `**` crosses directories (globset with
//! `literal_separator`). Each glob's fixed leading directories are its root; the walk goes
//! only as deep as the glob can match. Exclusions without a `/` match the file name.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Max directory depth walked under `**`.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone)]
pub struct Globs {
    include: GlobSet,
    exclude_path: GlobSet,
    exclude_name: GlobSet,
    roots: Vec<(PathBuf, usize)>,
}

fn is_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | '{')
}

fn build(p: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(p)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("invalid glob `{p}`: {e}"))
}

impl Globs {
    /// Errors carry the key (`paths[1]`, `exclude[0]`) and the message.
    pub fn new(paths: &[String], exclude: &[String]) -> Result<Globs, (String, String)> {
        let mut inc = GlobSetBuilder::new();
        let mut roots = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            if !p.starts_with('/') {
                return Err((
                    format!("paths[{i}]"),
                    format!("`{p}` is not an absolute path"),
                ));
            }
            inc.add(build(p).map_err(|e| (format!("paths[{i}]"), e))?);
            let mut root = PathBuf::from("/");
            let mut rest = 0;
            let mut in_fixed = true;
            let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
            let mut recursive = false;
            for (j, c) in comps.iter().enumerate() {
                if in_fixed && !c.contains(is_meta) && j + 1 < comps.len() {
                    root.push(c);
                } else {
                    in_fixed = false;
                    rest += 1;
                    if c.contains("**") {
                        recursive = true;
                    }
                }
            }
            roots.push((root, if recursive { MAX_DEPTH } else { rest.max(1) }));
        }
        let mut exp = GlobSetBuilder::new();
        let mut exn = GlobSetBuilder::new();
        for (i, p) in exclude.iter().enumerate() {
            let g = build(p).map_err(|e| (format!("exclude[{i}]"), e))?;
            if p.contains('/') {
                exp.add(g);
            } else {
                exn.add(g);
            }
        }
        // Merge roots: a root inside another with enough depth is redundant; keep it simple.
        roots.sort();
        roots.dedup_by(|a, b| {
            a.0 == b.0 && {
                b.1 = b.1.max(a.1);
                true
            }
        });
        Ok(Globs {
            include: inc
                .build()
                .map_err(|e| ("paths".to_owned(), e.to_string()))?,
            exclude_path: exp
                .build()
                .map_err(|e| ("exclude".to_owned(), e.to_string()))?,
            exclude_name: exn
                .build()
                .map_err(|e| ("exclude".to_owned(), e.to_string()))?,
            roots,
        })
    }

    pub fn matches(&self, p: &Path) -> bool {
        if !self.include.is_match(p) || self.exclude_path.is_match(p) {
            return false;
        }
        !p.file_name()
            .is_some_and(|n| self.exclude_name.is_match(Path::new(n)))
    }

    /// Directories to walk, with the depth the globs reach under each.
    pub fn roots(&self) -> Vec<(PathBuf, usize)> {
        self.roots.clone()
    }

    /// Every existing path that matches (files and symlinks; the caller stats them).
    pub fn walk(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (root, depth) in &self.roots {
            self.walk_dir(root, *depth, &mut out);
        }
        if self.roots.len() > 1 {
            out.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
            out.dedup();
        }
        out
    }

    fn walk_dir(&self, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            let is_dir = ft.is_dir() || (ft.is_symlink() && path.is_dir());
            if is_dir {
                if depth > 1 {
                    self.walk_dir(&path, depth - 1, out);
                }
            } else if self.matches(&path) {
                out.push(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_and_walking() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        for f in ["x.log", "y.log.gz", "a/z.log", "a/b/w.log", "skip.log"] {
            std::fs::write(root.join(f), "1").unwrap();
        }
        let g = Globs::new(&[format!("{}/*.log", root.display())], &["skip.*".into()]).unwrap();
        let names: Vec<String> = g
            .walk()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["x.log"]);
        let g = Globs::new(&[format!("{}/**/*.log", root.display())], &[]).unwrap();
        let mut names: Vec<String> = g
            .walk()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec!["a/b/w.log", "a/z.log", "skip.log", "x.log"]);
        assert!(Globs::new(&["rel/*.log".into()], &[]).is_err());
    }
}
