//! Reading the backfill file: lines with their numbers, each parsed into a [`AccountEvent`] or a
//! reason to reject it, on a thread of its own that hands batches to the run loop through a
//! bounded channel (so the file is read lazily, as fast as the windows are resolved, with bounded
//! memory).
//!
//! Formats:
//! - JSON Lines: each line is a JSON object, decoded by the worker's [`Decoder`] (the same
//!   pointers, the same checks).
//! - CSV: RFC 4180 with a header line naming the columns; fields may be quoted (`"Smith, John"`,
//!   `""` for a quote inside). One record a line: a line break inside a quoted field is not
//!   supported (the line is rejected as an unterminated quoted field).
//! - plain: one UserID a line (the worker's plain decoder: surrounding whitespace trimmed).
//!
//! Everywhere: lines are numbered from 1; a trailing `\r` is dropped; a UTF-8 byte order mark
//! before line 1 is ignored; blank lines are skipped; a line over [`MAX_PAYLOAD_BYTES`] is rejected
//! without being held in memory.

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::path::Path;

use clap::ValueEnum;
use tokio::sync::mpsc;

use crate::domain::EventKind;
use crate::worker::event::{AccountEvent, Decoded, Decoder, MAX_PAYLOAD_BYTES};

/// Lines handed to the run loop at once.
pub(crate) const BATCH: usize = 512;
/// Bytes of a rejected line kept in its reject record.
const REJECT_TEXT_BYTES: usize = 200;

/// Layout of the backfill file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// JSON Lines: one JSON object a line, fields found by the JSON pointers.
    Jsonl,
    /// CSV with a header line; columns chosen by --csv-*-column.
    Csv,
    /// One UserID a line.
    Plain,
}

impl FileFormat {
    /// The format a file name implies: `.jsonl`, `.ndjson`, `.json` → JSON Lines, `.csv` → CSV,
    /// anything else → plain (case-insensitive).
    pub fn from_extension(path: &Path) -> FileFormat {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("jsonl" | "ndjson" | "json") => FileFormat::Jsonl,
            Some("csv") => FileFormat::Csv,
            _ => FileFormat::Plain,
        }
    }

    /// The `--format` value.
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Jsonl => "jsonl",
            FileFormat::Csv => "csv",
            FileFormat::Plain => "plain",
        }
    }
}

/// What one line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An account to make sure of.
    User(AccountEvent),
    /// Nothing to do: a blank line, or the CSV header.
    Skip,
    /// A bad line, and why.
    Reject {
        /// The reason (the dead-letter reason the worker would give, where it has one).
        reason: String,
        /// The start of the line (at most 200 bytes, lossily UTF-8), to find it by eye.
        text: String,
    },
}

/// One numbered line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    /// Line number, from 1.
    pub line: u64,
    /// What it holds.
    pub parsed: Parsed,
}

/// Which CSV columns hold the fields, by their index in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvIndex {
    /// Fields the header has.
    pub fields: usize,
    /// The UserID column.
    pub user_id: usize,
    /// The Nick column, if any.
    pub nick: Option<usize>,
    /// The FaceUrl column, if any.
    pub face_url: Option<usize>,
    /// What every line asks (`--event-kind`).
    pub kind: EventKind,
}

/// The CSV column names asked for (`--csv-*-column`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvColumns {
    /// Column of the UserID (required).
    pub user_id: String,
    /// Column of the Nick; `(name, given)`: a column given explicitly must exist, the default
    /// `Nick` is used when the header has it.
    pub nick: (String, bool),
    /// Column of the FaceUrl, as `nick`.
    pub face_url: (String, bool),
    /// What every line asks (`--event-kind`; a delete only with `--apply-deletes`, checked
    /// before).
    pub kind: EventKind,
}

impl CsvColumns {
    /// Finds the columns in the header line; an error names the flag and lists the header.
    pub fn index(&self, header: &str) -> Result<CsvIndex, String> {
        let names = split_csv_line(header).map_err(|e| format!("the CSV header (line 1): {e}"))?;
        let find = |name: &str| names.iter().position(|n| n.trim() == name);
        let listed = || {
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let user_id = find(&self.user_id).ok_or_else(|| {
            format!(
                "--csv-user-id-column {:?}: the CSV header (line 1) has no such column; it has {}",
                self.user_id,
                listed()
            )
        })?;
        let optional = |flag: &str, (name, given): &(String, bool)| match find(name) {
            Some(i) => Ok(Some(i)),
            None if *given => Err(format!(
                "{flag} {name:?}: the CSV header (line 1) has no such column; it has {}",
                listed()
            )),
            None => Ok(None),
        };
        Ok(CsvIndex {
            fields: names.len(),
            user_id,
            nick: optional("--csv-nick-column", &self.nick)?,
            face_url: optional("--csv-face-url-column", &self.face_url)?,
            kind: self.kind,
        })
    }
}

/// Why a CSV line could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// A quoted field without its closing quote.
    #[error("field {0} has an opening quote but no closing one (a line break inside a quoted field is not supported)")]
    Unterminated(usize),
    /// Something other than a comma after a closing quote.
    #[error("field {0} has characters after its closing quote")]
    AfterQuote(usize),
    /// A quote inside an unquoted field.
    #[error(
        "field {0} has a quote but is not quoted (write it as \"...\" with the quote doubled)"
    )]
    StrayQuote(usize),
}

/// Splits one CSV line (RFC 4180, without the line break) into its fields: fields are separated
/// by commas; a field starting with a quote is quoted, runs to the next lone quote, and `""`
/// inside it is a quote. Fields are numbered from 1 in errors.
pub fn split_csv_line(line: &str) -> Result<Vec<Cow<'_, str>>, CsvError> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let n = fields.len() + 1;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut tail = quoted;
            loop {
                let Some(i) = tail.find('"') else {
                    return Err(CsvError::Unterminated(n));
                };
                value.push_str(&tail[..i]);
                tail = &tail[i + 1..];
                match tail.strip_prefix('"') {
                    // A doubled quote: one quote in the value, the field goes on.
                    Some(t) => {
                        value.push('"');
                        tail = t;
                    }
                    None => break,
                }
            }
            fields.push(Cow::Owned(value));
            match tail.strip_prefix(',') {
                Some(t) => rest = t,
                None if tail.is_empty() => return Ok(fields),
                None => return Err(CsvError::AfterQuote(n)),
            }
        } else {
            let (field, tail) = match rest.find(',') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            if field.contains('"') {
                return Err(CsvError::StrayQuote(n));
            }
            fields.push(Cow::Borrowed(field));
            match tail {
                Some(t) => rest = t,
                None => return Ok(fields),
            }
        }
    }
}

/// Turns a line into [`Parsed`], by format.
#[derive(Debug, Clone)]
pub enum LineParser {
    /// JSON Lines, or plain (the decoder's format says which). Boxed: the decoder, with its
    /// event kinds, is five times the CSV index.
    Decoder(Box<Decoder>),
    /// CSV rows, with the columns found in the header.
    Csv(CsvIndex),
}

impl LineParser {
    /// Parses one line (without its line break and `\r`).
    pub fn parse(&self, line: &[u8]) -> Parsed {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Parsed::Skip;
        }
        let event = match self {
            LineParser::Decoder(d) => match d.decode_record(Some(line)) {
                Ok(Decoded::Event(e)) => Ok(e),
                // A typed delete without --apply-deletes, an event type in no list.
                Ok(Decoded::Skipped(_)) => return Parsed::Skip,
                Ok(Decoded::AwaitsSchema(_)) => unreachable!("backfill files have no registry"),
                Err(e) => Err(e.to_string()),
            },
            LineParser::Csv(index) => csv_event(index, line),
        };
        match event {
            Ok(e) => Parsed::User(e),
            Err(reason) => reject(reason, line),
        }
    }
}

fn csv_event(index: &CsvIndex, line: &[u8]) -> Result<AccountEvent, String> {
    let text = std::str::from_utf8(line).map_err(|_| "line is not valid UTF-8".to_owned())?;
    let fields = split_csv_line(text).map_err(|e| e.to_string())?;
    if fields.len() != index.fields {
        return Err(format!(
            "the line has {} fields, the header has {}",
            fields.len(),
            index.fields
        ));
    }
    let field = |i: Option<usize>| i.map(|i| fields[i].as_ref());
    AccountEvent::from_fields(
        &fields[index.user_id],
        field(index.nick),
        field(index.face_url),
        index.kind,
    )
    .map_err(|e| e.to_string())
}

fn reject(reason: String, line: &[u8]) -> Parsed {
    let mut end = line.len().min(REJECT_TEXT_BYTES);
    let text = loop {
        // Cut at a character boundary where the line is UTF-8; lossily otherwise.
        match std::str::from_utf8(&line[..end]) {
            Ok(s) => break s.to_owned(),
            Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => end = e.valid_up_to(),
            Err(_) => break String::from_utf8_lossy(&line[..end]).into_owned(),
        }
    };
    Parsed::Reject { reason, text }
}

/// Reads the next line into `buf` (without `\n` and a trailing `\r`), keeping at most `cap`
/// bytes. `None` at the end of the input; `Some(true)` when the line was longer than `cap` (then
/// `buf` is empty: the line was skipped, never held whole).
pub fn next_line(r: &mut impl BufRead, buf: &mut Vec<u8>, cap: usize) -> io::Result<Option<bool>> {
    buf.clear();
    let (mut over, mut any) = (false, false);
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            break;
        }
        any = true;
        let newline = avail.iter().position(|&b| b == b'\n');
        let chunk = &avail[..newline.unwrap_or(avail.len())];
        if !over {
            // One byte of slack for a `\r` dropped below.
            if buf.len() + chunk.len() > cap + 1 {
                over = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(avail.len(), |i| i + 1);
        r.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > cap {
        over = true;
        buf.clear();
    }
    Ok(Some(over))
}

/// Lines in a file, as the reader numbers them: line breaks, plus a last line without one.
pub fn count_lines(mut r: impl io::Read) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}

/// Removes a UTF-8 byte order mark from the start of line 1.
pub fn strip_bom(line: &mut Vec<u8>) {
    if line.starts_with(b"\xEF\xBB\xBF") {
        line.drain(..3);
    }
}

/// The input positioned at its first line to read, and how to parse it.
pub struct OpenInput {
    /// The rest of the input.
    pub reader: Box<dyn BufRead + Send>,
    /// The parser (for CSV, with the header's columns).
    pub parser: LineParser,
    /// Number of the next line `reader` gives (2 after a CSV header, else 1).
    pub next_line: u64,
}

/// Where the reader stopped.
#[derive(Debug)]
pub enum ReadEnd {
    /// The end of the input: this many lines in all.
    Eof(u64),
    /// The run loop hung up (stopping).
    Closed,
}

/// Reads `input` to its end on the calling (blocking) thread: lines up to `done_through` are
/// skipped without being parsed (an earlier run did them), the others are parsed and sent in
/// batches. A header line already read counts as line 1.
pub fn read_lines(
    input: OpenInput,
    done_through: u64,
    tx: mpsc::Sender<Vec<LineItem>>,
) -> io::Result<ReadEnd> {
    let OpenInput {
        mut reader,
        parser,
        next_line: mut line,
    } = input;
    let mut buf = Vec::with_capacity(1024);
    let mut batch = Vec::with_capacity(BATCH);
    if line == 2 && done_through == 0 {
        batch.push(LineItem {
            line: 1,
            parsed: Parsed::Skip,
        });
    }
    loop {
        let skipping = line <= done_through;
        let cap = if skipping { 0 } else { MAX_PAYLOAD_BYTES };
        let Some(over) = next_line(&mut reader, &mut buf, cap)? else {
            break;
        };
        if !skipping {
            if line == 1 {
                strip_bom(&mut buf);
            }
            let parsed = if over {
                Parsed::Reject {
                    reason: format!("line is over the {MAX_PAYLOAD_BYTES}-byte limit"),
                    text: String::new(),
                }
            } else {
                parser.parse(&buf)
            };
            batch.push(LineItem { line, parsed });
            if batch.len() >= BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.blocking_send(full).is_err() {
                    return Ok(ReadEnd::Closed);
                }
            }
        }
        line += 1;
    }
    if !batch.is_empty() && tx.blocking_send(batch).is_err() {
        return Ok(ReadEnd::Closed);
    }
    Ok(ReadEnd::Eof(line - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::event::InputFormat;

    fn fields(line: &str) -> Vec<String> {
        split_csv_line(line)
            .unwrap()
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    #[test]
    fn csv_fields_follow_rfc_4180() {
        assert_eq!(fields("a,b,c"), ["a", "b", "c"]);
        assert_eq!(fields(r#"u1,"Smith, John",x"#), ["u1", "Smith, John", "x"]);
        assert_eq!(fields(r#""say ""hi""",2"#), [r#"say "hi""#, "2"]);
        assert_eq!(fields(r#""""#), [""]);
        assert_eq!(fields("a,,"), ["a", "", ""]);
        assert_eq!(fields(""), [""]);
        assert_eq!(fields(r#"a,"""#), ["a", ""]);
        assert_eq!(fields(r#""a,b""#), ["a,b"]);
        assert_eq!(
            split_csv_line(r#"a,"open"#).unwrap_err(),
            CsvError::Unterminated(2)
        );
        assert_eq!(
            split_csv_line(r#""a"b,c"#).unwrap_err(),
            CsvError::AfterQuote(1)
        );
        assert_eq!(
            split_csv_line(r#"a,b"c"#).unwrap_err(),
            CsvError::StrayQuote(2)
        );
    }

    fn columns() -> CsvColumns {
        CsvColumns {
            kind: EventKind::Create,
            user_id: "UserID".into(),
            nick: ("Nick".into(), false),
            face_url: ("FaceUrl".into(), false),
        }
    }

    #[test]
    fn csv_header_names_the_columns() {
        let i = columns().index("Email,UserID,Nick").unwrap();
        assert_eq!(
            i,
            CsvIndex {
                fields: 3,
                user_id: 1,
                nick: Some(2),
                face_url: None,
                kind: EventKind::Create,
            }
        );
        let e = columns().index("Email,Nick").unwrap_err();
        assert!(
            e.contains("--csv-user-id-column") && e.contains("\"Email\""),
            "{e}"
        );
        let mut c = columns();
        c.face_url = ("Avatar".into(), true);
        let e = c.index("UserID,Nick").unwrap_err();
        assert!(e.contains("--csv-face-url-column \"Avatar\""), "{e}");
    }

    #[test]
    fn csv_rows_become_events_or_rejects() {
        let p = LineParser::Csv(columns().index("UserID,Nick,FaceUrl").unwrap());
        assert_eq!(
            p.parse(br#"u1,"Smith, John","#),
            Parsed::User(AccountEvent {
                user_id: "u1".into(),
                nick: Some("Smith, John".into()),
                face_url: None,
                kind: EventKind::Create,
            })
        );
        let reason = |line: &[u8]| match p.parse(line) {
            Parsed::Reject { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason(b"u1,a").contains("2 fields, the header has 3"));
        assert!(reason(b"bad id,a,b").contains("characters outside"));
        assert!(reason(b",a,b").contains("empty"));
        assert!(reason(br#"u1,"a,b"#).contains("no closing one"));
        assert!(reason(b"u1,\xff,b").contains("UTF-8"));
        assert_eq!(p.parse(b"  "), Parsed::Skip);
    }

    #[test]
    fn jsonl_and_plain_lines_use_the_worker_decoder() {
        let json = LineParser::Decoder(Box::new(Decoder::json_default()));
        assert_eq!(
            json.parse(br#"{"UserID":"u1","Nick":"N"}"#),
            Parsed::User(AccountEvent {
                user_id: "u1".into(),
                nick: Some("N".into()),
                face_url: None,
                kind: EventKind::Create,
            })
        );
        match json.parse(b"{\"UserID\":") {
            Parsed::Reject { reason, text } => {
                assert!(reason.contains("not valid JSON"), "{reason}");
                assert_eq!(text, "{\"UserID\":");
            }
            other => panic!("{other:?}"),
        }
        let plain = LineParser::Decoder(Box::new(
            Decoder::new(InputFormat::Plain, "/UserID", "/Nick", "/FaceUrl").unwrap(),
        ));
        assert!(matches!(plain.parse(b"  u-2 \t"), Parsed::User(e) if e.user_id == "u-2"));
        assert!(matches!(plain.parse(b"a b"), Parsed::Reject { .. }));
    }

    #[test]
    fn reject_text_is_cut_at_a_character_boundary() {
        let line = "é".repeat(150); // 300 bytes
        match reject("r".into(), line.as_bytes()) {
            Parsed::Reject { text, .. } => assert_eq!(text, "é".repeat(100)),
            other => panic!("{other:?}"),
        }
    }

    fn lines_of(input: &[u8], cap: usize) -> Vec<(String, bool)> {
        let mut r = io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(over) = next_line(&mut r, &mut buf, cap).unwrap() {
            out.push((String::from_utf8(buf.clone()).unwrap(), over));
        }
        out
    }

    #[test]
    fn lines_are_split_capped_and_counted_alike() {
        let input = b"one\r\ntwo\n\nlong-line-here\nlast";
        let got = lines_of(input, 8);
        let want = [
            ("one", false),
            ("two", false),
            ("", false),
            ("", true),
            ("last", false),
        ];
        assert_eq!(got.len(), want.len());
        for ((g, go), (w, wo)) in got.iter().zip(want) {
            assert_eq!((g.as_str(), *go), (w, wo));
        }
        assert_eq!(count_lines(&input[..]).unwrap(), 5);
        assert_eq!(count_lines(&b"a\nb\n"[..]).unwrap(), 2);
        assert_eq!(count_lines(&b""[..]).unwrap(), 0);
        assert_eq!(lines_of(b"a\nb\n", 8).len(), 2);
        // Exactly at the cap, with a \r: kept.
        assert_eq!(
            lines_of(b"12345678\r\n", 8),
            [("12345678".to_owned(), false)]
        );
    }

    /// Reads `text` as plain lines to its end, after `done_through`.
    fn read_all(text: &str, done_through: u64) -> (ReadEnd, Vec<LineItem>) {
        let input = OpenInput {
            reader: Box::new(io::Cursor::new(text.as_bytes().to_vec())),
            parser: LineParser::Decoder(Box::new(
                Decoder::new(InputFormat::Plain, "/UserID", "/Nick", "/FaceUrl").unwrap(),
            )),
            next_line: 1,
        };
        let (tx, mut rx) = mpsc::channel(4);
        let end = std::thread::spawn(move || read_lines(input, done_through, tx))
            .join()
            .unwrap()
            .unwrap();
        let items = std::iter::from_fn(|| rx.try_recv().ok())
            .flatten()
            .collect();
        (end, items)
    }

    #[test]
    fn the_reader_skips_done_lines_and_numbers_the_rest() {
        let text = "\u{feff}u1\nu2\n\nbad id\nu5\n";
        let (end, items) = read_all(text, 1);
        assert!(matches!(end, ReadEnd::Eof(5)));
        let lines: Vec<u64> = items.iter().map(|i| i.line).collect();
        assert_eq!(lines, [2, 3, 4, 5], "line 1 was done by an earlier run");
        assert!(matches!(&items[0].parsed, Parsed::User(e) if e.user_id == "u2"));
        assert_eq!(items[1].parsed, Parsed::Skip);
        assert!(matches!(&items[2].parsed, Parsed::Reject { text, .. } if text == "bad id"));

        // From the start, the byte order mark is not part of line 1.
        let (_, items) = read_all(text, 0);
        assert!(matches!(&items[0].parsed, Parsed::User(e) if e.user_id == "u1"));
    }
}
