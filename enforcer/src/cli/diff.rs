//! `enforcer policy diff OLD NEW [--json]`: what changes between two policy files, offline.
//!
//! Exit status as `diff(1)`: 0 when the policies are the same, 1 when they differ, 2 when
//! either cannot be read or is invalid (nothing else is printed on stdout then).

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use enforcer::{
    diff::{self, FieldChange, PolicyDiff, SimSummary},
    policy,
};

use crate::InputArgs;

/// Arguments of `policy diff`.
#[derive(clap::Args)]
pub struct DiffArgs {
    /// The policy in force (TOML).
    old: PathBuf,
    /// The policy about to replace it (TOML).
    new: PathBuf,
    /// Print the differences as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    input: InputArgs,
}

/// Compare, print, and choose the exit status (0 same, 1 different, 2 error).
pub fn run(args: &DiffArgs) -> ExitCode {
    match compare(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) if crate::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether the policies are the same.
fn compare(args: &DiffArgs) -> anyhow::Result<bool> {
    let options = args.input.options();
    // Validate both at once: at a million SIMs each takes seconds.
    let (old, new) = std::thread::scope(|scope| {
        let old = scope.spawn(|| policy::load_with(&args.old, &options));
        let new = policy::load_with(&args.new, &options);
        (old.join(), new)
    });
    let old = old
        .map_err(|_| anyhow::anyhow!("validating {} panicked", args.old.display()))?
        .with_context(|| format!("reading the old policy {}", args.old.display()))?;
    let new = new.with_context(|| format!("reading the new policy {}", args.new.display()))?;
    let diff = diff::diff(&old, &new);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &diff)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", text(&diff))?;
        let n = diff.count();
        writeln!(
            out,
            "{} -> {}: {}",
            args.old.display(),
            args.new.display(),
            if n == 0 {
                "no differences".to_owned()
            } else {
                format!("{n} difference{}", if n == 1 { "" } else { "s" })
            }
        )?;
    }
    Ok(diff.is_empty())
}

fn sim_line(sign: char, sim: &SimSummary) -> String {
    let addresses: Vec<&str> = [sim.ipv4.as_deref(), sim.ipv6.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    format!(
        "  {sign} {}  segment {}, {}, {}\n",
        sim.imsi,
        sim.segment,
        sim.state,
        addresses.join(" ")
    )
}

fn fields(fields: &[FieldChange]) -> String {
    fields
        .iter()
        .map(|f| {
            format!(
                "{} {} -> {}",
                f.field,
                f.old.as_deref().unwrap_or("(none)"),
                f.new.as_deref().unwrap_or("(none)")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The differences as text: one section per kind, `+` added, `-` removed, `~` changed.
fn text(diff: &PolicyDiff) -> String {
    let mut s = String::new();
    if !diff.pools_added.is_empty() || !diff.pools_removed.is_empty() {
        s.push_str("pools:\n");
        for pool in &diff.pools_added {
            s.push_str(&format!("  + {pool}\n"));
        }
        for pool in &diff.pools_removed {
            s.push_str(&format!("  - {pool}\n"));
        }
    }
    if !diff.segments_added.is_empty()
        || !diff.segments_removed.is_empty()
        || !diff.segments_changed.is_empty()
    {
        s.push_str("segments:\n");
        for name in &diff.segments_added {
            s.push_str(&format!("  + {name}\n"));
        }
        for name in &diff.segments_removed {
            s.push_str(&format!("  - {name}\n"));
        }
        for changed in &diff.segments_changed {
            s.push_str(&format!(
                "  ~ {}  {}\n",
                changed.name,
                fields(&changed.fields)
            ));
        }
    }
    if !diff.sims_added.is_empty() || !diff.sims_removed.is_empty() || !diff.sims_changed.is_empty()
    {
        s.push_str("SIMs:\n");
        for sim in &diff.sims_added {
            s.push_str(&sim_line('+', sim));
        }
        for sim in &diff.sims_removed {
            s.push_str(&sim_line('-', sim));
        }
        for changed in &diff.sims_changed {
            s.push_str(&format!(
                "  ~ {}  {}\n",
                changed.name,
                fields(&changed.fields)
            ));
        }
    }
    if !diff.rules.is_empty() {
        s.push_str("rules:\n");
        for owner in &diff.rules {
            s.push_str(&format!("  {}:\n", owner.owner));
            for rule in &owner.added {
                s.push_str(&format!(
                    "    + {}  {}{}\n",
                    rule.origin,
                    rule.rule,
                    quoted(&rule.description)
                ));
            }
            for rule in &owner.removed {
                s.push_str(&format!(
                    "    - {}  {}{}\n",
                    rule.origin,
                    rule.rule,
                    quoted(&rule.description)
                ));
            }
            for rule in &owner.changed {
                s.push_str(&format!(
                    "    ~ {} -> {}  {}  {}\n",
                    rule.old_origin,
                    rule.new_origin,
                    rule.rule,
                    fields(&rule.fields)
                ));
            }
        }
    }
    s
}

fn quoted(description: &str) -> String {
    if description.is_empty() {
        String::new()
    } else {
        format!("  \"{description}\"")
    }
}
