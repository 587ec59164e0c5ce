//! The table of a lookup join in memory: a hash map from key bytes to the row, kept already
//! written as a JSON object, so enriching a record is one look-up and one copy. Read from CSV
//! (RFC 4180, a header line naming the columns) or JSON lines (one object per line).

use std::collections::HashMap;

use super::config::TableFormat;
use super::scan::scan;

/// The hasher of the table: fixed, fast on short keys.
type Fast = foldhash::fast::FixedState;

/// One version of a table: every row by its key.
#[derive(Debug, Default)]
pub struct Table {
    rows: HashMap<Box<[u8]>, Box<[u8]>, Fast>,
    row_bytes: usize,
    /// Rows whose key an earlier row had (the last row of a key wins).
    pub duplicates: usize,
    /// The line of the first such row.
    pub first_duplicate: Option<u64>,
}

impl Table {
    /// The row of `key`, as a JSON object's text.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.rows.get(key).map(|r| &r[..])
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it has no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The mean length of a row's JSON text, to size output buffers.
    pub fn mean_row(&self) -> usize {
        self.row_bytes.checked_div(self.rows.len()).unwrap_or(0)
    }

    /// Reads a table from the file's bytes, keyed by column or field `key`. The error says the
    /// line (from 1) and what is wrong with it.
    pub fn parse(bytes: &[u8], format: TableFormat, key: &str) -> Result<Table, String> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        match format {
            TableFormat::Csv => parse_csv(bytes, key),
            TableFormat::Jsonl => parse_jsonl(bytes, key),
        }
    }

    fn insert(&mut self, key: &[u8], row: Box<[u8]>, line: u64) {
        self.row_bytes += row.len();
        if let Some(old) = self.rows.insert(key.into(), row) {
            self.row_bytes -= old.len();
            self.duplicates += 1;
            self.first_duplicate.get_or_insert(line);
        }
    }
}

/// CSV: the header line names the columns; each row becomes `{"column": "value", …}` with
/// every value a string, as written (CSV has no types: a zip code `01234` stays `"01234"`).
fn parse_csv(bytes: &[u8], key: &str) -> Result<Table, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let headers = reader.headers().map_err(csv_error)?.clone();
    if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
        return Err("line 1: no header line; the first line must name the columns".to_owned());
    }
    for (i, name) in headers.iter().enumerate() {
        if headers.iter().skip(i + 1).any(|n| n == name) {
            return Err(format!("line 1: column {name:?} is named twice"));
        }
    }
    let Some(key_at) = headers.iter().position(|h| h == key) else {
        return Err(format!(
            "line 1: no column {key:?} (the `table-key`); the columns are: {}",
            headers.iter().collect::<Vec<_>>().join(", ")
        ));
    };
    // Each column's `"name":`, written once.
    let names: Vec<Vec<u8>> = headers
        .iter()
        .map(|h| {
            let mut n = serde_json::to_vec(h).unwrap_or_default();
            n.push(b':');
            n
        })
        .collect();
    let mut table = Table::default();
    let mut record = csv::StringRecord::new();
    let mut row = Vec::new();
    while reader.read_record(&mut record).map_err(csv_error)? {
        let line = record.position().map_or(0, |p| p.line());
        row.clear();
        row.push(b'{');
        for (i, (name, field)) in names.iter().zip(record.iter()).enumerate() {
            if i > 0 {
                row.push(b',');
            }
            row.extend_from_slice(name);
            serde_json::to_writer(&mut row, field).map_err(|e| format!("line {line}: {e}"))?;
        }
        row.push(b'}');
        table.insert(record[key_at].as_bytes(), row.as_slice().into(), line);
    }
    Ok(table)
}

/// A CSV reader's error, with its line first.
fn csv_error(e: csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos: Some(pos),
            expected_len,
            len,
        } => format!(
            "line {}: {len} fields, but the header line has {expected_len}",
            pos.line()
        ),
        csv::ErrorKind::Utf8 {
            pos: Some(pos),
            err,
        } => format!(
            "line {}: field {} is not UTF-8 ({err})",
            pos.line(),
            err.field() + 1
        ),
        _ => match e.position() {
            Some(pos) => format!("line {}: {e}", pos.line()),
            None => e.to_string(),
        },
    }
}

/// JSON lines: each line that is not blank is one JSON object, kept as written; its member
/// `key` (a string, number or boolean) is its key.
fn parse_jsonl(bytes: &[u8], key: &str) -> Result<Table, String> {
    let mut table = Table::default();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = n as u64 + 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let found = scan(text, Some(key), None)
            .map_err(|e| format!("line {line_no}: not a JSON object ({e})"))?;
        let Some(k) = found.key else {
            return Err(format!(
                "line {line_no}: no field {key:?} (the `table-key`), or it is null, an object or an array; a key is a string, number or boolean"
            ));
        };
        table.insert(&k, text.into(), line_no);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: &Table, key: &str) -> Option<serde_json::Value> {
        t.get(key.as_bytes())
            .map(|r| serde_json::from_slice(r).unwrap())
    }

    #[test]
    fn csv_follows_rfc_4180_quoting_and_keeps_values_as_strings() {
        let text = "id,name,note\r\n\
                    1,\"Smith, Jane\",\"said \"\"hi\"\"\"\r\n\
                    2,Bob,\"two\nlines\"\r\n\
                    007,,plain\n";
        let t = Table::parse(text.as_bytes(), TableFormat::Csv, "id").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            row(&t, "1").unwrap(),
            serde_json::json!({"id": "1", "name": "Smith, Jane", "note": "said \"hi\""})
        );
        assert_eq!(row(&t, "2").unwrap()["note"], "two\nlines");
        assert_eq!(
            row(&t, "007").unwrap(),
            serde_json::json!({"id": "007", "name": "", "note": "plain"})
        );
        assert_eq!(row(&t, "7"), None, "keys are text: 007 is not 7");
        let with_key_later = Table::parse(b"name,id\nx,9\n", TableFormat::Csv, "id").unwrap();
        assert_eq!(row(&with_key_later, "9").unwrap()["name"], "x");
    }

    #[test]
    fn a_malformed_csv_is_refused_with_its_line_and_problem() {
        for (text, expect) in [
            (
                "id,name\n1,a\n2,b,c\n",
                "line 3: 3 fields, but the header line has 2",
            ),
            ("name\nx\n", "line 1: no column \"id\""),
            ("", "line 1: no header line"),
            ("id,id\n1,2\n", "named twice"),
        ] {
            let msg = Table::parse(text.as_bytes(), TableFormat::Csv, "id").unwrap_err();
            assert!(msg.contains(expect), "{text:?}: {msg}");
        }
        let msg = Table::parse(b"id,n\n1,\xff\n", TableFormat::Csv, "id").unwrap_err();
        assert!(msg.starts_with("line 2:") && msg.contains("UTF-8"), "{msg}");
    }

    #[test]
    fn json_lines_key_by_a_field_and_keep_each_object_as_written() {
        let text = "{\"id\":\"a\",\"n\":1,\"tags\":[\"x\"]}\n\n  {\"n\":2.5,\"id\":7}  \r\n{\"id\":true}\n";
        let t = Table::parse(text.as_bytes(), TableFormat::Jsonl, "id").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(b"a").unwrap(), br#"{"id":"a","n":1,"tags":["x"]}"#);
        assert_eq!(t.get(b"7").unwrap(), br#"{"n":2.5,"id":7}"#);
        assert!(t.get(b"true").is_some());
        for (text, expect) in [
            ("{\"id\":1}\n[1,2]\n", "line 2: not a JSON object"),
            ("{\"id\":1}\n{\"id\":\n", "line 2: not a JSON object"),
            ("{\"x\":1}\n", "line 1: no field \"id\""),
            ("{\"id\":null}\n", "line 1: no field \"id\""),
        ] {
            let msg = Table::parse(text.as_bytes(), TableFormat::Jsonl, "id").unwrap_err();
            assert!(msg.contains(expect), "{text:?}: {msg}");
        }
    }

    #[test]
    fn a_duplicate_key_keeps_the_last_row_and_is_counted() {
        let t = Table::parse(b"id,v\n1,a\n2,b\n1,c\n1,d\n", TableFormat::Csv, "id").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(row(&t, "1").unwrap()["v"], "d");
        assert_eq!((t.duplicates, t.first_duplicate), (2, Some(4)));
    }
}
