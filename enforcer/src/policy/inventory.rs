//! The optional CSV inventory: bulk SIM bindings, one row per SIM, checked like policy SIMs.
//!
//! Header row required, columns by name: `imsi,iccid,msisdn,ipv4,ipv6,segment,state` (`iccid`,
//! `msisdn`, `ipv4`/`ipv6` and `state` may be empty). CSV rather than TOML because a fleet of a
//! million SIMs comes from an inventory export, and CSV reads in a fraction of the time and
//! memory.
//!
//! The file is read only if it is a regular file within the size limit (see [`super::source`]).
//! Until its first row names at least one inventory column, nothing of it is quoted in a
//! message: a mistyped path must not print a line of some other file.
//!
//! Three ways through, all giving the same SIMs and the same messages (a test holds them to
//! it): a plain file (ASCII, no quotes, `\n` line ends, no blank or comment lines) whose rows
//! are all valid is checked on two threads and its repeats found by sorting
//! ([`fast::quick`], [`Checker::take_inventory`]); a plain file with a problem is checked row
//! by row from the bytes; anything else goes through the `csv` crate. The file is read whole
//! (it is within the size limit), which the first two need.

use std::{io::Read, path::Path};

use super::{
    Sim,
    error::clip,
    source::{Bounded, open_regular},
    validate::{Checker, Place, SimText},
};

const COLUMNS: [&str; 7] = [
    "imsi", "iccid", "msisdn", "ipv4", "ipv6", "segment", "state",
];
/// Columns every inventory needs: `imsi` and `segment`.
const REQUIRED: [usize; 2] = [0, 5];

/// Read the inventory at `path` (named at `place` in the policy) and append its SIMs.
pub(super) fn read(
    checker: &mut Checker<'_>,
    path: &Path,
    max_bytes: u64,
    place: &Place,
    sims: &mut Vec<Sim>,
) {
    let (file, len) = match open_regular(path, max_bytes) {
        Ok(opened) => opened,
        Err(error) => {
            checker.error(
                place,
                "an unreadable inventory",
                format!("inventory: {error}"),
            );
            return;
        }
    };
    checker.inventory_file = path.display().to_string();
    let mut input = Bounded::new(file, max_bytes);
    // The whole file at once (at most `max_bytes`, checked above; the length is a hint): rows
    // are then checked from the bytes without a copy per field, which is what makes a million
    // rows load in a fraction of a second.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    if let Err(error) = input.read_to_end(&mut bytes) {
        checker.error(
            &Place::Line(0),
            "a bad CSV row",
            format!("row cannot be read: {error}"),
        );
        return;
    }
    read_bytes(checker, &bytes, sims);
    if input.exceeded() {
        checker.error(
            place,
            "an unreadable inventory",
            format!(
                "inventory: {} grew past {max_bytes} bytes while it was read; raise \
                 --max-file-size if it is really that large",
                path.display()
            ),
        );
    }
}

#[cfg(test)]
thread_local! {
    /// Tests set this to read with the `csv` crate only, to compare both paths.
    pub(super) static ONLY_CSV: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Check the rows of an inventory held in `bytes` (already named in `checker.inventory_file`)
/// and append its SIMs: by [`fast::rows`] when the file is plain (ASCII, no quotes, no blank
/// or comment lines, `\n` line ends), as exports from Unix tools are, else by the `csv` crate. Both give the same
/// SIMs and the same messages.
pub(super) fn read_bytes(checker: &mut Checker<'_>, bytes: &[u8], sims: &mut Vec<Sim>) {
    #[cfg(test)]
    if ONLY_CSV.get() {
        read_from(checker, bytes, sims);
        return;
    }
    if !fast::rows(checker, bytes, sims) {
        read_from(checker, bytes, sims);
    }
}

/// Check the rows of an inventory read from `input` with the `csv` crate (already named in
/// `checker.inventory_file`) and append its SIMs: the general path, for files with quotes,
/// non-ASCII text, a byte order mark, `\r\n` line ends, blank lines or comments.
pub(super) fn read_from(checker: &mut Checker<'_>, input: impl Read, sims: &mut Vec<Sim>) {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        // Rows of the wrong length are reported here, with the unclosed quote that usually
        // causes them, rather than as the reader's generic error.
        .flexible(true)
        .from_reader(input);
    let header = Place::Line(1);
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(_) => {
            checker.error(
                &header,
                "a file that is not an inventory",
                not_an_inventory("its first line is not CSV text"),
            );
            return;
        }
    };
    let Some(columns) = columns(checker, &headers) else {
        return;
    };
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line() as usize);
                let what = match error.kind() {
                    csv::ErrorKind::Utf8 { .. } => "is not UTF-8 text".to_owned(),
                    csv::ErrorKind::Io(error) => format!("cannot be read: {error}"),
                    _ => "cannot be read as CSV".to_owned(),
                };
                checker.error(&Place::Line(line), "a bad CSV row", format!("row {what}"));
                if matches!(error.kind(), csv::ErrorKind::Io(_)) {
                    return;
                }
                continue;
            }
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        if let Some(error) = unclosed_quote(&record, &headers, line) {
            checker.error(&Place::Line(error.0), "an unclosed quote", error.1);
            continue;
        }
        let fields: Vec<&str> = record.iter().collect();
        check_row(checker, &columns, headers.len(), &fields, line, sims);
    }
}

/// Check one row (its trimmed `fields`, on `line`) against a header of `width` columns placed
/// as `columns`, and append its SIM if it is valid.
fn check_row(
    checker: &mut Checker<'_>,
    columns: &[Option<usize>; 7],
    width: usize,
    fields: &[&str],
    line: usize,
    sims: &mut Vec<Sim>,
) {
    if fields.len() != width {
        checker.error(
            &Place::Line(line),
            "a row of the wrong length",
            format!(
                "row has {} fields but the header has {width}; give every column, empty if \
                 unknown",
                fields.len(),
            ),
        );
        return;
    }
    let sim = sim_text(columns, fields, line);
    sims.extend(checker.sim(&sim));
}

/// Where each known column stands in the header, or `None` after reporting what is wrong with
/// it: an unknown, repeated or missing column, each named.
fn columns(checker: &mut Checker<'_>, headers: &csv::StringRecord) -> Option<[Option<usize>; 7]> {
    let header = Place::Line(1);
    if !headers.iter().any(|h| COLUMNS.contains(&h)) {
        // Not an inventory header: say so without quoting the line (it may be a password file).
        checker.error(
            &header,
            "a file that is not an inventory",
            not_an_inventory("its first line names none of the inventory columns"),
        );
        return None;
    }
    let mut positions = [None; 7];
    let mut ok = true;
    for (index, name) in headers.iter().enumerate() {
        match COLUMNS.iter().position(|c| *c == name) {
            None => {
                checker.error(
                    &header,
                    "an unknown column",
                    format!(
                        "unknown column `{}` (column {}); the columns are {}",
                        clip(name),
                        index + 1,
                        COLUMNS.join(",")
                    ),
                );
                ok = false;
            }
            Some(known) => match positions[known] {
                Some(first) => {
                    checker.error(
                        &header,
                        "a repeated column",
                        format!(
                            "column `{name}` appears twice (columns {} and {}); keep one, or \
                             one of the two values would be lost",
                            first + 1,
                            index + 1
                        ),
                    );
                    ok = false;
                }
                None => positions[known] = Some(index),
            },
        }
    }
    for required in REQUIRED {
        if positions[required].is_none() {
            checker.error(
                &header,
                "a missing column",
                format!(
                    "the header has no `{}` column; every inventory needs `imsi` and `segment`",
                    COLUMNS[required]
                ),
            );
            ok = false;
        }
    }
    ok.then_some(positions)
}

fn not_an_inventory(why: &str) -> String {
    format!(
        "not an inventory: {why}; the first line must name the columns (at least imsi and \
         segment) from {} (the file's content is not shown)",
        COLUMNS.join(",")
    )
}

/// A field that spans lines: inventory values never hold a line break, so a quote was opened
/// and not closed on its line, and the reader took the following lines into the field. Returns
/// the line the quote opened on and the message.
fn unclosed_quote(
    record: &csv::StringRecord,
    headers: &csv::StringRecord,
    line: usize,
) -> Option<(usize, String)> {
    let mut at = line;
    for (index, field) in record.iter().enumerate() {
        if let Some(offset) = field.find(['\n', '\r']) {
            let column = headers.get(index).map_or_else(
                || format!("field {}", index + 1),
                |h| format!("column `{h}`"),
            );
            let swallowed = field.matches('\n').count();
            return Some((
                at,
                format!(
                    "a quote opened in {column} on line {at} is not closed on that line (the \
                     field runs on over {swallowed} more line(s), starting `{}`); close the \
                     quote or remove it",
                    clip(&field[..offset])
                ),
            ));
        }
        at += field.matches('\n').count();
    }
    None
}

/// The fields of a row (`fields`, on `line`) by name, empty ones as missing.
fn sim_text<'a>(columns: &[Option<usize>; 7], fields: &[&'a str], line: usize) -> SimText<'a> {
    let cell = |column: Option<usize>| {
        column
            .and_then(|c| fields.get(c))
            .filter(|s| !s.is_empty())
            .map(|s| (*s, Place::Line(line)))
    };
    SimText {
        whole: Place::Line(line),
        invalid: Vec::new(),
        imsi: cell(columns[0]),
        iccid: cell(columns[1]),
        msisdn: cell(columns[2]),
        ipv4: cell(columns[3]),
        ipv6: cell(columns[4]),
        segment: cell(columns[5]),
        state: cell(columns[6]),
        imei_lock: None,
        mode: None,
    }
}

/// The fast path: plain files, split by hand with no allocation per row.
pub(super) mod fast {
    use super::{Checker, Sim, check_row, columns, sim_text};
    use crate::policy::validate::QuickCheck;

    /// Whether the `csv` crate would read `bytes` exactly as [`rows`] does: ASCII only (so no
    /// byte order mark and no Unicode spaces to trim), no quote, and lines ended by `\n` alone
    /// with none empty and none a comment. The csv crate numbers lines oddly once a line is
    /// skipped or ends in `\r\n` (it reports the row after a blank line one line early), so
    /// such files keep its numbering by going to it.
    pub(in crate::policy) fn applies(bytes: &[u8]) -> bool {
        let mut line_start = true;
        for &byte in bytes {
            if byte >= 0x80
                || byte == b'"'
                || byte == b'\r'
                || line_start && matches!(byte, b'\n' | b'#')
            {
                return false;
            }
            line_start = byte == b'\n';
        }
        true
    }

    /// The lines of `text` with their 1-based numbers.
    fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
        text.split_terminator('\n')
            .enumerate()
            .map(|(index, line)| (index + 1, line))
    }

    /// Whitespace as `str::trim` sees it, within ASCII (`\r` and `\n` cannot occur here).
    fn trim(field: &str) -> &str {
        field.trim_matches(|c: char| matches!(c, '\t' | '\x0b' | '\x0c' | ' '))
    }

    /// Put the trimmed fields of `row` in `fields` (emptied first). A byte loop: splitting
    /// on a `char` pattern searched for each comma anew.
    fn split<'a>(row: &'a str, fields: &mut Vec<&'a str>) {
        fields.clear();
        let mut start = 0;
        for (at, &byte) in row.as_bytes().iter().enumerate() {
            if byte == b',' {
                fields.push(trim(&row[start..at]));
                start = at + 1;
            }
        }
        fields.push(trim(&row[start..]));
    }

    /// Whether `line` (without its `\n`) is one that [`applies`] accepts.
    fn plain(line: &[u8]) -> bool {
        // No short cut, so that the loop vectorises.
        let odd = line.iter().fold(false, |odd, &b| {
            odd | (b >= 0x80) | (b == b'"') | (b == b'\r')
        });
        !odd && line.first().is_some_and(|&b| b != b'#')
    }

    /// Check every row of `bytes` as `read_from` would, if [`applies`] accepts it; false,
    /// having done nothing, if not.
    pub(super) fn rows(checker: &mut Checker<'_>, bytes: &[u8], sims: &mut Vec<Sim>) -> bool {
        let (header, body) = match bytes.iter().position(|&b| b == b'\n') {
            Some(end) => (&bytes[..end], &bytes[end + 1..]),
            None => (bytes, &[][..]),
        };
        if !plain(header) {
            return false;
        }
        let Ok(header) = std::str::from_utf8(header) else {
            return false;
        };
        // The csv crate reads a plain first line the same whatever follows it.
        let headers: csv::StringRecord = header.split(',').map(trim).collect();
        let Some(columns) = columns(checker, &headers) else {
            return true;
        };
        let width = headers.len();
        // Every row plain and valid and no repeats, as in nearly every file loaded: taken
        // whole. The rows check their own plainness, on two threads.
        if let Some(rows) = quick(&checker.quick_check(), body, &columns, width)
            && checker.take_inventory(rows, sims).is_ok()
        {
            return true;
        }
        if !applies(bytes) {
            return false;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return false;
        };
        // Row by row, which says what is wrong where.
        let rows = bytes.iter().filter(|b| **b == b'\n').count();
        checker.reserve(rows);
        sims.reserve(rows);
        let mut fields: Vec<&str> = Vec::with_capacity(width + 1);
        for (line, record) in lines(text).skip(1) {
            split(record, &mut fields);
            check_row(checker, &columns, width, &fields, line, sims);
        }
        true
    }

    /// Below this many bytes of rows, one thread checks them all.
    const SPLIT_BYTES: usize = 1 << 20;

    /// The SIMs of rows `body` (the lines after the header) if every row passes
    /// [`QuickCheck::sim`]; on two threads for a large file, split at a line end.
    pub(super) fn quick(
        check: &QuickCheck<'_>,
        body: &[u8],
        columns: &[Option<usize>; 7],
        width: usize,
    ) -> Option<Vec<Sim>> {
        let split = (body.len() >= SPLIT_BYTES)
            .then(|| body[body.len() / 2..].iter().position(|&b| b == b'\n'))
            .flatten()
            .map_or(body.len(), |at| body.len() / 2 + at + 1);
        let (first, second) = body.split_at(split);
        if second.is_empty() {
            return quick_rows(check, first, columns, width);
        }
        let mut sims = std::thread::scope(|scope| {
            let second = scope.spawn(|| quick_rows(check, second, columns, width));
            let first = quick_rows(check, first, columns, width);
            // A panic in the thread is a bug; then the rows are checked one by one.
            let second = second.join().ok().flatten();
            first.zip(second)
        })
        .map(|(mut first, second)| {
            first.extend(second);
            first
        })?;
        sims.shrink_to_fit();
        Some(sims)
    }

    /// The SIMs of the lines of `rows`, if each is plain and passes [`QuickCheck::sim`].
    fn quick_rows(
        check: &QuickCheck<'_>,
        rows: &[u8],
        columns: &[Option<usize>; 7],
        width: usize,
    ) -> Option<Vec<Sim>> {
        // About 40 bytes a row in a typical export; a hint only.
        let mut sims = Vec::with_capacity(rows.len() / 40 + 1);
        let rows = rows.strip_suffix(b"\n").unwrap_or(rows);
        if rows.is_empty() {
            return Some(sims);
        }
        let mut fields: Vec<&str> = Vec::with_capacity(width + 1);
        for row in rows.split(|&b| b == b'\n') {
            if !plain(row) {
                return None;
            }
            let row = std::str::from_utf8(row).ok()?;
            split(row, &mut fields);
            if fields.len() != width {
                return None;
            }
            sims.push(check.sim(&sim_text(columns, &fields, 0))?);
        }
        Some(sims)
    }
}
