//! The values of a column that start with a given prefix, found by comparing each value's
//! first byte before its prefix: the latency marker's check called libc's `memcmp` once per
//! record (8-11% of upper-case's samples, issue #16), and a substring search over the whole
//! column instead cost about as much (it reads every byte; this reads one per value).

use super::BytesColumn;

impl BytesColumn {
    /// Calls `f` with the index of every value that starts with `prefix`, in order: what
    /// `self.get(i).starts_with(prefix)` for each `i` gives.
    pub fn for_each_starting_with(&self, prefix: &[u8], mut f: impl FnMut(usize)) {
        let Some(&first) = prefix.first() else {
            (0..self.len()).for_each(f);
            return;
        };
        let mut start = 0;
        for (i, &end) in self.ends.iter().enumerate() {
            let end = end as usize;
            if end >= start + prefix.len()
                && self.data[start] == first
                && self.data[start..end].starts_with(prefix)
            {
                f(i);
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(col: &BytesColumn, prefix: &[u8]) -> Vec<usize> {
        (0..col.len())
            .filter(|&i| col.get(i).starts_with(prefix))
            .collect()
    }

    fn found(col: &BytesColumn, prefix: &[u8]) -> Vec<usize> {
        let mut v = Vec::new();
        col.for_each_starting_with(prefix, |i| v.push(i));
        v
    }

    #[test]
    fn the_values_found_are_those_that_start_with_the_prefix_whatever_surrounds_them() {
        let mut next = super::super::tests::xorshift(0x2545_f491_4f6c_dd1d);
        // A two-letter alphabet makes prefixes inside values, across values' boundaries, cut
        // short by a value's end and overlapping one another common; empty values too.
        let prefixes: [&[u8]; 5] = [b"ab", b"aa", b"aba", b"b", b""];
        for _ in 0..2000 {
            let mut col = BytesColumn::default();
            for _ in 0..next() % 12 {
                let len = (next() % 6) as usize;
                let v: Vec<u8> = (0..len).map(|_| b'a' + (next() % 2) as u8).collect();
                col.push(&v);
            }
            for p in prefixes {
                assert_eq!(found(&col, p), naive(&col, p), "{col:?} {p:?}");
            }
        }
    }

    #[test]
    fn a_marker_among_lines_is_found_once_and_one_inside_a_line_is_not() {
        let col = BytesColumn::default();
        assert_eq!(found(&col, b"#MARK "), Vec::<usize>::new());
        let mut col = BytesColumn::default();
        for v in [
            &b"the quick"[..],
            b"#MARK 17",
            b"x #MARK 18",
            b"#MARK",
            b"#MARK 19",
        ] {
            col.push(v);
        }
        assert_eq!(found(&col, b"#MARK "), vec![1, 4]);
    }
}
