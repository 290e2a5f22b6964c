//! `cargo xtask demo`: setup if needed, build the daemon and the demo driver, run the demo on
//! network namespaces with `examples/policy.toml` (see `tests/src/bin/enforcer-demo.rs`).

use std::process::Command;

use anyhow::bail;

use crate::{
    setup,
    util::{exec, is_root, root},
};

pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and loads XDP: run it as root (e.g. sudo)");
    }
    if !setup::is_complete(setup::Purpose::Demo) {
        setup::run(setup::Purpose::Demo)?;
    }
    exec(Command::new("cargo").current_dir(root()).args([
        "build",
        "--quiet",
        "-p",
        "enforcer",
        "-p",
        "integration-tests",
        "--bins",
    ]))?;
    let target = root().join("target/debug");
    exec(
        Command::new(target.join("enforcer-demo"))
            .arg(target.join("enforcer"))
            .arg(root().join("examples/policy.toml")),
    )
}
