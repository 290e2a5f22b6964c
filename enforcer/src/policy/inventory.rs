//! The optional CSV inventory: bulk SIM bindings, one row per SIM, checked like policy SIMs.
//!
//! Header row required, columns by name: `imsi,iccid,msisdn,ipv4,ipv6,segment,state` (`iccid`,
//! `msisdn`, `ipv4`/`ipv6` and `state` may be empty). CSV rather than TOML because a fleet of a
//! million SIMs comes from an inventory export, and CSV reads in a fraction of the time and
//! memory.

use std::path::Path;

use super::{
    Sim,
    error::SourceMap,
    validate::{Checker, Place, SimText},
};

const COLUMNS: [&str; 7] = [
    "imsi", "iccid", "msisdn", "ipv4", "ipv6", "segment", "state",
];

/// Read the inventory at `path` (named at `place` in the policy) and append its SIMs.
pub(super) fn read(checker: &mut Checker<'_>, path: &Path, place: &Place, sims: &mut Vec<Sim>) {
    // Streamed from the file: a million rows need not sit in memory as text. Rows are named by
    // line only, so the source map needs no text.
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => {
            checker.error(
                place,
                format!("cannot read inventory {}: {error}; check the path (relative to the policy file)", path.display()),
            );
            return;
        }
    };
    let source = SourceMap::new(path, "");
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(std::io::BufReader::with_capacity(1 << 16, file));
    let columns = match reader.headers() {
        Ok(headers) => {
            let position = |name| headers.iter().position(|h| h == name);
            let unknown: Vec<&str> = headers.iter().filter(|h| !COLUMNS.contains(h)).collect();
            if !unknown.is_empty() {
                checker.error_in(
                    &source,
                    1,
                    format!(
                        "unknown column(s) {}; expected {}",
                        unknown.join(", "),
                        COLUMNS.join(",")
                    ),
                );
                return;
            }
            COLUMNS.map(position)
        }
        Err(error) => {
            checker.error_in(&source, 1, format!("cannot read the header row: {error}"));
            return;
        }
    };
    if columns[0].is_none() || columns[5].is_none() {
        checker.error_in(
            &source,
            1,
            "the header row needs at least `imsi` and `segment`".into(),
        );
        return;
    }
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line() as usize);
                checker.error_in(&source, line, format!("bad CSV row: {error}"));
                continue;
            }
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        let cell = |column: Option<usize>| {
            column
                .and_then(|c| record.get(c))
                .filter(|s| !s.is_empty())
                .map(|s| (s, Place::Line(line)))
        };
        let sim = SimText {
            whole: Place::Line(line),
            invalid: Vec::new(),
            imsi: cell(columns[0]),
            iccid: cell(columns[1]),
            msisdn: cell(columns[2]),
            ipv4: cell(columns[3]),
            ipv6: cell(columns[4]),
            segment: cell(columns[5]),
            state: cell(columns[6]),
        };
        let errors_before = checker.errors.len();
        let checked = checker.sim(&sim);
        // Errors of a row belong to the inventory file, not the policy.
        for error in &mut checker.errors[errors_before..] {
            error.file = source.file().to_owned();
        }
        sims.extend(checked);
    }
}
