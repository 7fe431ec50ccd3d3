//! The read-only files a deploy brings, gathered into one tar: a directory (`wafer deploy --files DIR`)
//! or a Spin component's `files` and `exclude_files`. The server checks the tar and unpacks it; the
//! function's instances see it as `/` (`wafer_store::files` says what a bundle may hold).
//!
//! Links are followed here, so the bundle holds what they point at: the server takes regular files
//! and directories only. Headers are deterministic (no times or owners), so the same files make the
//! same bundle, stored once.

use anyhow::{bail, Context};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// A bundle being gathered.
pub struct Bundle {
    tar: tar::Builder<Vec<u8>>,
    /// The directory patterns and exclusions are relative to.
    root: PathBuf,
    exclude: Vec<glob::Pattern>,
    /// Guest paths added so far: the first source of a path wins.
    added: BTreeSet<PathBuf>,
}

impl Bundle {
    /// An empty bundle whose patterns and `exclude` patterns are relative to `root`.
    pub fn new(root: &Path, exclude: &[String]) -> anyhow::Result<Self> {
        let exclude = exclude
            .iter()
            .map(|p| glob::Pattern::new(p).with_context(|| format!("exclude_files pattern {p:?}")))
            .collect::<anyhow::Result<_>>()?;
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Self {
            tar,
            root: root.to_path_buf(),
            exclude,
            added: BTreeSet::new(),
        })
    }

    /// Every file `pattern` (relative to the root) matches, at its path relative to the root.
    /// Returns how many it added.
    pub fn add_pattern(&mut self, pattern: &str) -> anyhow::Result<usize> {
        let root = glob::Pattern::escape(&self.root.to_string_lossy());
        let matches = glob::glob(&format!("{root}/{pattern}"))
            .with_context(|| format!("files pattern {pattern:?}"))?;
        let mut added = 0;
        for path in matches {
            let path = path.with_context(|| format!("files pattern {pattern:?}"))?;
            if !path.is_file() {
                continue;
            }
            let Some(guest) = self.relative(&path) else {
                bail!(
                    "files pattern {pattern:?} matches {}, outside the application's directory: \
                     mount it with {{ source = \"DIR\", destination = \"/PATH\" }}",
                    path.display()
                );
            };
            added += usize::from(self.add_file(&path, guest)?);
        }
        Ok(added)
    }

    /// Everything under directory `dir`, at guest path `guest` (relative; empty for `/`). Returns how
    /// many files it added.
    pub fn add_dir(&mut self, dir: &Path, guest: &Path) -> anyhow::Result<usize> {
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let mut visited = BTreeSet::new();
        self.walk(dir, guest, &mut visited)
    }

    fn walk(
        &mut self,
        dir: &Path,
        guest: &Path,
        visited: &mut BTreeSet<PathBuf>,
    ) -> anyhow::Result<usize> {
        // A link back up the tree would never end.
        let canonical = fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
        if !visited.insert(canonical) {
            return Ok(0);
        }
        let mut entries = fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("cannot read {}", dir.display()))?;
        entries.sort();
        let mut added = 0;
        for path in entries {
            let Some(name) = path.file_name() else {
                continue;
            };
            let inside = guest.join(name);
            if path.is_dir() {
                added += self.walk(&path, &inside, visited)?;
            } else if path.is_file() {
                added += usize::from(self.add_file(&path, inside)?);
            }
        }
        Ok(added)
    }

    /// `path` relative to the root, when it is below it.
    fn relative(&self, path: &Path) -> Option<PathBuf> {
        let relative = path.strip_prefix(&self.root).ok()?;
        let plain = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        plain.then(|| relative.to_path_buf())
    }

    /// Adds file `host` as `guest`, unless an exclusion matches it or `guest` is there already.
    fn add_file(&mut self, host: &Path, guest: PathBuf) -> anyhow::Result<bool> {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        if let Some(relative) = self.relative(host) {
            if self
                .exclude
                .iter()
                .any(|p| p.matches_path_with(&relative, options))
            {
                return Ok(false);
            }
        }
        if !self.added.insert(guest.clone()) {
            return Ok(false);
        }
        self.tar
            .append_path_with_name(host, &guest)
            .with_context(|| format!("cannot add {} to the files", host.display()))?;
        Ok(true)
    }

    /// The tar, or `None` when nothing was added.
    pub fn finish(self) -> anyhow::Result<Option<Vec<u8>>> {
        if self.added.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.tar.into_inner()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in [
            ("static/index.html", "<h1>hi</h1>"),
            ("static/css/site.css", "h1 {}"),
            ("static/secret.txt", "no"),
            ("assets/logo.txt", "logo"),
            ("spin.toml", ""),
        ] {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    /// The paths and contents of a tar.
    fn contents(tar: &[u8]) -> Vec<(String, String)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut text = String::new();
                std::io::Read::read_to_string(&mut e, &mut text).unwrap();
                (path, text)
            })
            .collect()
    }

    #[test]
    fn patterns_and_directories_are_gathered_less_the_exclusions() {
        let dir = tree();
        let mut bundle = Bundle::new(dir.path(), &["static/secret.txt".into()]).unwrap();
        assert_eq!(bundle.add_pattern("static/**/*").unwrap(), 2);
        assert_eq!(
            bundle
                .add_dir(&dir.path().join("assets"), Path::new("srv/assets"))
                .unwrap(),
            1
        );
        // Another source for a path already added does not replace it.
        assert_eq!(bundle.add_pattern("static/index.html").unwrap(), 0);
        let tar = bundle.finish().unwrap().unwrap();
        let mut files = contents(&tar);
        files.sort();
        assert_eq!(
            files,
            [
                ("srv/assets/logo.txt".into(), "logo".into()),
                ("static/css/site.css".into(), "h1 {}".into()),
                ("static/index.html".into(), "<h1>hi</h1>".into()),
            ]
        );
        wafer_store::files::check(&tar).unwrap();
    }

    #[test]
    fn the_same_files_make_the_same_bundle_and_none_make_none() {
        let dir = tree();
        let bundle = |root: &Path| {
            let mut b = Bundle::new(root, &[]).unwrap();
            b.add_dir(root, Path::new("")).unwrap();
            b.finish().unwrap().unwrap()
        };
        let first = bundle(dir.path());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fs::write(dir.path().join("static/index.html"), "<h1>hi</h1>").unwrap();
        assert_eq!(first, bundle(dir.path()), "times do not change the bundle");
        let mut empty = Bundle::new(dir.path(), &[]).unwrap();
        assert_eq!(empty.add_pattern("nothing/*").unwrap(), 0);
        assert!(empty.finish().unwrap().is_none());
    }

    #[test]
    fn a_pattern_reaching_outside_the_root_is_refused() {
        let dir = tree();
        let mut bundle = Bundle::new(&dir.path().join("static"), &[]).unwrap();
        let error = bundle.add_pattern("../assets/*").unwrap_err();
        assert!(format!("{error:#}").contains("outside"), "{error:#}");
        assert!(bundle
            .add_dir(&dir.path().join("nope"), Path::new(""))
            .is_err());
    }
}
