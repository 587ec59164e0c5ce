//! The Nexmark events themselves: which event number is a person, an auction or a bid, their
//! ids, their event times and their fields, each a pure function of the seed and the event
//! number, written as one JSON object.
//!
//! The rules are those of the Nexmark generator of Apache Beam and of the Flink Nexmark
//! benchmark (`GeneratorConfig`, `PersonGenerator`, `AuctionGenerator`, `BidGenerator`), with
//! their defaults: of every 50 events, the first is a person, the next 3 are auctions and the
//! other 46 bids; ids start at 1000; an auction's seller, and a bid's auction and bidder, are
//! "hot" (one of the few latest) with the reference's ratios, else drawn from the active ones;
//! event `n` happens at `BASE_TIME + n / rate`. The random draws come from our own generator
//! (seeded by the seed and the event number), not Java's, so the values differ from Beam's
//! while following the same distributions.

/// Ids of persons and auctions start here, as in the reference (so small runs still match).
pub const FIRST_PERSON_ID: u64 = 1000;
/// The first auction id.
pub const FIRST_AUCTION_ID: u64 = 1000;
/// The first category id; there are [`CATEGORIES`] of them.
pub const FIRST_CATEGORY_ID: u64 = 10;
/// How many categories.
pub const CATEGORIES: u64 = 5;
/// Persons in every [`PROPORTION`] events.
pub const PERSON_PROPORTION: u64 = 1;
/// Auctions in every [`PROPORTION`] events.
pub const AUCTION_PROPORTION: u64 = 3;
/// Bids in every [`PROPORTION`] events.
pub const BID_PROPORTION: u64 = 46;
/// The cycle of event kinds: 50 events.
pub const PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// The event time of event 0: 2015-07-15T00:00:00Z, in ms. Fixed, so that a restart makes the
/// same events (the reference takes the wall clock at start, which cannot replay).
pub const BASE_TIME_MS: i64 = 1_436_918_400_000;
/// The event rate that sets event times when the source runs as fast as it can (`rate = 0`):
/// the reference's default first event rate, 10,000 events a second.
pub const DEFAULT_EVENT_RATE: u64 = 10_000;

/// Persons that may still bid or sell (the reference's `numActivePeople`).
const ACTIVE_PEOPLE: u64 = 1000;
/// Auctions that may still get bids (`numInFlightAuctions`).
const IN_FLIGHT_AUCTIONS: u64 = 100;
/// Ids not created yet that a random pick may reach (`PERSON_ID_LEAD`, `AUCTION_ID_LEAD`).
const ID_LEAD: u64 = 10;
/// 1 in this many auctions has a random seller, the others a hot one (`hotSellersRatio`).
const HOT_SELLERS_RATIO: u64 = 4;
/// 1 in this many bids goes to a random auction (`hotAuctionRatio`).
const HOT_AUCTION_RATIO: u64 = 2;
/// 1 in this many bids comes from a random bidder (`hotBiddersRatio`).
const HOT_BIDDERS_RATIO: u64 = 4;
/// 1 in this many bids comes from a random channel rather than a hot one (Flink's
/// `hotChannelsRatio`).
const HOT_CHANNELS_RATIO: u64 = 2;
/// Hot ids are the first of each batch of this many (`HOT_*_RATIO` = 100 in the reference).
const HOT_BATCH: u64 = 100;
/// Distinct non-hot channels (Flink's `CHANNELS_NUMBER`).
const CHANNELS: u64 = 10_000;
/// The hot channels (Flink's `HOT_CHANNELS`).
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Average sizes the `extra` field pads each kind to (`avg*ByteSize`).
const AVG_PERSON_BYTES: u64 = 200;
const AVG_AUCTION_BYTES: u64 = 500;
const AVG_BID_BYTES: u64 = 100;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// What kind event number `n` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new person.
    Person,
    /// A new auction.
    Auction,
    /// A bid.
    Bid,
}

/// The kind of event `n`: the first of every 50 is a person, the next 3 auctions, the rest bids.
pub fn kind(n: u64) -> Kind {
    let rem = n % PROPORTION;
    if rem < PERSON_PROPORTION {
        Kind::Person
    } else if rem < PERSON_PROPORTION + AUCTION_PROPORTION {
        Kind::Auction
    } else {
        Kind::Bid
    }
}

/// The last person id (from 0) made at or before event `n`: the current one if `n` is a person.
pub fn last_person(n: u64) -> u64 {
    let (epoch, offset) = (n / PROPORTION, n % PROPORTION);
    // An auction or a bid: the last person of this epoch.
    let offset = if offset >= PERSON_PROPORTION {
        PERSON_PROPORTION - 1
    } else {
        offset
    };
    epoch * PERSON_PROPORTION + offset
}

/// The last auction id (from 0) made at or before event `n`: the current one if `n` is an
/// auction. Before the first auction it is 0, as in the reference (which goes to -1 there and
/// never uses it).
pub fn last_auction(n: u64) -> u64 {
    let (epoch, offset) = (n / PROPORTION, n % PROPORTION);
    if offset < PERSON_PROPORTION {
        // A person: the last auction of the previous epoch.
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        // A bid: the last auction of this epoch.
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    } else {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    }
}

/// The event time of event `n` at `rate` events a second (0: [`DEFAULT_EVENT_RATE`]), in ms:
/// the reference's `baseTime + n * interEventDelay`, monotone in `n`.
pub fn event_time(n: u64, rate: u64) -> i64 {
    let rate = if rate == 0 { DEFAULT_EVENT_RATE } else { rate };
    BASE_TIME_MS + (n as u128 * 1000 / rate as u128) as i64
}

/// The random draws of one event: splitmix64 over a state seeded by the seed and the event
/// number, so every event is made on its own, in any order.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// The draws of event `n` for `seed`.
    pub fn new(seed: u64, n: u64) -> Self {
        Rng(mix(seed ^ mix(n.wrapping_add(0x6E78_6D6B))))
    }

    /// 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..bound` (`bound` > 0).
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// A number in `[0, 1)`.
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One event's identity: what the record's key and timestamp are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its kind.
    pub kind: Kind,
    /// The person id of a person, the auction id of an auction or a bid.
    pub key: u64,
    /// Its event time, ms.
    pub time_ms: i64,
}

/// Writes event `n` as one JSON object to `out` and returns its head. `rate` sets event
/// times ([`event_time`]). Appends only: no allocation beyond `out`'s growth.
pub fn write_event(out: &mut Vec<u8>, seed: u64, rate: u64, n: u64) -> Head {
    let mut rng = Rng::new(seed, n);
    let time_ms = event_time(n, rate);
    let kind = kind(n);
    let key = match kind {
        Kind::Person => write_person(out, &mut rng, n, time_ms),
        Kind::Auction => write_auction(out, &mut rng, n, time_ms, rate),
        Kind::Bid => write_bid(out, &mut rng, n, time_ms),
    };
    Head { kind, key, time_ms }
}

/// A random person id (from 0) among the active ones, or a few not made yet.
fn random_person(rng: &mut Rng, n: u64) -> u64 {
    let people = last_person(n) + 1;
    let active = people.min(ACTIVE_PEOPLE);
    people - active + rng.below(active + ID_LEAD)
}

/// A random auction id (from 0) among those likely still open, or a few not made yet.
fn random_auction(rng: &mut Rng, n: u64) -> u64 {
    let max = last_auction(n);
    let min = max.saturating_sub(IN_FLIGHT_AUCTIONS);
    min + rng.below(max - min + 1 + ID_LEAD)
}

/// A price in cents, log-uniform from $1 to $1,000,000 (`PriceGenerator`).
fn price(rng: &mut Rng) -> u64 {
    (10f64.powf(rng.unit() * 6.0) * 100.0).round() as u64
}

fn write_person(out: &mut Vec<u8>, rng: &mut Rng, n: u64, time_ms: i64) -> u64 {
    let id = last_person(n) + FIRST_PERSON_ID;
    out.extend_from_slice(b"{\"kind\":\"person\",\"id\":");
    push_u64(out, id);
    // The reference's size for the extra: 8 bytes of id and the text of the five strings.
    let mut size = 8;
    out.extend_from_slice(b",\"name\":\"");
    size += text(out, |out| {
        out.extend_from_slice(FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize].as_bytes());
        out.push(b' ');
        out.extend_from_slice(LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize].as_bytes());
    });
    out.extend_from_slice(b"\",\"emailAddress\":\"");
    size += text(out, |out| {
        push_string(out, rng, 7);
        out.push(b'@');
        push_string(out, rng, 5);
        out.extend_from_slice(b".com");
    });
    out.extend_from_slice(b"\",\"creditCard\":\"");
    size += text(out, |out| {
        for i in 0..4 {
            if i > 0 {
                out.push(b' ');
            }
            let four = rng.below(10_000);
            for d in [1000, 100, 10, 1] {
                out.push(b'0' + (four / d % 10) as u8);
            }
        }
    });
    out.extend_from_slice(b"\",\"city\":\"");
    size += text(out, |out| {
        out.extend_from_slice(US_CITIES[rng.below(US_CITIES.len() as u64) as usize].as_bytes());
    });
    out.extend_from_slice(b"\",\"state\":\"");
    size += text(out, |out| {
        out.extend_from_slice(US_STATES[rng.below(US_STATES.len() as u64) as usize].as_bytes());
    });
    out.extend_from_slice(b"\",\"dateTime\":");
    push_i64(out, time_ms);
    push_extra(out, rng, size, AVG_PERSON_BYTES);
    id
}

/// The bytes `write` appends to `out`.
fn text(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> u64 {
    let start = out.len();
    write(out);
    (out.len() - start) as u64
}

fn write_auction(out: &mut Vec<u8>, rng: &mut Rng, n: u64, time_ms: i64, rate: u64) -> u64 {
    let id = last_auction(n) + FIRST_AUCTION_ID;
    // 3 in 4 auctions are by the hot seller of the latest batch of 100 persons.
    let seller = if rng.below(HOT_SELLERS_RATIO) > 0 {
        last_person(n) / HOT_BATCH * HOT_BATCH
    } else {
        random_person(rng, n)
    } + FIRST_PERSON_ID;
    let category = FIRST_CATEGORY_ID + rng.below(CATEGORIES);
    let initial = price(rng);
    // Open for a random time averaging the time until IN_FLIGHT_AUCTIONS more auctions exist.
    let ahead = IN_FLIGHT_AUCTIONS * PROPORTION / AUCTION_PROPORTION;
    let horizon = (event_time(n + ahead, rate) - time_ms).max(0) as u64;
    let expires = time_ms + 1 + rng.below((horizon * 2).max(1)) as i64;
    out.extend_from_slice(b"{\"kind\":\"auction\",\"id\":");
    push_u64(out, id);
    out.extend_from_slice(b",\"itemName\":\"");
    // The reference's size for the extra: the two strings and six 8-byte numbers.
    let mut size = 8 * 6;
    size += text(out, |out| push_string(out, rng, 20));
    out.extend_from_slice(b"\",\"description\":\"");
    size += text(out, |out| push_string(out, rng, 100));
    out.extend_from_slice(b"\",\"initialBid\":");
    push_u64(out, initial);
    out.extend_from_slice(b",\"reserve\":");
    push_u64(out, initial + price(rng));
    out.extend_from_slice(b",\"dateTime\":");
    push_i64(out, time_ms);
    out.extend_from_slice(b",\"expires\":");
    push_i64(out, expires);
    out.extend_from_slice(b",\"seller\":");
    push_u64(out, seller);
    out.extend_from_slice(b",\"category\":");
    push_u64(out, category);
    push_extra(out, rng, size, AVG_AUCTION_BYTES);
    id
}

fn write_bid(out: &mut Vec<u8>, rng: &mut Rng, n: u64, time_ms: i64) -> u64 {
    // Half the bids go to the hot auction of the latest batch of 100 auctions.
    let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
        last_auction(n) / HOT_BATCH * HOT_BATCH
    } else {
        random_auction(rng, n)
    } + FIRST_AUCTION_ID;
    // The second person of the batch, so that hot bidders are not hot sellers.
    let bidder = if rng.below(HOT_BIDDERS_RATIO) > 0 {
        last_person(n) / HOT_BATCH * HOT_BATCH + 1
    } else {
        random_person(rng, n)
    } + FIRST_PERSON_ID;
    let price = price(rng);
    out.extend_from_slice(b"{\"kind\":\"bid\",\"auction\":");
    push_u64(out, auction);
    out.extend_from_slice(b",\"bidder\":");
    push_u64(out, bidder);
    out.extend_from_slice(b",\"price\":");
    push_u64(out, price);
    out.extend_from_slice(b",\"channel\":\"");
    let (channel, url_seed) = if rng.below(HOT_CHANNELS_RATIO) > 0 {
        let i = rng.below(HOT_CHANNELS.len() as u64);
        out.extend_from_slice(HOT_CHANNELS[i as usize].as_bytes());
        (i, u64::MAX - i)
    } else {
        let c = rng.below(CHANNELS);
        out.extend_from_slice(b"channel-");
        push_u64(out, c);
        (c, c)
    };
    out.extend_from_slice(b"\",\"url\":\"");
    push_url(out, url_seed, channel);
    out.extend_from_slice(b"\",\"dateTime\":");
    push_i64(out, time_ms);
    // The reference's size for the extra: four 8-byte numbers.
    push_extra(out, rng, 8 * 4, AVG_BID_BYTES);
    auction
}

/// A channel's URL (Flink's `getBaseUrl`): three random path parts, the same for a channel
/// every time.
fn push_url(out: &mut Vec<u8>, url_seed: u64, channel: u64) {
    let mut rng = Rng::new(0x75726C, url_seed);
    out.extend_from_slice(b"https://www.nexmark.com/");
    for _ in 0..3 {
        for _ in 0..5 {
            let c = rng.below(27);
            out.push(if c == 26 { b'_' } else { b'a' + c as u8 });
        }
        out.push(b'/');
    }
    out.extend_from_slice(b"item.htm?query=1");
    if url_seed == channel && channel.is_multiple_of(10) {
        out.extend_from_slice(b"&channel_id=");
        push_u64(out, channel);
    }
}

/// A random string of 3 to `max - 1` lowercase letters and spaces, trimmed (`nextString`).
fn push_string(out: &mut Vec<u8>, rng: &mut Rng, max: u64) {
    let len = 3 + rng.below(max - 3);
    let start = out.len();
    for _ in 0..len {
        if rng.below(13) == 0 {
            // No leading space, as after the reference's trim.
            if out.len() > start {
                out.push(b' ');
            }
        } else {
            out.push(b'a' + rng.below(26) as u8);
        }
    }
    while out.len() > start && out.last() == Some(&b' ') {
        out.pop();
    }
}

/// `,"extra":"…"}`: letters that bring the event to `avg` bytes on average (`nextExtra`), and
/// the closing brace.
fn push_extra(out: &mut Vec<u8>, rng: &mut Rng, size: u64, avg: u64) {
    out.extend_from_slice(b",\"extra\":\"");
    if size < avg {
        let want = avg - size;
        let delta = (want as f64 * 0.2).round() as u64;
        let len = want - delta + if delta == 0 { 0 } else { rng.below(2 * delta) };
        let mut bits = 0u64;
        for i in 0..len {
            if i.is_multiple_of(12) {
                bits = rng.next_u64();
            }
            out.push(b'a' + (bits % 26) as u8);
            bits /= 26;
        }
    }
    out.extend_from_slice(b"\"}");
}

/// Appends `v` in decimal.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(crate::scheduler::combine::fmt_u64(v, &mut [0; 20]));
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}
