//! `nexmark-query`: the per-record Nexmark queries, on the JSON events of the `nexmark` source.
//!
//! Parameter `query` (required):
//!
//! - `"q0"`: pass-through, every event unchanged (what the host and the boundary cost);
//! - `"q1"`: currency conversion, bids only, as Nexmark's q1 (`SELECT auction, bidder, 0.908 *
//!   price AS price, dateTime, extra FROM bid`): `{"auction":…,"bidder":…,"price":…,
//!   "dateTime":…,"extra":"…"}`, the price in euros written exactly (`523` → `474.884`);
//! - `"q2"`: selection, as Flink's q2 (`SELECT auction, price FROM bid WHERE MOD(auction, 123)
//!   = 0`): `{"auction":…,"price":…}`.
//!
//! - `"q5"`: the per-record part of q5 (hot items): bids only, key the auction id (as the
//!   source sets it), empty value; the host's `event-window` step counts them per auction in
//!   sliding windows of event time and keeps the top auction(s) of each window;
//! - `"q7"`: the per-record part of q7 (highest bid): bids only, key the auction id, value the
//!   price in decimal; the host's `event-window` step takes the maximum per auction in tumbling
//!   windows and keeps the top one(s) of each window.
//!
//! Persons and auctions are dropped by q1, q2, q5 and q7. A value that is not a JSON object, or a bid
//! whose auction or price is not a whole number, is rejected with the reason. Values are read
//! by a scan of the object's top-level keys that keeps the raw text of the fields a query needs:
//! nothing is allocated per record.

mod scan;

use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// Which query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Pass-through.
    Q0,
    /// Bids, price in euros.
    Q1,
    /// Bids of auctions whose id is a multiple of 123.
    Q2,
    /// Bids, keyed by auction, empty value (q5's count per window is the host's).
    Q5,
    /// Bids, keyed by auction, the price (q7's maximum per window is the host's).
    Q7,
}

/// Dollars to euros, in thousandths (Nexmark's 0.908).
const EUROS_PER_1000_DOLLARS: u64 = 908;
/// q2 keeps the bids of auctions whose id is a multiple of this.
const Q2_MODULUS: u64 = 123;

/// The fields q1 reads, in this order; q2 reads the first three only, so its scan of a bid
/// stops at the price.
const FIELDS: [&[u8]; 6] = [
    b"kind",
    b"auction",
    b"price",
    b"bidder",
    b"dateTime",
    b"extra",
];
const KIND: usize = 0;
const AUCTION: usize = 1;
const PRICE: usize = 2;
const BIDDER: usize = 3;
const DATE_TIME: usize = 4;
const EXTRA: usize = 5;
/// How many of [`FIELDS`] q2 reads.
const Q2_FIELDS: usize = 3;

/// The plugin: one query.
#[derive(Debug)]
pub struct NexmarkQuery {
    query: Query,
}

impl NexmarkQuery {
    /// The plugin for `query`.
    pub fn new(query: Query) -> Self {
        NexmarkQuery { query }
    }

    /// Runs the query over `input` into `out`.
    pub fn run(&self, input: &Batch, out: &mut Output) {
        if self.query == Query::Q0 {
            out.pass_through(input);
            return;
        }
        let want = match self.query {
            Query::Q2 | Query::Q5 | Query::Q7 => &FIELDS[..Q2_FIELDS],
            _ => &FIELDS[..],
        };
        let mut found: [Option<&[u8]>; FIELDS.len()] = [None; FIELDS.len()];
        for record in input.records() {
            found.fill(None);
            if let Err(reason) = scan::fields(record.value(), want, &mut found) {
                out.reject(record, reason);
                continue;
            }
            if found[KIND] != Some(b"\"bid\"".as_slice()) {
                continue;
            }
            let (Some(auction), Some(price)) = (
                found[AUCTION].and_then(scan::whole),
                found[PRICE].and_then(scan::whole),
            ) else {
                out.reject(record, "a bid whose auction or price is not a whole number");
                continue;
            };
            match self.query {
                Query::Q1 => out.push_with(record, |buf| {
                    buf.extend_from_slice(b"{\"auction\":");
                    push_u64(buf, auction);
                    buf.extend_from_slice(b",\"bidder\":");
                    buf.extend_from_slice(found[BIDDER].unwrap_or(b"null"));
                    buf.extend_from_slice(b",\"price\":");
                    push_thousandths(buf, price * EUROS_PER_1000_DOLLARS);
                    buf.extend_from_slice(b",\"dateTime\":");
                    buf.extend_from_slice(found[DATE_TIME].unwrap_or(b"null"));
                    buf.extend_from_slice(b",\"extra\":");
                    buf.extend_from_slice(found[EXTRA].unwrap_or(b"\"\""));
                    buf.push(b'}');
                }),
                Query::Q5 => out.push_with(record, |_| {}),
                Query::Q7 => out.push_with(record, |buf| push_u64(buf, price)),
                Query::Q2 if auction.is_multiple_of(Q2_MODULUS) => out.push_with(record, |buf| {
                    buf.extend_from_slice(b"{\"auction\":");
                    push_u64(buf, auction);
                    buf.extend_from_slice(b",\"price\":");
                    push_u64(buf, price);
                    buf.push(b'}');
                }),
                _ => {}
            }
        }
    }
}

/// Appends `v` in decimal.
fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `v / 1000` exactly, with three decimals (`474884` → `474.884`).
fn push_thousandths(out: &mut Vec<u8>, v: u64) {
    push_u64(out, v / 1000);
    let frac = v % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

impl Transform for NexmarkQuery {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["query"])?;
        let query = match params.require("query")? {
            "q0" => Query::Q0,
            "q1" => Query::Q1,
            "q2" => Query::Q2,
            "q5" => Query::Q5,
            "q7" => Query::Q7,
            other => {
                return Err(format!(
                    "parameter `query`: unknown query {other:?}; expected \"q0\", \"q1\", \"q2\", \"q5\" or \"q7\""
                ));
            }
        };
        Ok(Self::new(query))
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        self.run(input, out);
        Ok(())
    }
}

export_transform!(NexmarkQuery);

#[cfg(test)]
mod tests {
    use super::*;

    const PERSON: &str = r#"{"kind":"person","id":1000,"name":"Kate Smith","emailAddress":"a@b.com","creditCard":"1 2 3 4","city":"Kent","state":"WA","dateTime":5,"extra":""}"#;
    const BID: &str = r#"{"kind":"bid","auction":1108,"bidder":1001,"price":523,"channel":"Google","url":"https://x/y?a=1","dateTime":7,"extra":"ab"}"#;
    const BID_123: &str = r#" { "auction" : 1230, "kind" : "bid", "price" : 10, "nested": {"kind":"person","a":[1,"}"]}, "bidder":1, "dateTime":1, "extra":"q\"}" } "#;

    fn run(query: &str, values: &[&str]) -> (Vec<(u32, String)>, Vec<u32>) {
        let plugin = NexmarkQuery::init(&Params::from_iter([("query", query)])).unwrap();
        let input = Batch::from_values(values);
        let mut out = Output::new();
        plugin.run(&input, &mut out);
        let kept = (0..out.len())
            .map(|i| {
                (
                    out.origin(i),
                    String::from_utf8(out.value(i).to_vec()).unwrap(),
                )
            })
            .collect();
        let rejected = out.rejected().iter().map(|r| r.index).collect();
        (kept, rejected)
    }

    #[test]
    fn q1_converts_the_price_of_bids_exactly_and_drops_persons() {
        let (kept, rejected) = run("q1", &[PERSON, BID, BID_123]);
        assert_eq!(
            kept,
            [
                (
                    1,
                    r#"{"auction":1108,"bidder":1001,"price":474.884,"dateTime":7,"extra":"ab"}"#
                        .to_owned()
                ),
                (
                    2,
                    r#"{"auction":1230,"bidder":1,"price":9.080,"dateTime":1,"extra":"q\"}"}"#
                        .to_owned()
                )
            ]
        );
        assert!(rejected.is_empty());
    }

    #[test]
    fn q2_keeps_the_bids_of_auctions_that_are_multiples_of_123_whatever_the_key_order() {
        let (kept, _) = run("q2", &[PERSON, BID, BID_123]);
        assert_eq!(kept, [(2, r#"{"auction":1230,"price":10}"#.to_owned())]);
    }

    #[test]
    fn q5_and_q7_keep_bids_with_an_empty_value_or_the_price() {
        assert_eq!(
            run("q5", &[PERSON, BID, BID_123]).0,
            [(1, String::new()), (2, String::new())]
        );
        assert_eq!(
            run("q7", &[PERSON, BID, BID_123]).0,
            [(1, "523".to_owned()), (2, "10".to_owned())]
        );
    }

    #[test]
    fn a_value_that_is_not_an_object_or_a_bid_without_a_whole_price_is_rejected() {
        let bad_price = BID.replace("523", "5.5");
        let (kept, rejected) = run("q2", &["[1]", "{\"kind\":\"bid\"", &bad_price, "nope"]);
        assert!(kept.is_empty());
        assert_eq!(rejected, [0, 1, 2, 3]);
    }

    #[test]
    fn an_unknown_query_or_parameter_is_refused_by_name() {
        let err = NexmarkQuery::init(&Params::from_iter([("query", "q6")])).unwrap_err();
        assert!(err.contains("query") && err.contains("q6"), "{err}");
        assert!(NexmarkQuery::init(&Params::default()).is_err());
        assert!(NexmarkQuery::init(&Params::from_iter([("query", "q0"), ("x", "1")])).is_err());
    }
}
