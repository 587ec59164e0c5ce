//! A plugin's manifest: `NAME.toml` beside `NAME.wasm`.
//!
//! The manifest is optional. Without one a plugin gets its file stem as its name, no
//! parameter defaults, the operator's default limits and no capability. With one, every key
//! is checked: an unknown key, a wrong type or a future format version refuses the plugin with
//! the file, the key and what was expected.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::error::LoadError;

/// The manifest format this host reads.
pub const MANIFEST_VERSION: u32 = 1;

/// `NAME.toml`, as written by the plugin's author.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// `version`: the manifest format, `1`. Required.
    pub version: u32,
    /// `name`: the plugin's name; must equal the file stem. Required.
    pub name: String,
    /// `plugin-version`: the plugin's own version, shown by `sluice plugin list`. Required.
    pub plugin_version: String,
    /// `description`: one line for people. Default: empty.
    #[serde(default)]
    pub description: String,
    /// `sha256`: the expected digest of the `.wasm`; a mismatch refuses the plugin.
    /// Default: not checked.
    #[serde(default)]
    pub sha256: Option<String>,
    /// `[params]`: parameter defaults, overridden by the pipeline file. Default: none.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// `[limits]`: what one call may use. Default: the operator's defaults.
    #[serde(default)]
    pub limits: ManifestLimits,
    /// `[capabilities]`: what the plugin needs from outside. Default: nothing.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// `[limits]` in a manifest. Each is capped by the operator's maxima.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestLimits {
    /// `memory`: linear memory cap per instance, e.g. `"64MiB"`.
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub memory: Option<u64>,
    /// `time`: wall time per call, e.g. `"500ms"`.
    #[serde(default, with = "humantime_serde")]
    pub time: Option<Duration>,
    /// `fuel`: instructions per call; needs `fuel = true` in the operator's runtime settings.
    #[serde(default)]
    pub fuel: Option<u64>,
}

/// `[capabilities]` in a manifest: what the plugin asks for. Nothing is granted unless the
/// operator's configuration grants it too.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Capabilities {
    /// `dirs`: guest paths of directories the plugin needs, e.g. `["/out"]`.
    #[serde(default)]
    pub dirs: Vec<String>,
}

impl Manifest {
    /// A manifest for a plugin that has none.
    pub fn implicit(name: &str) -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            name: name.to_owned(),
            plugin_version: "0.0.0".to_owned(),
            ..Manifest::default()
        }
    }

    /// Reads and checks `path`, the manifest of the plugin whose file stem is `stem`.
    pub fn load(path: &Path, stem: &str) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Manifest {
            path: path.to_owned(),
            message: format!("cannot be read: {e}"),
        })?;
        Self::parse(&text, path, stem)
    }

    /// Parses manifest text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, stem: &str) -> Result<Self, LoadError> {
        let bad = |message: String| LoadError::Manifest {
            path: path.to_owned(),
            message,
        };
        let manifest: Manifest = toml::from_str(text).map_err(|e| bad(toml_message(&e, text)))?;
        if manifest.version != MANIFEST_VERSION {
            return Err(bad(format!(
                "key `version`: this host reads manifest version {MANIFEST_VERSION}, the file says {}",
                manifest.version
            )));
        }
        if manifest.name != stem {
            return Err(bad(format!(
                "key `name`: is {:?} but the file is named {stem:?}; they must match",
                manifest.name
            )));
        }
        if let Some(sha) = &manifest.sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad(
                "key `sha256`: expected 64 hexadecimal digits".to_owned()
            ));
        }
        for dir in &manifest.capabilities.dirs {
            if !dir.starts_with('/') {
                return Err(bad(format!(
                    "key `capabilities.dirs`: {dir:?} must be an absolute guest path such as \"/out\""
                )));
            }
        }
        Ok(manifest)
    }
}

/// A TOML error as one line: the key path, the line and column, and what was expected.
pub fn toml_message(e: &toml::de::Error, text: &str) -> String {
    let mut msg = e.message().trim().to_owned();
    if let Some(span) = e.span() {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        let key = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().to_owned())
            .filter(|k| !k.is_empty() && !k.starts_with('[') && !msg.contains(&format!("`{k}`")));
        msg = match key {
            Some(k) => format!("line {line}: key `{k}`: {msg}"),
            None => format!("line {line}: {msg}"),
        };
    }
    msg
}

/// Parses a byte size such as `64MiB`, `1GiB`, `512KiB`, `1000000` or `10MB`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as \"64MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?}; use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Serde helper: an optional byte size written as a string (`"64MiB"`) or a number of bytes.
pub fn de_opt_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::N(n)) => Ok(Some(n)),
        Some(Size::S(s)) => parse_bytes(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Serde helper: a byte size written as a string (`"64MiB"`) or a number of bytes.
pub fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    de_opt_bytes(d)?.ok_or_else(|| serde::de::Error::custom("expected a size such as \"64MiB\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(
            parse_bytes("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_bytes("MiB").is_err());
    }

    #[test]
    fn a_manifest_with_an_unknown_key_is_refused_naming_the_key_and_line() {
        let text = "version = 1\nname = \"grep\"\nplugin-version = \"1\"\ncolour = \"red\"\n";
        let err = Manifest::parse(text, Path::new("grep.toml"), "grep").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("grep.toml"), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn a_manifest_whose_name_differs_from_its_file_is_refused() {
        let text = "version = 1\nname = \"grap\"\nplugin-version = \"1\"\n";
        let msg = Manifest::parse(text, Path::new("grep.toml"), "grep")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`name`") && msg.contains("grap"), "{msg}");
    }

    #[test]
    fn a_full_manifest_reads_every_field() {
        let text = r#"
version = 1
name = "jsonl-sink"
plugin-version = "0.1.0"
description = "d"
[params]
pretty = "false"
[limits]
memory = "64MiB"
time = "500ms"
fuel = 1000
[capabilities]
dirs = ["/out"]
"#;
        let m = Manifest::parse(text, Path::new("x.toml"), "jsonl-sink").unwrap();
        assert_eq!(m.limits.memory, Some(64 << 20));
        assert_eq!(m.limits.time, Some(Duration::from_millis(500)));
        assert_eq!(m.limits.fuel, Some(1000));
        assert_eq!(m.capabilities.dirs, vec!["/out".to_owned()]);
        assert_eq!(m.params["pretty"], "false");
    }
}
