//! The plugin search path: the directories a pipeline finds its plugins in, first match wins.
//!
//! It comes from `--plugins DIR` (repeatable; given, it replaces the file's), else the
//! pipeline file's `plugins` (one directory, or a list such as
//! `["./my-plugins", "$SLUICE_PLUGINS"]`; relative entries are taken from the file's
//! directory), else `$SLUICE_PLUGINS`. `$VAR` and `${VAR}` in an entry are expanded; an entry
//! naming a variable that is not set is left out (and said so in messages).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file's `plugins` key: one directory, or a search path.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PluginsSetting {
    /// `plugins = "DIR"`.
    One(String),
    /// `plugins = ["DIR", "$VAR", …]`, searched in order.
    Many(Vec<String>),
}

impl PluginsSetting {
    /// The entries as written.
    pub fn entries(&self) -> Vec<&str> {
        match self {
            PluginsSetting::One(s) => vec![s.as_str()],
            PluginsSetting::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The resolved search path. Made once per pipeline (and per `plugin list`); every look-up of
/// a plugin's file goes through [`PluginPath::find`], so the rule lives in one place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginPath {
    /// The directories, in search order (variables expanded, relative ones made absolute
    /// against the pipeline file's directory or, from the command line, as given).
    pub dirs: Vec<PathBuf>,
    /// Entries left out because they name a variable that is not set (as written).
    pub unset: Vec<String>,
}

impl PluginPath {
    /// The search path of a pipeline: `cli` (the `--plugins` given) when not empty, else the
    /// file's `plugins` relative to `base` (the file's directory), else `$SLUICE_PLUGINS`.
    pub fn resolve(cli: &[PathBuf], file: Option<&PluginsSetting>, base: &Path) -> PluginPath {
        Self::resolve_with(cli, file, base, &|name| std::env::var(name).ok())
    }

    /// [`PluginPath::resolve`] with the environment's variables read through `env`.
    pub fn resolve_with(
        cli: &[PathBuf],
        file: Option<&PluginsSetting>,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> PluginPath {
        let mut path = PluginPath::default();
        if !cli.is_empty() {
            for dir in cli {
                path.push(&dir.to_string_lossy(), None, env);
            }
        } else if let Some(setting) = file {
            for entry in setting.entries() {
                path.push(entry, Some(base), env);
            }
        } else if let Some(dir) = env("SLUICE_PLUGINS") {
            path.dirs.push(PathBuf::from(dir));
        }
        path
    }

    /// The search path of the directories `entries`, as `plugin list` is given them.
    pub fn of_entries<S: AsRef<str>>(entries: &[S]) -> PluginPath {
        let mut path = PluginPath::default();
        for e in entries {
            path.push(e.as_ref(), None, &|name| std::env::var(name).ok());
        }
        path
    }

    fn push(&mut self, entry: &str, base: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) {
        match expand(entry, env) {
            Ok(s) if s.is_empty() => self.unset.push(entry.to_owned()),
            Ok(s) => {
                let p = PathBuf::from(s);
                self.dirs.push(match base {
                    Some(base) if p.is_relative() => base.join(p),
                    _ => p,
                });
            }
            Err(_) => self.unset.push(entry.to_owned()),
        }
    }

    /// Whether the path has no directory at all.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The file `NAME.wasm` in the first directory that has it.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(format!("{name}.wasm")))
            .find(|p| p.is_file())
    }

    /// The directory where a new version of plugin `name` is looked for (the hot-swap
    /// watcher's): the one it was found in, else the first.
    pub fn dir_of(&self, name: &str) -> Option<PathBuf> {
        match self.find(name) {
            Some(file) => file.parent().map(Path::to_owned),
            None => self.dirs.first().cloned(),
        }
    }

    /// Every `.wasm` of every directory, in search order (each directory's files by name), with
    /// whether it is the one that wins for its name (`false`: shadowed by an earlier one).
    pub fn files(&self) -> Vec<(PathBuf, bool)> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for dir in &self.dirs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            for f in files {
                let stem = f.file_stem().map(|s| s.to_owned()).unwrap_or_default();
                let wins = seen.insert(stem);
                out.push((f, wins));
            }
        }
        out
    }

    /// The names of the plugins the path has (the winners), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .files()
            .into_iter()
            .filter(|(_, wins)| *wins)
            .filter_map(|(f, _)| Some(f.file_stem()?.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    }

    /// The path for messages: `a, b (left out, not set: $X)`.
    pub fn describe(&self) -> String {
        let mut s = self
            .dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if !self.unset.is_empty() {
            s.push_str(&format!(
                " (left out, variable not set: {})",
                self.unset.join(", ")
            ));
        }
        s
    }
}

/// `entry` with `$VAR` and `${VAR}` replaced by the variables' values (read through `env`);
/// `Err` names a variable that is not set.
pub fn expand(entry: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = entry;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => return Err(format!("{entry:?}: `${{` without `}}`")),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
        } else {
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(name.to_owned()),
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_expanded_and_unset_ones_left_out() {
        let env = |name: &str| (name == "SLUICE_SEARCH_TEST_DIR").then(|| "/opt/p".to_owned());
        assert_eq!(
            expand("$SLUICE_SEARCH_TEST_DIR/x", &env).unwrap(),
            "/opt/p/x"
        );
        assert_eq!(
            expand("${SLUICE_SEARCH_TEST_DIR}y", &env).unwrap(),
            "/opt/py"
        );
        assert_eq!(expand("a$", &env).unwrap(), "a$");
        let setting = PluginsSetting::Many(vec![
            "./mine".into(),
            "$SLUICE_SEARCH_TEST_UNSET".into(),
            "$SLUICE_SEARCH_TEST_DIR".into(),
        ]);
        let path = PluginPath::resolve_with(&[], Some(&setting), Path::new("/base"), &env);
        assert_eq!(
            path.dirs,
            [PathBuf::from("/base/./mine"), PathBuf::from("/opt/p")]
        );
        assert_eq!(path.unset, ["$SLUICE_SEARCH_TEST_UNSET"]);
    }

    #[test]
    fn the_command_line_replaces_the_files_path() {
        let setting = PluginsSetting::One("./mine".into());
        let path = PluginPath::resolve(
            &[PathBuf::from("a"), PathBuf::from("b")],
            Some(&setting),
            Path::new("/base"),
        );
        assert_eq!(path.dirs, [PathBuf::from("a"), PathBuf::from("b")]);
    }
}
