//! A scan of one JSON object's top-level keys that keeps the raw text of the wanted ones. It
//! checks the structure it walks (braces, quotes, colons, commas) but not every detail of the
//! values it skips, which is enough to find fields in well-formed events cheaply.

/// Scans `v`, one JSON object, and sets `found[i]` to the raw text of the value of key
/// `want[i]` (a string value with its quotes). The scan stops once every wanted key is found
/// (what follows is not looked at); a repeated key before that: the last one counts.
pub fn fields<'a>(
    v: &'a [u8],
    want: &[&[u8]],
    found: &mut [Option<&'a [u8]>],
) -> Result<(), &'static str> {
    let mut missing = want.len();
    let mut i = ws(v, 0);
    if v.get(i) != Some(&b'{') {
        return Err("value is not a JSON object");
    }
    i = ws(v, i + 1);
    if v.get(i) == Some(&b'}') {
        return end(v, i + 1);
    }
    loop {
        if v.get(i) != Some(&b'"') {
            return Err("value is not valid JSON: expected a key");
        }
        let key_end = string_end(v, i)?;
        let key = &v[i + 1..key_end - 1];
        i = ws(v, key_end);
        if v.get(i) != Some(&b':') {
            return Err("value is not valid JSON: expected ':' after a key");
        }
        let start = ws(v, i + 1);
        let value_end = value_end(v, start)?;
        if let Some(k) = want.iter().position(|w| *w == key) {
            if found[k].is_none() {
                missing -= 1;
            }
            found[k] = Some(&v[start..value_end]);
            if missing == 0 {
                return Ok(());
            }
        }
        i = ws(v, value_end);
        match v.get(i) {
            Some(b',') => i = ws(v, i + 1),
            Some(b'}') => return end(v, i + 1),
            _ => return Err("value is not valid JSON: expected ',' or '}'"),
        }
    }
}

/// The raw text of a whole number, as a number.
pub fn whole(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 19 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(raw.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

fn end(v: &[u8], i: usize) -> Result<(), &'static str> {
    if ws(v, i) == v.len() {
        Ok(())
    } else {
        Err("value is not valid JSON: text after the object")
    }
}

fn ws(v: &[u8], mut i: usize) -> usize {
    while matches!(v.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Where the string starting at `v[i]` (a quote) ends, past its closing quote.
fn string_end(v: &[u8], i: usize) -> Result<usize, &'static str> {
    let mut j = i + 1;
    while let Some(at) = memchr::memchr2(b'"', b'\\', v.get(j..).unwrap_or_default()) {
        if v[j + at] == b'"' {
            return Ok(j + at + 1);
        }
        j += at + 2;
    }
    Err("value is not valid JSON: an unterminated string")
}

/// Where the value starting at `v[i]` ends.
fn value_end(v: &[u8], i: usize) -> Result<usize, &'static str> {
    match v.get(i) {
        Some(b'"') => string_end(v, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < v.len() {
                match v[j] {
                    b'"' => {
                        j = string_end(v, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err("value is not valid JSON: an unclosed object or array")
        }
        Some(_) => {
            let mut j = i;
            while j < v.len() && !matches!(v[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            if j == i {
                Err("value is not valid JSON: a missing value")
            } else {
                Ok(j)
            }
        }
        None => Err("value is not valid JSON: a missing value"),
    }
}
