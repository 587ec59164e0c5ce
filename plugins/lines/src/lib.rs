//! `lines`: a receiver that reads the text files of the directory granted at guest path `/in`,
//! one record per line.
//!
//! Parameters: `partitions` (default `"1"`): how many partitions to read in parallel.
//! Partition `p` reads, in name order, the regular files whose index among all the files of
//! `/in` sorted by name is `p` modulo `partitions`; the list is taken when the partition is
//! opened, and the files should be complete by then.
//!
//! A record is a line without its `\n` (or `\r\n`); a last line without a newline counts too.
//! The position is `<file name>:<byte offset>` after the last record returned, so a partition
//! reopened there goes on with the next line. A partition returns `end` once it has read its
//! last file; a partition with no files has no position.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sluice_sdk::{BatchBuilder, Error, Params, Poll, Receiver, export_receiver};

/// Where the operator grants the input directory.
pub const IN_DIR: &str = "/in";

/// The plugin: the directory, the partition count and each open partition's place.
#[derive(Debug)]
pub struct Lines {
    dir: PathBuf,
    partitions: u32,
    open: HashMap<u32, Cursor>,
}

/// Where a partition is.
#[derive(Debug)]
struct Cursor {
    files: Vec<String>,
    file: usize,
    offset: u64,
    reader: Option<BufReader<File>>,
    done: bool,
}

impl Lines {
    /// A receiver reading `dir` as `partitions` partitions (at least 1).
    pub fn new(dir: impl Into<PathBuf>, partitions: u32) -> Result<Self, String> {
        if partitions == 0 {
            return Err("parameter `partitions` must be at least 1".to_string());
        }
        Ok(Self {
            dir: dir.into(),
            partitions,
            open: HashMap::new(),
        })
    }

    /// Starts reading `partition` at `position` (`<file>:<offset>`), or at its beginning.
    pub fn open_partition(&mut self, partition: u32, position: Option<&str>) -> Result<(), Error> {
        if partition >= self.partitions {
            return Err(Error::fatal(format!(
                "partition {partition} does not exist: there are {}",
                self.partitions
            )));
        }
        let files = self.files_of(partition)?;
        let (file, offset) = match position {
            None => (0, 0),
            Some(position) => {
                let (name, offset) = position
                    .rsplit_once(':')
                    .and_then(|(name, offset)| Some((name, offset.parse::<u64>().ok()?)))
                    .ok_or_else(|| {
                        Error::fatal(format!("position {position:?} is not <file>:<offset>"))
                    })?;
                let file = files.iter().position(|f| f == name).ok_or_else(|| {
                    Error::fatal(format!(
                        "position {position:?} names a file that partition {partition} does not have"
                    ))
                })?;
                (file, offset)
            }
        };
        let done = files.is_empty();
        self.open.insert(
            partition,
            Cursor {
                files,
                file,
                offset,
                reader: None,
                done,
            },
        );
        Ok(())
    }

    /// Appends up to `max_records` lines (about `max_bytes` bytes) of `partition` to `out`.
    pub fn poll_partition(
        &mut self,
        partition: u32,
        max_records: u32,
        max_bytes: u32,
        out: &mut BatchBuilder,
    ) -> Result<Poll, Error> {
        let dir = &self.dir;
        let cursor = self.open.get_mut(&partition).ok_or_else(|| {
            Error::fatal(format!(
                "partition {partition} was polled before it was opened"
            ))
        })?;
        let mut line = Vec::new();
        while !cursor.done
            && out.len() < max_records as usize
            && (out.is_empty() || out.value_bytes() < max_bytes as usize)
        {
            let path = dir.join(&cursor.files[cursor.file]);
            let reader = match &mut cursor.reader {
                Some(reader) => reader,
                None => {
                    let mut file = File::open(&path).map_err(|e| io_error(e, "open", &path))?;
                    file.seek(SeekFrom::Start(cursor.offset))
                        .map_err(|e| io_error(e, "seek in", &path))?;
                    cursor
                        .reader
                        .insert(BufReader::with_capacity(64 * 1024, file))
                }
            };
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| io_error(e, "read", &path))?;
            if read == 0 {
                if cursor.file + 1 < cursor.files.len() {
                    cursor.file += 1;
                    cursor.offset = 0;
                    cursor.reader = None;
                } else {
                    cursor.done = true;
                }
                continue;
            }
            cursor.offset += read as u64;
            let mut value = line.as_slice();
            if let Some(rest) = value.strip_suffix(b"\n") {
                value = rest.strip_suffix(b"\r").unwrap_or(rest);
            }
            out.push(value);
        }
        Ok(Poll {
            position: cursor
                .files
                .get(cursor.file)
                .map(|name| format!("{name}:{}", cursor.offset)),
            end: cursor.done,
        })
    }

    /// The names of the files `partition` reads, in order.
    fn files_of(&self, partition: u32) -> Result<Vec<String>, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error(e, "list", &self.dir))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(e, "list", &self.dir))?;
            let is_file = entry
                .file_type()
                .map_err(|e| io_error(e, "inspect", &entry.path()))?
                .is_file();
            if !is_file {
                continue;
            }
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(name) => {
                    sluice_sdk::log::warn(&format!("skipping file {name:?}: its name is not UTF-8"))
                }
            }
        }
        names.sort();
        Ok(names
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % u64::from(self.partitions) == u64::from(partition))
            .map(|(_, name)| name)
            .collect())
    }
}

/// Whose fault an I/O error is: a directory or file that is missing or not granted cannot get
/// better by retrying; anything else may.
fn io_error(error: io::Error, action: &str, path: &Path) -> Error {
    let message = format!("cannot {action} {}: {error}", path.display());
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => Error::fatal(format!(
            "{message} (is the directory {IN_DIR} granted to this plugin?)"
        )),
        _ => Error::retryable(message),
    }
}

impl Receiver for Lines {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["partitions"])?;
        Self::new(IN_DIR, params.parse_or("partitions", 1)?)
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn open(&mut self, partition: u32, position: Option<String>) -> Result<(), Error> {
        self.open_partition(partition, position.as_deref())
    }

    fn poll(
        &mut self,
        partition: u32,
        max_records: u32,
        max_bytes: u32,
        out: &mut BatchBuilder,
    ) -> Result<Poll, Error> {
        self.poll_partition(partition, max_records, max_bytes, out)
    }
}

export_receiver!(Lines);

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lines-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("subdir")).unwrap();
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    fn poll(lines: &mut Lines, partition: u32, max: u32) -> (Vec<String>, Poll) {
        let mut out = BatchBuilder::new();
        let poll = lines
            .poll_partition(partition, max, u32::MAX, &mut out)
            .unwrap();
        let batch = out.finish();
        let values = batch
            .records()
            .map(|r| r.value_str().unwrap().to_string())
            .collect();
        (values, poll)
    }

    #[test]
    fn lines_are_read_file_after_file_and_resume_at_the_position() {
        let dir = temp_dir(
            "resume",
            &[("b.txt", "3\n"), ("a.txt", "1\r\n2\n"), ("c.txt", "4\n\n5")],
        );
        let mut lines = Lines::new(&dir, 1).unwrap();
        lines.open_partition(0, None).unwrap();
        let (values, first) = poll(&mut lines, 0, 2);
        assert_eq!(values, ["1", "2"]);
        assert_eq!(first.position.as_deref(), Some("a.txt:5"));
        assert!(!first.end);

        let mut again = Lines::new(&dir, 1).unwrap();
        again.open_partition(0, first.position.as_deref()).unwrap();
        let (values, last) = poll(&mut again, 0, 100);
        assert_eq!(values, ["3", "4", "", "5"]);
        assert!(last.end);
        assert_eq!(last.position.as_deref(), Some("c.txt:4"));

        let mut at_end = Lines::new(&dir, 1).unwrap();
        at_end.open_partition(0, last.position.as_deref()).unwrap();
        let (values, poll) = poll(&mut at_end, 0, 100);
        assert!(values.is_empty() && poll.end);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_are_spread_over_partitions_by_their_sorted_index() {
        let dir = temp_dir("spread", &[("0", "a\n"), ("1", "b\n"), ("2", "c\n")]);
        let mut lines = Lines::new(&dir, 2).unwrap();
        lines.open_partition(0, None).unwrap();
        lines.open_partition(1, None).unwrap();
        assert_eq!(poll(&mut lines, 0, 10).0, ["a", "c"]);
        assert_eq!(poll(&mut lines, 1, 10).0, ["b"]);
        assert!(lines.open_partition(2, None).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_partition_without_files_ends_at_once() {
        let dir = temp_dir("empty", &[]);
        let mut lines = Lines::new(&dir, 1).unwrap();
        lines.open_partition(0, None).unwrap();
        let (values, poll) = poll(&mut lines, 0, 10);
        assert!(values.is_empty() && poll.end && poll.position.is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_parameters_and_positions_are_refused() {
        assert!(
            Lines::init(&Params::from_iter([("partitions", "0")]))
                .unwrap_err()
                .contains("`partitions`")
        );
        assert!(
            Lines::init(&Params::from_iter([("partitions", "x")]))
                .unwrap_err()
                .contains("`partitions`")
        );
        let dir = temp_dir("bad", &[("a", "x\n")]);
        let mut lines = Lines::new(&dir, 1).unwrap();
        assert!(lines.open_partition(0, Some("nope")).is_err());
        assert!(lines.open_partition(0, Some("b:0")).is_err());
        let mut out = BatchBuilder::new();
        assert!(
            Lines::new(&dir, 1)
                .unwrap()
                .poll_partition(0, 1, 1, &mut out)
                .is_err()
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
