//! A backfill file, any bytes, read to its end as `account-sync backfill` reads it, in each
//! format: JSON Lines (default and nested pointers), plain, and CSV (line 1 the header, with the
//! default columns). The first byte says how many lines an earlier run already did (0-3), the
//! rest is the file.
//!
//! Every line is numbered once, in order, as `count_lines` counts them; what a line holds is a
//! valid user, nothing, or a reject with a bounded excerpt of the line; CSV fields that split
//! join back to the same fields.

#![no_main]

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::sync::LazyLock;

use account_sync::backfill::input::{
    count_lines, next_line, read_lines, split_csv_line, strip_bom, CsvColumns, LineItem,
    LineParser, OpenInput, Parsed, ReadEnd,
};
use account_sync::chat::api::is_valid_user_id;
use account_sync::domain::EventKind;
use account_sync::worker::event::{Decoder, InputFormat, MAX_PAYLOAD_BYTES};
use libfuzzer_sys::fuzz_target;
use tokio::sync::mpsc;

static PARSERS: LazyLock<[LineParser; 3]> = LazyLock::new(|| {
    [
        LineParser::Decoder(Box::new(Decoder::json_default())),
        LineParser::Decoder(Box::new(
            Decoder::new(InputFormat::Json, "/user/id", "/user/name", "/avatar").unwrap(),
        )),
        LineParser::Decoder(Box::new(
            Decoder::new(InputFormat::Plain, "/UserID", "/Nick", "/FaceUrl").unwrap(),
        )),
    ]
});

/// Reads `reader` from line `next` on, as the backfill command does.
fn read(
    reader: Box<dyn BufRead + Send>,
    parser: LineParser,
    next: u64,
    done_through: u64,
) -> (u64, Vec<LineItem>) {
    // Room for every batch: the input is a few KiB, a batch is 512 lines.
    let (tx, mut rx) = mpsc::channel(64);
    let input = OpenInput {
        reader,
        parser,
        next_line: next,
    };
    let end = read_lines(input, done_through, tx).unwrap();
    let ReadEnd::Eof(lines) = end else {
        panic!("the receiver never hung up: {end:?}")
    };
    let items = std::iter::from_fn(|| rx.try_recv().ok())
        .flatten()
        .collect();
    (lines, items)
}

fn check_items(lines: u64, items: &[LineItem], done_through: u64) {
    let first = done_through + 1;
    let numbers: Vec<u64> = items.iter().map(|i| i.line).collect();
    let want: Vec<u64> = (first..=lines).collect();
    assert_eq!(
        numbers, want,
        "every line after the done ones, once, in order"
    );
    for item in items {
        match &item.parsed {
            Parsed::User(e) => assert!(is_valid_user_id(&e.user_id), "{:?}", e.user_id),
            Parsed::Skip => {}
            Parsed::Reject { reason, text } => {
                assert!(!reason.is_empty());
                assert!(reason.len() <= 300, "{reason}");
                // 200 bytes of the line, each invalid byte shown as U+FFFD (3 bytes).
                assert!(text.len() <= 3 * 200, "{} bytes of excerpt", text.len());
            }
        }
    }
}

/// Quotes every field, doubling its quotes: the line `split_csv_line` must read back.
fn join_csv(fields: &[Cow<'_, str>]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
        .collect();
    quoted.join(",")
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, file)) = data.split_first() else {
        return;
    };
    let done_through = u64::from(first % 4);
    let total = count_lines(file).unwrap();
    // A tiny buffer, so lines cross buffer refills as in a big file.
    let reader = || -> Box<dyn BufRead + Send> {
        Box::new(io::BufReader::with_capacity(
            7,
            io::Cursor::new(file.to_vec()),
        ))
    };

    for parser in PARSERS.iter() {
        let (lines, items) = read(reader(), parser.clone(), 1, done_through);
        assert_eq!(
            lines, total,
            "the reader and the counter agree on the lines"
        );
        check_items(lines, &items, done_through);
    }

    for line in file.split(|&b| b == b'\n') {
        if let Ok(fields) = std::str::from_utf8(line).map(split_csv_line) {
            let Ok(fields) = fields else { continue };
            let again = join_csv(&fields);
            assert_eq!(split_csv_line(&again).unwrap(), fields, "{again}");
        }
    }

    // CSV: the header first, as `backfill` opens the file.
    let mut r = reader();
    let mut header = Vec::new();
    let Some(false) = next_line(&mut r, &mut header, MAX_PAYLOAD_BYTES).unwrap() else {
        return;
    };
    strip_bom(&mut header);
    let Ok(header) = std::str::from_utf8(&header) else {
        return;
    };
    let columns = CsvColumns {
        user_id: "UserID".into(),
        nick: ("Nick".into(), false),
        face_url: ("FaceUrl".into(), false),
        kind: EventKind::Create,
    };
    let Ok(index) = columns.index(header) else {
        return;
    };
    let (lines, items) = read(r, LineParser::Csv(index), 2, done_through);
    assert_eq!(lines, total);
    check_items(lines, &items, done_through);
    for item in &items {
        if let Parsed::User(e) = &item.parsed {
            assert!(e.nick.as_ref().is_none_or(|n| !n.is_empty()));
        }
    }
});
