//! Greedy balancing: which partitions a host claims or steals in one claim interval, from the
//! ownership records it just read. A pure function, like the Azure SDK's `_balance_ownership`.
//!
//! The owners are the live owners in the records and this host. Each gets a fair share,
//! `floor(P/n)`, and the first `P mod n` of them by sorted id one more, so the shares add up to
//! P and every host computes the same ones. A host renews what it owns, claims free or expired
//! partitions up to its share (all it needs at once), then, if still below its share, steals
//! from owners above theirs. 3 hosts over 8 partitions settle at 3/3/2 within two claim
//! intervals: the first lets each see the others, the second moves what is over.

use std::collections::{BTreeMap, BTreeSet};

use super::lease::Record;

/// One partition to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// The partition.
    pub partition: u32,
    /// The generation to create.
    pub generation: u64,
    /// Its owner so far (`None`: never claimed), and whether its lease was live (a steal).
    pub from: Option<(String, bool)>,
}

/// What a host does this claim interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moves {
    /// Its own partitions, with the generation that renews each.
    pub renew: Vec<(u32, u64)>,
    /// Partitions to claim (free or expired) or steal.
    pub take: Vec<Take>,
    /// Its fair share.
    pub share: usize,
}

/// The moves of host `me` at `now_ms`, given every partition's highest record. `seed` varies
/// the order in which free partitions and victims' partitions are tried, so that hosts
/// starting together do not all reach for the same ones.
pub fn balance(me: &str, now_ms: i64, records: &[Option<Record>], seed: u64) -> Moves {
    let p_count = records.len();
    let mut counts: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    counts.insert(me, Vec::new());
    let mut renew = Vec::new();
    let mut free = Vec::new();
    for (p, r) in records.iter().enumerate() {
        match r {
            Some(r) if r.owner == me => {
                renew.push((p as u32, r.generation + 1));
                counts.entry(me).or_default().push(p as u32);
            }
            Some(r) if r.live(now_ms) => counts.entry(&r.owner).or_default().push(p as u32),
            _ => free.push(p as u32),
        }
    }
    let shares = shares(&counts.keys().copied().collect(), p_count);
    let share = shares[me];
    let mine = counts[me].len();
    let mut take = Vec::new();
    let mut want = share.saturating_sub(mine);
    rotate(&mut free, seed);
    for p in free.into_iter().take(want) {
        let r = &records[p as usize];
        take.push(Take {
            partition: p,
            generation: r.as_ref().map_or(0, |r| r.generation + 1),
            from: r.as_ref().map(|r| (r.owner.clone(), false)),
        });
    }
    want -= take.len();
    // Steal from the owners furthest above their share.
    let mut over: Vec<(usize, &str)> = counts
        .iter()
        .filter(|(o, _)| **o != me)
        .map(|(o, ps)| (ps.len().saturating_sub(shares[o]), *o))
        .filter(|(excess, _)| *excess > 0)
        .collect();
    over.sort_by(|a, b| b.cmp(a));
    for (excess, owner) in over {
        if want == 0 {
            break;
        }
        let mut theirs = counts[owner].clone();
        rotate(&mut theirs, seed);
        for p in theirs.into_iter().take(excess.min(want)) {
            let r = records[p as usize]
                .as_ref()
                .expect("an owned partition has a record");
            take.push(Take {
                partition: p,
                generation: r.generation + 1,
                from: Some((owner.to_owned(), true)),
            });
            want -= 1;
        }
    }
    Moves { renew, take, share }
}

/// Every owner's fair share of `partitions`: `floor(P/n)`, one more for the first `P mod n`.
pub fn shares<'a>(owners: &BTreeSet<&'a str>, partitions: usize) -> BTreeMap<&'a str, usize> {
    let n = owners.len().max(1);
    owners
        .iter()
        .enumerate()
        .map(|(i, o)| (*o, partitions / n + usize::from(i < partitions % n)))
        .collect()
}

fn rotate(v: &mut [u32], seed: u64) {
    if !v.is_empty() {
        let k = (seed % v.len() as u64) as usize;
        v.rotate_left(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(owner: &str, generation: u64, expires_ms: i64) -> Option<Record> {
        Some(Record {
            owner: owner.into(),
            generation,
            claimed_ms: 0,
            expires_ms,
        })
    }

    /// Applies every host's moves in turn, as if each read the records the one before left.
    fn cycle(records: &mut [Option<Record>], hosts: &[&str], now: i64) {
        for (i, h) in hosts.iter().enumerate() {
            let m = balance(h, now, records, i as u64 * 7 + now as u64);
            for (p, g) in m.renew {
                records[p as usize] = rec(h, g, now + 3000);
            }
            for t in m.take {
                records[t.partition as usize] = rec(h, t.generation, now + 3000);
            }
        }
    }

    fn counts(records: &[Option<Record>], hosts: &[&str]) -> Vec<usize> {
        let mut c: Vec<usize> = hosts
            .iter()
            .map(|h| records.iter().flatten().filter(|r| r.owner == *h).count())
            .collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        c
    }

    #[test]
    fn eight_partitions_over_three_hosts_settle_at_3_3_2_in_two_cycles() {
        let hosts = ["b-host", "a-host", "c-host"];
        let mut records = vec![None; 8];
        cycle(&mut records, &hosts, 0);
        cycle(&mut records, &hosts, 1000);
        assert_eq!(counts(&records, &hosts), vec![3, 3, 2]);
        // And stays there.
        let before = records.clone();
        cycle(&mut records, &hosts, 2000);
        let owners = |r: &[Option<Record>]| -> Vec<String> {
            r.iter()
                .map(|r| r.as_ref().unwrap().owner.clone())
                .collect()
        };
        assert_eq!(owners(&records), owners(&before));
    }

    #[test]
    fn a_dead_hosts_partitions_go_to_the_others_once_expired() {
        let hosts = ["a", "b", "c"];
        let mut records = vec![None; 8];
        cycle(&mut records, &hosts, 0);
        cycle(&mut records, &hosts, 1000);
        // c dies: its leases (renewed at 1000, expiring at 4000) hold until they expire.
        cycle(&mut records, &hosts[..2], 2000);
        assert_eq!(
            counts(&records, &hosts).iter().filter(|&&c| c > 0).count(),
            3
        );
        cycle(&mut records, &hosts[..2], 4000);
        assert_eq!(counts(&records, &hosts), vec![4, 4, 0]);
        // c comes back (a new member) and takes its share again.
        let back = ["a", "b", "c2"];
        cycle(&mut records, &back, 5000);
        cycle(&mut records, &back, 6000);
        assert_eq!(counts(&records, &back), vec![3, 3, 2]);
    }

    #[test]
    fn a_host_alone_claims_everything_and_steals_only_what_is_over_a_share() {
        let records = vec![rec("a", 4, 10_000); 8];
        let m = balance("b", 0, &records, 0);
        assert_eq!(m.share, 4);
        assert_eq!(m.take.len(), 4);
        assert!(
            m.take
                .iter()
                .all(|t| t.generation == 5 && t.from == Some(("a".to_owned(), true)))
        );
        let m = balance("a", 0, &records, 0);
        assert_eq!((m.renew.len(), m.take.len()), (8, 0));
        assert!(m.renew.iter().all(|&(_, g)| g == 5));
    }

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for n in 1..6usize {
            for p in 0..20 {
                let names: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
                let owners: BTreeSet<&str> = names.iter().map(String::as_str).collect();
                let s = shares(&owners, p);
                assert_eq!(s.values().sum::<usize>(), p);
                let (lo, hi) = (s.values().min().unwrap(), s.values().max().unwrap());
                assert!(hi - lo <= 1);
            }
        }
    }
}
