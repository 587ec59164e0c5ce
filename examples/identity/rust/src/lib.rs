//! `identity` in Rust: every record back unchanged, as a whole (`mode = "bulk"`) or one by one
//! (`mode = "each"`); see `../README.md`.

use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// The plugin and its mode.
pub enum Identity {
    /// The input handed back whole.
    Bulk,
    /// Each record's value pushed on its own.
    Each,
}

impl Transform for Identity {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["mode"])?;
        match params.get("mode").unwrap_or("bulk") {
            "bulk" => Ok(Self::Bulk),
            "each" => Ok(Self::Each),
            other => Err(format!("parameter mode = {other:?}: choose bulk or each")),
        }
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        match self {
            Self::Bulk => out.pass_through(input),
            Self::Each => each(input, out),
        }
        Ok(())
    }
}

export_transform!(Identity);

/// Pushes every record's value, one by one.
pub fn each(input: &Batch, out: &mut Output) {
    for record in input.records() {
        out.push(&record, record.value());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_modes_give_the_input_back() {
        let input = Batch::from_values(["a", "", "ccc"]);
        for mode in ["bulk", "each"] {
            let mut plugin = Identity::init(&Params::from_iter([("mode", mode)])).unwrap();
            let mut out = Output::new();
            let ctx = Context::default();
            plugin.transform(&ctx, &input, &mut out).unwrap();
            assert_eq!(out.values().collect::<Vec<_>>(), [b"a".as_slice(), b"", b"ccc"]);
        }
        assert!(Identity::init(&Params::from_iter([("mode", "x")])).is_err());
    }
}
