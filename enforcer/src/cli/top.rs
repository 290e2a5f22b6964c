//! `enforcer top`: a live view of the fleet, refreshed every second: the busiest SIMs, the
//! most denied ones with their drop reasons, and each segment's totals; sorting and filtering
//! by segment or IMSI. `--once` prints one snapshot (two readings an interval apart) instead,
//! for scripts and tests; `--json` prints it as JSON.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use enforcer::control::{Command, Reply, TopReport, TopSim, unix};

/// SIMs asked of the daemon: the view sorts and filters among them.
const FETCH: usize = 2000;

/// What the rows are sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// Packets passed per second.
    Packets,
    /// Bytes passed per second.
    Bytes,
    /// Packets dropped per second.
    Drops,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Packets => Sort::Bytes,
            Sort::Bytes => Sort::Drops,
            Sort::Drops => Sort::Packets,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sort::Packets => "packets",
            Sort::Bytes => "bytes",
            Sort::Drops => "drops",
        }
    }

    fn key(self, sim: &TopSim) -> f64 {
        match self {
            Sort::Packets => sim.pass_pps,
            Sort::Bytes => sim.pass_bps,
            Sort::Drops => sim.drop_pps,
        }
    }
}

/// How the view is set.
#[derive(Clone, Debug)]
pub struct View {
    /// Sort order of the busiest SIMs.
    pub sort: Sort,
    /// Only SIMs whose IMSI starts with this or whose segment is this (empty: all).
    pub filter: String,
    /// Rows per table.
    pub rows: usize,
}

fn fetch(socket: &Path) -> anyhow::Result<TopReport> {
    match unix::call(socket, &Command::Top { limit: FETCH })? {
        Reply::Top(report) => Ok(*report),
        Reply::Error { message, .. } => bail!("{message}"),
        other => bail!(
            "the daemon answered with something else ({other:?}); use the client of the \
             daemon's version"
        ),
    }
}

fn matches(filter: &str, sim: &TopSim) -> bool {
    filter.is_empty() || sim.imsi.starts_with(filter) || sim.segment == filter
}

/// The busiest and the most denied SIMs of `report` as `view` shows them.
fn select<'a>(report: &'a TopReport, view: &View) -> (Vec<&'a TopSim>, Vec<&'a TopSim>) {
    let mut busiest: Vec<&TopSim> = report
        .sims
        .iter()
        .filter(|s| matches(&view.filter, s))
        .collect();
    busiest.sort_by(|a, b| view.sort.key(b).total_cmp(&view.sort.key(a)));
    let mut denied: Vec<&TopSim> = busiest
        .iter()
        .copied()
        .filter(|s| s.drop_pps > 0.0)
        .collect();
    denied.sort_by(|a, b| b.drop_pps.total_cmp(&a.drop_pps));
    busiest.truncate(view.rows);
    denied.truncate(view.rows);
    (busiest, denied)
}

fn reasons(sim: &TopSim) -> String {
    sim.drop_reasons
        .iter()
        .take(3)
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first line: interval, sort and filter.
fn title(report: &TopReport, view: &View) -> String {
    let filter = if view.filter.is_empty() {
        String::new()
    } else {
        format!(", filter `{}`", view.filter)
    };
    format!(
        "enforcer top: {:.1} s interval, sorted by {}{filter}",
        report.interval_s,
        view.sort.name()
    )
}

/// The three tables as text lines (the snapshot, and the TUI's source of rows).
fn tables(report: &TopReport, view: &View) -> Vec<String> {
    let (busiest, denied) = select(report, view);
    let mut out = vec![title(report, view)];
    out.push(String::new());
    out.push(format!(
        "{:<20} {:>12} {:>14} {:>12}",
        "SEGMENT", "PASS PKT/S", "PASS BYTE/S", "DROP PKT/S"
    ));
    for s in &report.segments {
        if !view.filter.is_empty() && s.segment != view.filter && !s.segment.is_empty() {
            continue;
        }
        let name = if s.segment.is_empty() {
            "(no segment)"
        } else {
            &s.segment
        };
        out.push(format!(
            "{name:<20} {:>12.1} {:>14.1} {:>12.1}",
            s.pass_pps, s.pass_bps, s.drop_pps
        ));
    }
    out.push(String::new());
    out.push("BUSIEST SIMS".to_owned());
    out.push(format!(
        "{:<16} {:<16} {:>12} {:>14} {:>12}",
        "IMSI", "SEGMENT", "PASS PKT/S", "PASS BYTE/S", "DROP PKT/S"
    ));
    for s in busiest {
        out.push(format!(
            "{:<16} {:<16} {:>12.1} {:>14.1} {:>12.1}",
            s.imsi, s.segment, s.pass_pps, s.pass_bps, s.drop_pps
        ));
    }
    out.push(String::new());
    out.push("MOST DENIED SIMS".to_owned());
    out.push(format!(
        "{:<16} {:<16} {:>12}  TOP DROP REASONS",
        "IMSI", "SEGMENT", "DROP PKT/S"
    ));
    for s in denied {
        out.push(format!(
            "{:<16} {:<16} {:>12.1}  {}",
            s.imsi,
            s.segment,
            s.drop_pps,
            reasons(s)
        ));
    }
    out
}

/// `enforcer top --once`: two readings `interval` apart, printed once.
///
/// # Errors
/// The daemon cannot be reached or refuses.
pub fn once(socket: &Path, view: &View, interval: Duration, json: bool) -> anyhow::Result<()> {
    fetch(socket)?;
    std::thread::sleep(interval);
    let report = fetch(socket)?;
    if json {
        let (busiest, denied) = select(&report, view);
        let value = serde_json::json!({
            "interval_s": report.interval_s,
            "segments": report.segments,
            "busiest": busiest,
            "most_denied": denied,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    for line in tables(&report, view) {
        println!("{line}");
    }
    Ok(())
}

/// `enforcer top`: the interactive view until `q` (or Ctrl-C).
///
/// # Errors
/// The daemon cannot be reached, or the terminal cannot be set up.
pub fn interactive(socket: &Path, mut view: View, interval: Duration) -> anyhow::Result<()> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    // Fail before the terminal is taken over when the daemon is not there.
    let mut report = fetch(socket)?;
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = (|| -> anyhow::Result<()> {
        let mut editing: Option<String> = None;
        let mut last = Instant::now();
        loop {
            terminal.draw(|frame| draw(frame, &report, &view, editing.as_deref()))?;
            let wait = interval.saturating_sub(last.elapsed());
            if event::poll(wait)?
                && let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                match (&mut editing, key.code) {
                    (Some(text), KeyCode::Enter) => {
                        view.filter = std::mem::take(text);
                        editing = None;
                    }
                    (Some(_), KeyCode::Esc) => editing = None,
                    (Some(text), KeyCode::Backspace) => {
                        text.pop();
                    }
                    (Some(text), KeyCode::Char(c)) => text.push(c),
                    (None, KeyCode::Char('q')) => return Ok(()),
                    (None, KeyCode::Char('c')) if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(());
                    }
                    (None, KeyCode::Char('s')) => view.sort = view.sort.next(),
                    (None, KeyCode::Char('/')) => editing = Some(String::new()),
                    (None, KeyCode::Esc) => view.filter.clear(),
                    _ => {}
                }
            }
            if last.elapsed() >= interval {
                report = fetch(socket)?;
                last = Instant::now();
            }
        }
    })();
    ratatui::restore();
    result
}

fn draw(frame: &mut ratatui::Frame<'_>, report: &TopReport, view: &View, editing: Option<&str>) {
    use ratatui::{
        layout::{Constraint, Layout},
        style::{Modifier, Style},
        widgets::{Block, Paragraph, Row, Table},
    };
    let (busiest, denied) = select(report, view);
    let area = frame.area();
    let segments = report.segments.len().min(8) as u16 + 3;
    let [head, seg_area, busy_area, denied_area, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(segments),
        Constraint::Fill(2),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(title(report, view)), head);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let seg_rows = report
        .segments
        .iter()
        .filter(|s| view.filter.is_empty() || s.segment == view.filter || s.segment.is_empty())
        .map(|s| {
            Row::new(vec![
                if s.segment.is_empty() {
                    "(no segment)".to_owned()
                } else {
                    s.segment.clone()
                },
                format!("{:.1}", s.pass_pps),
                format!("{:.1}", s.pass_bps),
                format!("{:.1}", s.drop_pps),
            ])
        });
    let widths = [
        Constraint::Length(20),
        Constraint::Length(14),
        Constraint::Length(16),
        Constraint::Length(14),
    ];
    frame.render_widget(
        Table::new(seg_rows, widths)
            .header(Row::new(["SEGMENT", "PASS PKT/S", "PASS BYTE/S", "DROP PKT/S"]).style(bold))
            .block(Block::bordered().title(" Segments ")),
        seg_area,
    );
    let sim_widths = [
        Constraint::Length(17),
        Constraint::Length(16),
        Constraint::Length(12),
        Constraint::Length(14),
        Constraint::Length(12),
    ];
    let busy_rows = busiest.iter().map(|s| {
        Row::new(vec![
            s.imsi.clone(),
            s.segment.clone(),
            format!("{:.1}", s.pass_pps),
            format!("{:.1}", s.pass_bps),
            format!("{:.1}", s.drop_pps),
        ])
    });
    frame.render_widget(
        Table::new(busy_rows, sim_widths)
            .header(
                Row::new(["IMSI", "SEGMENT", "PASS PKT/S", "PASS BYTE/S", "DROP PKT/S"])
                    .style(bold),
            )
            .block(Block::bordered().title(format!(" Busiest SIMs (by {}) ", view.sort.name()))),
        busy_area,
    );
    let denied_rows = denied.iter().map(|s| {
        Row::new(vec![
            s.imsi.clone(),
            s.segment.clone(),
            format!("{:.1}", s.drop_pps),
            reasons(s),
        ])
    });
    frame.render_widget(
        Table::new(
            denied_rows,
            [
                Constraint::Length(17),
                Constraint::Length(16),
                Constraint::Length(12),
                Constraint::Fill(1),
            ],
        )
        .header(Row::new(["IMSI", "SEGMENT", "DROP PKT/S", "TOP DROP REASONS"]).style(bold))
        .block(Block::bordered().title(" Most denied SIMs ")),
        denied_area,
    );
    let help = match editing {
        Some(text) => {
            format!("filter (IMSI prefix or segment): {text}_   Enter apply · Esc cancel")
        }
        None => "q quit · s sort (packets/bytes/drops) · / filter · Esc clear filter".to_owned(),
    };
    frame.render_widget(Paragraph::new(help), keys);
}

/// Rows per table for the snapshot, and the view's defaults.
#[must_use]
pub fn view(sort: Sort, filter: Option<String>, rows: usize) -> View {
    View {
        sort,
        filter: filter.unwrap_or_default(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer::control::TopSegment;

    fn sim(imsi: &str, segment: &str, pps: f64, drop: f64) -> TopSim {
        TopSim {
            imsi: imsi.to_owned(),
            segment: segment.to_owned(),
            pass_pps: pps,
            pass_bps: pps * 100.0,
            drop_pps: drop,
            drop_reasons: vec![("no_rule".to_owned(), drop as u64)],
        }
    }

    /// Sorting, the filter by IMSI prefix or segment, and the denied table.
    #[test]
    fn sorts_and_filters() {
        let report = TopReport {
            interval_s: 1.0,
            sims: vec![
                sim("001010000000001", "a", 5.0, 0.0),
                sim("001010000000002", "b", 50.0, 1.0),
                sim("001020000000003", "a", 1.0, 9.0),
            ],
            segments: vec![TopSegment {
                segment: "a".to_owned(),
                pass_pps: 6.0,
                drop_pps: 9.0,
                pass_bps: 600.0,
            }],
        };
        let mut v = view(Sort::Packets, None, 10);
        let (busiest, denied) = select(&report, &v);
        assert_eq!(busiest[0].imsi, "001010000000002");
        assert_eq!(denied[0].imsi, "001020000000003");
        v.sort = Sort::Drops;
        assert_eq!(select(&report, &v).0[0].imsi, "001020000000003");
        v.filter = "a".to_owned();
        assert_eq!(select(&report, &v).0.len(), 2);
        v.filter = "00101".to_owned();
        assert_eq!(select(&report, &v).0.len(), 2);
        let text = tables(&report, &v).join("\n");
        assert!(
            text.contains("MOST DENIED SIMS") && text.contains("no_rule 1"),
            "{text}"
        );
    }
}
