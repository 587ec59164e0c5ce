//! The plugin's parameters: [`Params`].

use std::fmt::Display;
use std::str::FromStr;

/// The plugin's parameters from the pipeline file (over the manifest's defaults), as
/// key/value strings. Every helper that fails returns a message naming the parameter, ready to
/// return from `init`.
///
/// ```
/// use sluice_sdk::Params;
///
/// let params = Params::from_iter([("pattern", "error"), ("limit", "10")]);
/// assert_eq!(params.get("pattern"), Some("error"));
/// assert_eq!(params.require("pattern"), Ok("error"));
/// assert_eq!(params.parse::<u32>("limit"), Ok(Some(10)));
/// assert_eq!(params.flag("invert"), Ok(false));
/// assert!(params.allow_only(&["pattern", "limit"]).is_ok());
///
/// let err = params.allow_only(&["pattern"]).unwrap_err();
/// assert_eq!(err, "unknown parameter `limit` (this plugin takes: pattern)");
/// let err = params.require("fields").unwrap_err();
/// assert_eq!(err, "parameter `fields` is required");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parameters from `(name, value)` pairs; where a name repeats, the last one counts.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// The value of parameter `name`, when given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of parameter `name`, or a message saying it is required.
    pub fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("parameter `{name}` is required"))
    }

    /// Parameter `name` parsed as a `T`: `Ok(None)` when it is not given, an error naming it
    /// and its value when it does not parse.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(name) {
            None => Ok(None),
            Some(value) => value.trim().parse().map(Some).map_err(|e| {
                format!(
                    "parameter `{name}` = {value:?} is not a valid {}: {e}",
                    short_type_name::<T>()
                )
            }),
        }
    }

    /// Parameter `name` parsed as a `T`, or `default` when it is not given.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse(name)?.unwrap_or(default))
    }

    /// Parameter `name` as a boolean: `"true"` or `"false"`; `false` when it is not given.
    pub fn flag(&self, name: &str) -> Result<bool, String> {
        match self.get(name).map(str::trim) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(format!(
                "parameter `{name}` = {other:?} must be \"true\" or \"false\""
            )),
        }
    }

    /// Refuses any parameter whose name is not in `allowed`, so that a misspelt parameter is
    /// an error rather than silently ignored.
    pub fn allow_only(&self, allowed: &[&str]) -> Result<(), String> {
        match self
            .pairs
            .iter()
            .find(|(n, _)| !allowed.contains(&n.as_str()))
        {
            None => Ok(()),
            Some((name, _)) if allowed.is_empty() => Err(format!(
                "unknown parameter `{name}` (this plugin takes none)"
            )),
            Some((name, _)) => Err(format!(
                "unknown parameter `{name}` (this plugin takes: {})",
                allowed.join(", ")
            )),
        }
    }

    /// Every `(name, value)` pair in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no parameter was given.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl From<Vec<(String, String)>> for Params {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Self::new(pairs)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::new(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// `u32` rather than `core::primitive::u32`, for messages.
fn short_type_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    name.rsplit("::").next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_does_not_parse_is_named_in_the_message() {
        let params = Params::from_iter([("n", "x1")]);
        let err = params.parse::<u32>("n").unwrap_err();
        assert_eq!(
            err,
            "parameter `n` = \"x1\" is not a valid u32: invalid digit found in string"
        );
    }

    #[test]
    fn the_last_of_repeated_names_counts() {
        let params = Params::from_iter([("a", "default"), ("a", "given")]);
        assert_eq!(params.get("a"), Some("given"));
    }

    #[test]
    fn a_flag_must_be_true_or_false() {
        let params = Params::from_iter([("a", "true"), ("b", "yes")]);
        assert_eq!(params.flag("a"), Ok(true));
        assert!(params.flag("b").unwrap_err().contains("`b`"));
        assert!(
            Params::from_iter([("x", "")])
                .allow_only(&[])
                .unwrap_err()
                .contains("takes none")
        );
    }
}
