//! Policy errors: every one names file, line and column, says what is wrong and what to do.
//!
//! Errors are collected per kind: the first [`ERRORS_PER_KIND`] of a kind in a file are kept,
//! the rest are counted into one closing line (`… and 999,990 more rows with unknown segment
//! `metres``), so a systematic mistake in a million-row inventory stays readable.

use std::{collections::HashMap, fmt, ops::Range, path::Path};

/// How many errors of one kind in one file are shown; the rest are summarised in one line.
pub const ERRORS_PER_KIND: usize = 10;

/// Longest excerpt of a value quoted in a message, in characters.
const CLIP_CHARS: usize = 60;

/// `text` for a message: at most [`CLIP_CHARS`] characters, one line, with `…` when shortened.
pub fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(CLIP_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(CLIP_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// `n` with thousands separators: 999990 → `999,990`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One problem in a policy or inventory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// File the problem is in.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
    /// For a summary line, how many further errors it stands for; 0 for an ordinary error.
    pub more: u64,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in one check; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.count();
        let shortened = if self.0.iter().any(|e| e.more > 0) {
            format!("; at most {ERRORS_PER_KIND} of each kind shown")
        } else {
            String::new()
        };
        writeln!(
            f,
            "the policy is invalid ({} error{}{shortened}); nothing was loaded:",
            thousands(count),
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl PolicyErrors {
    /// Every error found, those summarised included.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.0
            .iter()
            .map(|e| if e.more > 0 { e.more } else { 1 })
            .sum()
    }
}

/// Errors of one kind in one file beyond [`ERRORS_PER_KIND`].
#[derive(Debug)]
struct Tally {
    shown: usize,
    more: u64,
    /// Where the first summarised one was (its summary line stands there).
    first: Option<(usize, usize)>,
    /// Up to three distinct values they were about, and whether there were others.
    subjects: Vec<String>,
    other_subjects: bool,
}

/// Collects errors, at most [`ERRORS_PER_KIND`] per kind and file.
#[derive(Debug, Default)]
pub struct Collector {
    errors: Vec<PolicyError>,
    tallies: HashMap<(String, &'static str), Tally>,
}

impl Collector {
    /// Add `error` of kind `kind` (a phrase such as "unknown segment", used in the summary).
    pub fn push(&mut self, kind: &'static str, error: PolicyError) {
        let tally = self
            .tallies
            .entry((error.file.clone(), kind))
            .or_insert_with(|| Tally {
                shown: 0,
                more: 0,
                first: None,
                subjects: Vec::new(),
                other_subjects: false,
            });
        if tally.shown < ERRORS_PER_KIND {
            tally.shown += 1;
            self.errors.push(error);
            return;
        }
        tally.more += 1;
        tally.first.get_or_insert((error.line, error.column));
        if let Some(subject) = subject(&error.message)
            && !tally.subjects.iter().any(|s| s == subject)
        {
            if tally.subjects.len() < 3 {
                tally.subjects.push(subject.to_owned());
            } else {
                tally.other_subjects = true;
            }
        }
    }

    /// How many errors were added (summarised ones included).
    pub fn len(&self) -> u64 {
        self.errors.len() as u64 + self.tallies.values().map(|t| t.more).sum::<u64>()
    }

    /// True when no error was added.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The kept errors, for adjusting the last few (e.g. their file).
    pub fn last_mut(&mut self, since: usize) -> &mut [PolicyError] {
        let start = since.min(self.errors.len());
        &mut self.errors[start..]
    }

    /// How many errors are kept so far (a mark for [`Collector::last_mut`]).
    pub fn kept(&self) -> usize {
        self.errors.len()
    }

    /// Every error, `policy_file`'s first, each file's by line and column, with one summary
    /// line per kind that went past the cap.
    pub fn finish(mut self, policy_file: &str) -> Vec<PolicyError> {
        for ((file, kind), tally) in self.tallies {
            let Some((line, column)) = tally.first else {
                continue;
            };
            let unit = if file == policy_file {
                "places"
            } else {
                "rows"
            };
            let subjects = match tally.subjects.as_slice() {
                [] => String::new(),
                [one] if !tally.other_subjects => format!(" `{one}`"),
                many => format!(
                    " ({}{})",
                    many.iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if tally.other_subjects { ", …" } else { "" }
                ),
            };
            self.errors.push(PolicyError {
                file,
                line,
                column,
                message: format!(
                    "… and {} more {unit} with {kind}{subjects}",
                    thousands(tally.more)
                ),
                more: tally.more,
            });
        }
        self.errors.sort_by(|a, b| {
            (a.file != policy_file, &a.file, a.line, a.column, a.more).cmp(&(
                b.file != policy_file,
                &b.file,
                b.line,
                b.column,
                b.more,
            ))
        });
        self.errors
    }
}

/// The first value quoted in backticks in `message`.
fn subject(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Turns byte offsets of one file into line and column, and collects errors.
pub struct SourceMap<'a> {
    file: String,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    /// Index `text`, read from `file`.
    pub fn new(file: &Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file: file.display().to_string(),
            text,
            line_starts,
        }
    }

    /// The file name used in messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// An error at byte offset `span.start`.
    pub fn error(&self, span: &Range<usize>, message: impl Into<String>) -> PolicyError {
        let offset = span.start.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let column = self.text[line_start..offset].chars().count() + 1;
        PolicyError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
            more: 0,
        }
    }

    /// An error at a known line (CSV rows), column 1.
    pub fn error_at_line(&self, line: usize, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.clone(),
            line,
            column: 1,
            message: message.into(),
            more: 0,
        }
    }
}
