//! `builtin = "event-window"`: windows over event time (Spark Structured Streaming's
//! `window()` with `withWatermark`, Flink's event-time windows), as written and once checked.
//!
//! Keys: `window` (`"tumbling"`, `"sliding"`, `"session"`), `length` (tumbling and sliding),
//! `slide` (sliding), `gap` (session), `aggregate` (default `"count"`), `allowed-lateness`
//! (default 0), `early-updates` (default false), `time` (`"timestamp"`, the default) or
//! `time-field`, `top`, `partitions`, `snapshot-every` (default 16). The semantics are in
//! [`crate::ops::event_window`].

use std::time::Duration;

use super::step::StepConfig;
use super::window::Aggregate;

/// The windows a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `[k·length, (k+1)·length)`, one per record.
    Tumbling {
        /// ms.
        length: i64,
    },
    /// `[k·slide, k·slide + length)`, `⌈length / slide⌉` per record.
    Sliding {
        /// ms.
        length: i64,
        /// ms.
        slide: i64,
    },
    /// Per key, records closer than `gap` to each other share a window `[first, last + gap)`.
    Session {
        /// ms.
        gap: i64,
    },
}

impl Shape {
    /// Its `window` name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Tumbling { .. } => "tumbling",
            Shape::Sliding { .. } => "sliding",
            Shape::Session { .. } => "session",
        }
    }
}

/// Where a record's event time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSource {
    /// The record's timestamp (ms since the epoch).
    Timestamp,
    /// A top-level field of the record's JSON value: ms since the epoch, or an RFC 3339 string.
    Field(String),
}

/// An `event-window` step, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventWindowSpec {
    /// The windows.
    pub shape: Shape,
    /// What is computed per window and key.
    pub aggregate: Aggregate,
    /// ms the watermark stays behind the largest event time seen.
    pub allowed_lateness: i64,
    /// Whether each batch also outputs the current value of the windows still open.
    pub early_updates: bool,
    /// Where the event time comes from.
    pub time: TimeSource,
    /// Keep only the keys whose value is among the `top` largest of their window (ties kept).
    pub top: Option<u32>,
    /// Output partitions (keys placed by hash); `None`: as many as the source has.
    pub partitions: Option<u32>,
    /// Every this many batches the whole state is written (else only what a batch changed).
    pub snapshot_every: u32,
}

/// The `event-window` step `step` describes (`here` names it), or what is wrong with it.
pub fn spec(step: &StepConfig, here: &str) -> Result<EventWindowSpec, String> {
    if let Some(key) = [
        ("inverse", step.inverse.is_some()),
        ("timeout", step.timeout.is_some()),
        ("output", step.output.is_some()),
    ]
    .iter()
    .find_map(|(k, on)| on.then_some(*k))
    {
        return Err(format!("{here}: key `{key}` is not for `event-window`"));
    }
    let ms = |key: &str, d: Option<Duration>| -> Result<Option<i64>, String> {
        match d {
            None => Ok(None),
            Some(d) if d.as_millis() == 0 => Err(format!(
                "{here}: key `{key}` must be at least 1ms (got {})",
                humantime::format_duration(d)
            )),
            Some(d) => i64::try_from(d.as_millis())
                .map(Some)
                .map_err(|_| format!("{here}: key `{key}` is too long")),
        }
    };
    let window = step.window.as_deref().ok_or_else(|| {
        format!("{here}: needs `window = \"tumbling\"`, `\"sliding\"` or `\"session\"`")
    })?;
    let length = ms("length", step.length)?;
    let slide = ms("slide", step.slide)?;
    let gap = ms("gap", step.gap)?;
    let needs = |key: &str, v: Option<i64>| {
        v.ok_or_else(|| format!("{here}: a {window} window needs `{key}` (e.g. {key} = \"10s\")"))
    };
    let not = |key: &str, set: bool| match set {
        true => Err(format!("{here}: key `{key}` is not for a {window} window")),
        false => Ok(()),
    };
    let shape = match window {
        "tumbling" => {
            not("slide", slide.is_some())?;
            not("gap", gap.is_some())?;
            Shape::Tumbling {
                length: needs("length", length)?,
            }
        }
        "sliding" => {
            not("gap", gap.is_some())?;
            let (length, slide) = (needs("length", length)?, needs("slide", slide)?);
            if slide > length {
                return Err(format!(
                    "{here}: key `slide` ({slide} ms) is longer than `length` ({length} ms): records between two windows would be in none"
                ));
            }
            if length / slide > 1000 {
                return Err(format!(
                    "{here}: key `slide`: at most 1,000 windows may hold a record (`length` / `slide` is {})",
                    length / slide
                ));
            }
            Shape::Sliding { length, slide }
        }
        "session" => {
            not("length", length.is_some())?;
            not("slide", slide.is_some())?;
            if step.top.is_some() {
                return Err(format!(
                    "{here}: key `top` is not for a session window (each key has its own sessions)"
                ));
            }
            Shape::Session {
                gap: needs("gap", gap)?,
            }
        }
        other => {
            return Err(format!(
                "{here}: key `window`: unknown window {other:?}; expected \"tumbling\", \"sliding\" or \"session\""
            ));
        }
    };
    let time = match (step.time.as_deref(), &step.time_field) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{here}: keys `time` and `time-field` both given; give one"
            ));
        }
        (None | Some("timestamp"), None) => TimeSource::Timestamp,
        (Some(other), None) => {
            return Err(format!(
                "{here}: key `time`: {other:?} is not a time source; expected \"timestamp\" (or give `time-field = \"NAME\"`)"
            ));
        }
        (None, Some(f)) if f.is_empty() => {
            return Err(format!("{here}: key `time-field` is empty"));
        }
        (None, Some(f)) => TimeSource::Field(f.clone()),
    };
    let allowed_lateness = match step.allowed_lateness {
        None => 0,
        Some(d) => i64::try_from(d.as_millis())
            .map_err(|_| format!("{here}: key `allowed-lateness` is too long"))?,
    };
    if step.top == Some(0) {
        return Err(format!("{here}: key `top` must be at least 1"));
    }
    if step.partitions == Some(0) {
        return Err(format!("{here}: key `partitions` must be at least 1"));
    }
    let snapshot_every = step.snapshot_every.unwrap_or(16);
    if snapshot_every == 0 {
        return Err(format!("{here}: key `snapshot-every` must be at least 1"));
    }
    Ok(EventWindowSpec {
        shape,
        aggregate: step.aggregate.unwrap_or(Aggregate::Count),
        allowed_lateness,
        early_updates: step.early_updates.unwrap_or(false),
        time,
        top: step.top,
        partitions: step.partitions,
        snapshot_every,
    })
}

/// The keys only `event-window` takes that `step` sets (for the other steps to refuse).
pub fn own_keys_set(step: &StepConfig) -> Vec<&'static str> {
    [
        ("window", step.window.is_some()),
        ("gap", step.gap.is_some()),
        ("allowed-lateness", step.allowed_lateness.is_some()),
        ("early-updates", step.early_updates.is_some()),
        ("time", step.time.is_some()),
        ("time-field", step.time_field.is_some()),
        ("top", step.top.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<EventWindowSpec, String> {
        let step: StepConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        spec(&step, "w")
    }

    #[test]
    fn each_window_takes_its_keys_and_defaults() {
        let s = parse(
            "builtin = \"event-window\"\nwindow = \"sliding\"\nlength = \"10s\"\nslide = \"2s\"\naggregate = \"max\"\nallowed-lateness = \"1s\"\ntop = 1",
        )
        .unwrap();
        assert_eq!(
            s.shape,
            Shape::Sliding {
                length: 10_000,
                slide: 2_000
            }
        );
        assert_eq!(
            (s.aggregate, s.allowed_lateness, s.top, &s.time),
            (Aggregate::Max, 1_000, Some(1), &TimeSource::Timestamp)
        );
        let s = parse("window = \"session\"\ngap = \"5s\"\ntime-field = \"ts\"").unwrap();
        assert_eq!(
            (s.shape, s.time),
            (
                Shape::Session { gap: 5_000 },
                TimeSource::Field("ts".into())
            )
        );
    }

    #[test]
    fn a_wrong_or_missing_key_is_named() {
        let cases = [
            ("length = \"1s\"", "needs `window"),
            ("window = \"hopping\"\nlength = \"1s\"", "key `window`"),
            ("window = \"tumbling\"", "needs `length`"),
            (
                "window = \"sliding\"\nlength = \"1s\"\nslide = \"2s\"",
                "key `slide`",
            ),
            (
                "window = \"session\"\ngap = \"0s\"",
                "key `gap` must be at least 1ms",
            ),
            (
                "window = \"tumbling\"\nlength = \"1s\"\ngap = \"1s\"",
                "key `gap` is not for a tumbling",
            ),
            (
                "window = \"tumbling\"\nlength = \"1s\"\ntime = \"arrival\"",
                "key `time`",
            ),
            ("window = \"session\"\ngap = \"1s\"\ntop = 2", "key `top`"),
            (
                "window = \"tumbling\"\nlength = \"1s\"\ninverse = true",
                "key `inverse`",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
