//! `enforcer run --config FILE`: the daemon's settings in a TOML file, for a service unit that
//! should not carry a long command line.
//!
//! Every key is a `run` flag without its dashes (`policy`, `iface`, `xdp-mode`, `pin-dir`,
//! `max-sessions`, `udp-timeout`, ...; `_` may stand for `-`), and its value what the flag
//! takes: a string or a number, or an array for a repeatable flag (`iface = ["core:eth0",
//! "service:eth1"]`). A flag given on the command line (or its environment variable) wins
//! over the file's key, a repeatable one replacing the file's whole array. Each value is
//! checked by the flag's own parser here, so that an error names the file and line: a key that
//! is no flag or is written twice, an array for a flag that takes one value, a value of the
//! wrong shape or that the flag refuses. Relative paths are taken from the daemon's working
//! directory (`/` under systemd), like the flags'.

use std::{ffi::OsString, path::Path};

use clap::{ArgAction, parser::ValueSource};

/// Largest config file read, in bytes (settings, not a policy).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// `argv` with the settings of `run --config FILE` added as flags before the command line's
/// own, for those the command line does not give. Unchanged for any other command, or when
/// the command line does not parse (clap then reports it).
///
/// # Errors
/// The file cannot be read, is not TOML, or has a key that is no `run` flag or a value that is
/// neither a string, a number nor an array of them: a message naming the file and line.
pub fn merged_args<C: clap::CommandFactory>(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    if argv.get(1).is_none_or(|a| a != "run") {
        return Ok(argv);
    }
    let command = C::command();
    let Ok(matches) = command.clone().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some(("run", run)) = matches.subcommand() else {
        return Ok(argv);
    };
    let Some(path) = run.get_one::<std::path::PathBuf>("config") else {
        return Ok(argv);
    };
    let run_command = command
        .find_subcommand("run")
        .ok_or("the `run` command is missing")?;
    let added = settings(path, run_command, |id| {
        matches!(
            run.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    })?;
    let mut merged: Vec<OsString> = argv[..2].to_vec();
    merged.extend(added.into_iter().map(OsString::from));
    merged.extend(argv[2..].iter().cloned());
    Ok(merged)
}

/// The flags the config file at `path` sets, as command-line words, skipping those for which
/// `given` (by argument id) says the command line has its own.
fn settings(
    path: &Path,
    run: &clap::Command,
    given: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    let shown = path.display();
    let text = enforcer::policy::source::read_text(path, MAX_CONFIG_BYTES)
        .map_err(|e| format!("the config file: {e}"))?;
    let document = toml_edit::ImDocument::parse(text.as_str()).map_err(|e| {
        let at = e
            .span()
            .map_or_else(String::new, |s| format!(":{}", line_of(&text, s.start)));
        format!(
            "{shown}{at}: not a TOML config file: {}",
            e.message().trim()
        )
    })?;
    let flags: Vec<&clap::Arg> = run
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| l != "config" && l != "help"))
        .collect();
    let mut words = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (key, item) in document.as_table() {
        let line = document
            .as_table()
            .key(key)
            .and_then(toml_edit::Key::span)
            .map_or(0, |s| line_of(&text, s.start));
        let long = key.replace('_', "-");
        let Some(arg) = flags.iter().find(|a| a.get_long() == Some(long.as_str())) else {
            let mut known: Vec<&str> = flags.iter().filter_map(|a| a.get_long()).collect();
            known.sort_unstable();
            return Err(format!(
                "{shown}:{line}: unknown key `{key}`; a key is a `run` flag without its dashes: \
                 {}",
                known.join(", ")
            ));
        };
        if seen.contains(&long) {
            return Err(format!(
                "{shown}:{line}: `{key}` is set twice (`-` and `_` spell the same key); keep one"
            ));
        }
        seen.push(long.clone());
        if given(arg.get_id().as_str()) {
            continue;
        }
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        let values: Vec<String> = match item.as_value() {
            Some(toml_edit::Value::Array(_)) if !repeatable => {
                return Err(format!(
                    "{shown}:{line}: `{key}` takes one value, not an array"
                ));
            }
            Some(toml_edit::Value::Array(array)) if array.is_empty() => {
                return Err(format!(
                    "{shown}:{line}: `{key}` is an empty array; give at least one value or \
                     remove the key"
                ));
            }
            Some(toml_edit::Value::Array(array)) => array
                .iter()
                .map(|v| scalar(v).ok_or(()))
                .collect::<Result<_, _>>()
                .map_err(|()| {
                    format!("{shown}:{line}: `{key}`: every item must be a string or a number")
                })?,
            Some(value) => vec![scalar(value).ok_or_else(|| {
                format!(
                    "{shown}:{line}: `{key}` must be a string or a number (an array for a \
                     repeatable flag)"
                )
            })?],
            None => {
                return Err(format!(
                    "{shown}:{line}: `{key}` must be a value, not a table"
                ));
            }
        };
        for value in values {
            // One word, so that a value starting with `-` is never taken for a flag.
            let word = format!("--{long}={value}");
            check(arg, &word).map_err(|why| format!("{shown}:{line}: `{key}`: {why}"))?;
            words.push(word);
        }
    }
    Ok(words)
}

/// Whether the flag `arg` takes `word` (`--flag=value`), by its own value parser: the flag
/// alone in a command of its own (with a `--config` beside it, which `run`'s required flags
/// may be excused by). The parser's message when it does not.
fn check(arg: &clap::Arg, word: &str) -> Result<(), String> {
    clap::Command::new("run")
        .arg(arg.clone())
        .arg(clap::Arg::new("config").long("config"))
        .try_get_matches_from(["run", "--config", "-", word])
        .map(drop)
        .map_err(|e| {
            // The first line says what is wrong; clap lists the values it takes on another.
            let text = e.to_string();
            let mut lines = text.lines();
            let first = lines
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned();
            match lines
                .map(str::trim)
                .find(|l| l.starts_with("[possible values:"))
            {
                Some(values) => format!("{first} {values}"),
                None => first,
            }
        })
}

/// A string or integer as the command-line word it stands for.
fn scalar(value: &toml_edit::Value) -> Option<String> {
    match value {
        toml_edit::Value::String(s) => Some(s.value().clone()),
        toml_edit::Value::Integer(n) => Some(n.value().to_string()),
        _ => None,
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Run {
            #[arg(long)]
            config: Option<std::path::PathBuf>,
            #[arg(long)]
            policy: Option<String>,
            #[arg(long = "iface")]
            ifaces: Vec<String>,
            #[arg(long, default_value = "native")]
            xdp_mode: String,
            #[arg(long, default_value_t = 120)]
            udp_timeout: u64,
            #[arg(long)]
            name: Option<String>,
            #[arg(long, value_parser = ["stack", "xdp"])]
            mode: Option<String>,
        },
        Status,
    }

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    /// A config file, removed on drop.
    struct File(std::path::PathBuf);

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(text: &str) -> (File, String) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "enforcer-config-test-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write config");
        let shown = path.display().to_string();
        (File(path), shown)
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_out() {
        let (_dir, path) = file(
            "policy = \"/etc/enforcer/policy.toml\"\niface = [\"core:eth0\", \"service:eth1\"]\n\
             xdp_mode = \"skb\"\nudp-timeout = 300\n",
        );
        let merged = merged_args::<Cli>(argv(&[
            "enforcer",
            "run",
            "--config",
            &path,
            "--xdp-mode",
            "native",
        ]))
        .expect("merges");
        let words: Vec<String> = merged
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            words,
            [
                "enforcer",
                "run",
                "--policy=/etc/enforcer/policy.toml",
                "--iface=core:eth0",
                "--iface=service:eth1",
                "--udp-timeout=300",
                "--config",
                &path,
                "--xdp-mode",
                "native",
            ]
        );
    }

    #[test]
    fn a_value_starting_with_a_dash_stays_a_value() {
        let (_file, path) = file("name = \"-p.toml\"\n");
        let merged =
            merged_args::<Cli>(argv(&["enforcer", "run", "--config", &path])).expect("merges");
        assert_eq!(merged[2], "--name=-p.toml");
        let Cli {
            command: Sub::Run { name, .. },
        } = <Cli as clap::Parser>::try_parse_from(merged).expect("parses")
        else {
            panic!("not run");
        };
        assert_eq!(name.as_deref(), Some("-p.toml"));
    }

    #[test]
    fn other_commands_and_runs_without_a_file_are_left_alone() {
        for words in [
            &["enforcer", "status"][..],
            &["enforcer", "run", "--policy", "p.toml"][..],
        ] {
            assert_eq!(merged_args::<Cli>(argv(words)).expect("ok"), argv(words));
        }
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_name_the_file_and_line() {
        for (text, needle) in [
            (
                "policy = \"p\"\nifaces = [\"eth0\"]\n",
                ":2: unknown key `ifaces`",
            ),
            (
                "udp_timeout = true\n",
                ":1: `udp_timeout` must be a string or a number",
            ),
            (
                "iface = [\"eth0\", 3.5]\n",
                ":1: `iface`: every item must be",
            ),
            (
                "[policy]\nfile = \"p\"\n",
                ":1: `policy` must be a value, not a table",
            ),
            ("policy = \n", ":1: not a TOML config file"),
            (
                "udp-timeout = \"abc\"\n",
                ":1: `udp-timeout`: invalid value 'abc'",
            ),
            (
                "policy = [\"a\", \"b\"]\n",
                ":1: `policy` takes one value, not an array",
            ),
            (
                "policy = [\"a\"]\n",
                ":1: `policy` takes one value, not an array",
            ),
            ("iface = []\n", ":1: `iface` is an empty array"),
            (
                "mode = \"fast\"\n",
                ":1: `mode`: invalid value 'fast' for '--mode <MODE>' [possible values: stack, xdp]",
            ),
            (
                "xdp_mode = \"native\"\nxdp-mode = \"native\"\n",
                ":2: `xdp-mode` is set twice",
            ),
        ] {
            let (_dir, path) = file(text);
            let error =
                merged_args::<Cli>(argv(&["enforcer", "run", "--config", &path])).expect_err(text);
            assert!(
                error.starts_with(&path) && error.contains(needle),
                "{text:?}: {error}"
            );
        }
    }
}
