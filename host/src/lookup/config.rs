//! `builtin = "lookup"`: the keys of a `[[transform]]` table that configure a lookup join, read
//! from [`StepConfig`] and checked into a [`LookupConfig`].

use std::time::Duration;

use crate::config::StepConfig;

/// `reload-interval`'s default: how often the table is looked at for a change.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The smallest `reload-interval` taken.
pub const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(10);

/// How the table file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// `"csv"`: RFC 4180, a header line naming the columns; every value a JSON string.
    Csv,
    /// `"jsonl"`: one JSON object per line.
    Jsonl,
}

/// What happens to a record whose key has no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// `"inner"`: it is not output.
    Inner,
    /// `"left"`: it is output with `null` in place of the row.
    Left,
}

/// A lookup step, checked: the table, how to read it, and how records meet its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupConfig {
    /// `table`: the table file as written (a path relative to the pipeline file, or a
    /// `file://`, `az://`, `s3://` URL). Required.
    pub table: String,
    /// `format`: `"csv"` or `"jsonl"`. Default: from the table's extension (`.csv`; `.jsonl`,
    /// `.ndjson`, `.json`).
    pub format: TableFormat,
    /// `table-key`: the column (CSV) or field (JSON lines) that keys the table. Required.
    pub table_key: String,
    /// `join`: `"inner"` or `"left"`. Default `"inner"`.
    pub join: JoinKind,
    /// `reload-interval`: how often the table is looked at for a change. Default `"10s"`; at
    /// least `"10ms"`.
    pub reload_interval: Duration,
    /// `key-field`: the top-level field of the record's JSON value that holds its join key.
    /// Default: none, the record's key is the join key.
    pub key_field: Option<String>,
    /// `into`: the field the row is added under. Default: the table file's stem.
    pub into: String,
}

/// The lookup keys `step` sets, by name, so that another kind of step can refuse them.
pub fn lookup_keys_set(step: &StepConfig) -> Vec<&'static str> {
    [
        ("table", step.table.is_some()),
        ("format", step.format.is_some()),
        ("table-key", step.table_key.is_some()),
        ("join", step.join.is_some()),
        ("reload-interval", step.reload_interval.is_some()),
        ("key-field", step.key_field.is_some()),
        ("into", step.into.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect()
}

impl LookupConfig {
    /// The lookup `step` describes (`here` names it in messages), or which key is wrong.
    pub fn from_step(step: &StepConfig, here: &str) -> Result<LookupConfig, String> {
        if step.partitions.is_some() {
            return Err(format!(
                "{here}: key `partitions` is only for `builtin = \"repartition-by-key\"`"
            ));
        }
        let required = |key: &str, v: &Option<String>| match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Ok(s.to_owned()),
            Some(_) => Err(format!("{here}: key `{key}` is empty")),
            None => Err(format!(
                "{here}: key `{key}`: required for `builtin = \"lookup\"`"
            )),
        };
        let table = required("table", &step.table)?;
        let table_key = required("table-key", &step.table_key)?;
        let name = file_name(&table);
        let format = match step.format.as_deref() {
            Some("csv") => TableFormat::Csv,
            Some("jsonl") => TableFormat::Jsonl,
            Some(other) => {
                return Err(format!(
                    "{here}: key `format`: unknown table format {other:?}; expected \"csv\" or \"jsonl\""
                ));
            }
            None => match name
                .rsplit_once('.')
                .map(|(_, ext)| ext.to_ascii_lowercase())
            {
                Some(ext) if ext == "csv" => TableFormat::Csv,
                Some(ext) if ["jsonl", "ndjson", "json"].contains(&ext.as_str()) => {
                    TableFormat::Jsonl
                }
                _ => {
                    return Err(format!(
                        "{here}: key `format`: the table {table:?} has no .csv or .jsonl extension; say `format = \"csv\"` or `\"jsonl\"`"
                    ));
                }
            },
        };
        let join = match step.join.as_deref() {
            None | Some("inner") => JoinKind::Inner,
            Some("left") => JoinKind::Left,
            Some(other) => {
                return Err(format!(
                    "{here}: key `join`: unknown join {other:?}; expected \"inner\" or \"left\""
                ));
            }
        };
        let reload_interval = step.reload_interval.unwrap_or(DEFAULT_RELOAD_INTERVAL);
        if reload_interval < MIN_RELOAD_INTERVAL {
            return Err(format!(
                "{here}: key `reload-interval`: {} is below the minimum of 10ms",
                humantime::format_duration(reload_interval)
            ));
        }
        let key_field = match &step.key_field {
            Some(_) => Some(required("key-field", &step.key_field)?),
            None => None,
        };
        let into = match &step.into {
            Some(_) => required("into", &step.into)?,
            None => {
                let stem = name.split('.').next().unwrap_or_default();
                if stem.is_empty() {
                    return Err(format!(
                        "{here}: key `into`: the table {table:?} has no file stem to name the field by; give `into = \"NAME\"`"
                    ));
                }
                stem.to_owned()
            }
        };
        Ok(LookupConfig {
            table,
            format,
            table_key,
            join,
            reload_interval,
            key_field,
            into,
        })
    }
}

/// The last segment of a path or URL.
fn file_name(table: &str) -> &str {
    let path = table.split(['?', '#']).next().unwrap_or(table);
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{PipelineFile, Step};

    use super::*;

    fn steps(extra: &str) -> Result<Vec<Step>, String> {
        let text = format!(
            "version = 1\n[source]\nkind = \"generator\"\n[[sink]]\nkind = \"stdout\"\n[[transform]]\n{extra}\n"
        );
        PipelineFile::parse(&text, Path::new("p.toml"))
            .map(|f| f.steps())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_lookup_gets_its_documented_defaults() {
        let s = steps("builtin = \"lookup\"\ntable = \"ref/customers.csv\"\ntable-key = \"id\"")
            .unwrap();
        let Step::Lookup(c) = &s[0] else {
            panic!("{s:?}")
        };
        assert_eq!(c.format, TableFormat::Csv);
        assert_eq!(c.join, JoinKind::Inner);
        assert_eq!(c.reload_interval, Duration::from_secs(10));
        assert_eq!(c.key_field, None);
        assert_eq!(c.into, "customers");
        let s = steps(
            "builtin = \"lookup\"\ntable = \"az://c/ref/rates.jsonl\"\ntable-key = \"id\"\njoin = \"left\"\nkey-field = \"cur\"\ninto = \"rate\"\nreload-interval = \"1s\"",
        )
        .unwrap();
        let Step::Lookup(c) = &s[0] else {
            panic!("{s:?}")
        };
        assert_eq!(
            (c.format, c.join, c.key_field.as_deref(), c.into.as_str()),
            (TableFormat::Jsonl, JoinKind::Left, Some("cur"), "rate")
        );
    }

    #[test]
    fn a_lookup_refuses_bad_keys_by_name_and_other_steps_refuse_its_keys() {
        for (extra, expect) in [
            (
                "builtin = \"lookup\"\ntable-key = \"id\"",
                "`table`: required",
            ),
            (
                "builtin = \"lookup\"\ntable = \"t.csv\"",
                "`table-key`: required",
            ),
            (
                "builtin = \"lookup\"\ntable = \"t.txt\"\ntable-key = \"id\"",
                "`format`",
            ),
            (
                "builtin = \"lookup\"\ntable = \"t.csv\"\ntable-key = \"id\"\njoin = \"outer\"",
                "\"outer\"",
            ),
            (
                "builtin = \"lookup\"\ntable = \"t.csv\"\ntable-key = \"id\"\nreload-interval = \"1ms\"",
                "`reload-interval`",
            ),
            (
                "builtin = \"count-by-key\"\ntable = \"t.csv\"",
                "key `table` is only for `builtin = \"lookup\"`",
            ),
            (
                "plugin = \"grep\"\ninto = \"x\"",
                "key `into` is only for `builtin = \"lookup\"`",
            ),
        ] {
            let msg = steps(extra).unwrap_err();
            assert!(
                msg.contains(expect) && msg.contains("number 1"),
                "{extra}: {msg}"
            );
        }
    }
}
