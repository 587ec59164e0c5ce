//! `identity`: a map that returns every value unchanged. It hands the input's values buffer
//! back without copying it, so it measures what the host and the boundary cost on their own.

use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// Returns `input`'s values unchanged: no copy and no per-record work.
pub fn identity(input: &Batch, out: &mut Output) {
    out.pass_through(input);
}

/// The plugin: it has no parameters and no state.
#[derive(Debug)]
pub struct Identity;

impl Transform for Identity {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&[])?;
        Ok(Self)
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        identity(input, out);
        Ok(())
    }
}

export_transform!(Identity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_unchanged_as_a_map() {
        let input = Batch::from_values([b"a".as_slice(), b"", b"\xff\x00"]);
        let mut out = Output::new();
        identity(&input, &mut out);
        let parts = out.finish(input.clone()).unwrap();
        assert_eq!(parts.values, input.into_parts().values);
        assert!(parts.origins.is_empty() && parts.keys.is_none() && parts.rejected.is_empty());
    }

    #[test]
    fn parameters_are_refused() {
        assert!(Identity::init(&Params::from_iter([("x", "1")])).is_err());
        assert!(Identity::init(&Params::default()).is_ok());
    }
}
