//! Policy errors: every one names file, line and column, says what is wrong and what to do.

use std::{fmt, ops::Range, path::Path};

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
        let count = self.0.len();
        writeln!(
            f,
            "the policy is invalid ({count} error{}); nothing was loaded:",
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
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
        }
    }

    /// An error at a known line (CSV rows), column 1.
    pub fn error_at_line(&self, line: usize, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.clone(),
            line,
            column: 1,
            message: message.into(),
        }
    }
}
