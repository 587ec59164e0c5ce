//! `[[sink]]` as written ([`RawSink`]): each kind's keys, checked, and the sink config they
//! build.

use super::source::only;
use super::*;

/// `[[sink]]`, as written: `kind` says which sink, and only that kind's keys may be set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSink {
    /// `kind`: `"stdout"`, `"files"`, `"count"`, `"plugin"` or `"amqp"`. Required.
    pub kind: String,
    /// stdout and files `format`: `"lines"` (values), `"kv"` (key TAB value) or `"jsonl"`.
    /// Default `"lines"`. See [`crate::sink::format`].
    #[serde(default)]
    pub format: Option<OutputFormat>,
    /// stdout and files `fields`, with `format = "jsonl"` only: which of `"key"`, `"value"`,
    /// `"timestamp"`, `"headers"` each line holds. Default `["key", "value", "timestamp"]`.
    #[serde(default)]
    pub fields: Option<Vec<Field>>,
    /// stdout `top`: only the N records with the largest numeric value per batch.
    #[serde(default)]
    pub top: Option<usize>,
    /// files `path`: directory or store prefix. Required for files.
    #[serde(default)]
    pub path: Option<String>,
    /// plugin `plugin`: the sink plugin. Required for plugin.
    #[serde(default)]
    pub plugin: Option<String>,
    /// plugin `params`.
    #[serde(default)]
    pub params: Option<BTreeMap<String, String>>,
    /// amqp `url`: `amqp://[user:password@]host[:port]` or `amqps://…`. Required for amqp.
    #[serde(default)]
    pub url: Option<Secret>,
    /// amqp `queues`: the target addresses, in routing order (a record goes to
    /// `queues[fnv1a64(key) % len]`).
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// amqp `address`: one address with `{partition}` in it, made for 0..`partitions`.
    #[serde(default)]
    pub address: Option<String>,
    /// amqp `partitions`: how many queues `address` makes.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// amqp `ca-file`: a PEM file of CA certificates trusted for `amqps://`.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// amqp `id-prefix`: the first part of each message id. Default: the stream's name.
    #[serde(default)]
    pub id_prefix: Option<String>,
    /// `latency-marker`, any kind: a record whose value starts with this prefix followed by
    /// decimal epoch microseconds is a latency marker; each batch reports, for its markers,
    /// the time from that stamp to the batch's commit. Default: none.
    #[serde(default)]
    pub latency_marker: Option<String>,
}

impl RawSink {
    /// The sink this table (the `n`th, from 1) describes, or which key is wrong.
    pub fn resolve(&self) -> Result<SinkConfig, String> {
        let set = [
            ("format", self.format.is_some()),
            ("fields", self.fields.is_some()),
            ("top", self.top.is_some()),
            ("path", self.path.is_some()),
            ("plugin", self.plugin.is_some()),
            ("params", self.params.is_some()),
            ("url", self.url.is_some()),
            ("queues", self.queues.is_some()),
            ("address", self.address.is_some()),
            ("partitions", self.partitions.is_some()),
            ("ca-file", self.ca_file.is_some()),
            ("id-prefix", self.id_prefix.is_some()),
        ];
        match self.kind.as_str() {
            "amqp" => {
                only(
                    "sink",
                    "amqp",
                    &set,
                    &[
                        "url",
                        "queues",
                        "address",
                        "partitions",
                        "ca-file",
                        "id-prefix",
                    ],
                )?;
                Ok(SinkConfig::Amqp(crate::sink::amqp::resolve(
                    self.url.as_ref(),
                    self.queues.as_ref(),
                    self.address.as_deref(),
                    self.partitions,
                    self.ca_file.clone(),
                    self.id_prefix.clone(),
                )?))
            }
            "stdout" => {
                only("sink", "stdout", &set, &["format", "fields", "top"])?;
                let format = self.format()?;
                Ok(SinkConfig::Stdout(StdoutConfig {
                    format,
                    top: self.top,
                }))
            }
            "files" => {
                only("sink", "files", &set, &["format", "fields", "path"])?;
                let format = self.format()?;
                Ok(SinkConfig::Files(FilesSinkConfig {
                    path: self
                        .path
                        .clone()
                        .ok_or("key `sink.path`: required for a `files` sink")?,
                    format,
                }))
            }
            "count" => {
                only("sink", "count", &set, &[])?;
                Ok(SinkConfig::Count(CountConfig {}))
            }
            "plugin" => {
                only("sink", "plugin", &set, &["plugin", "params"])?;
                Ok(SinkConfig::Plugin(PluginSinkConfig {
                    plugin: self
                        .plugin
                        .clone()
                        .ok_or("key `sink.plugin`: required for a `plugin` sink")?,
                    params: self.params.clone().unwrap_or_default(),
                }))
            }
            other => Err(format!(
                "key `sink.kind`: unknown sink {other:?}; expected \"stdout\", \"files\", \"count\", \"plugin\" or \"amqp\""
            )),
        }
    }
}

impl RawSink {
    /// `format` and `fields`, checked together.
    fn format(&self) -> Result<Format, String> {
        let kind = self.format.unwrap_or_default();
        let fields = match &self.fields {
            None => Fields::DEFAULT,
            Some(_) if kind != OutputFormat::Jsonl => {
                return Err(format!(
                    "key `sink.fields`: only for format = \"jsonl\"; this sink's format is \"{}\"",
                    kind.name()
                ));
            }
            Some(list) if list.is_empty() => {
                return Err("key `sink.fields`: is empty; give some of \"key\", \"value\", \"timestamp\", \"headers\"".to_owned());
            }
            Some(list) => Fields::of(list),
        };
        Ok(Format { kind, fields })
    }
}
