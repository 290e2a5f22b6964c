//! Compile snapshots: `tests/compile/NAME.policy` must compile to exactly `NAME.expected`, a
//! sorted dump of the map image, so a review shows which map entries a change affects.
//! `UPDATE_SNAPSHOTS=1` rewrites the expected files.

use std::path::Path;

#[test]
fn policies_compile_to_their_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compile");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/compile")
        .flatten()
        .collect();
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "policy") {
            continue;
        }
        let policy = enforcer::policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let dump = enforcer::compile::compile(&policy)
            .expect("compiles")
            .image
            .dump();
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &dump).expect("write snapshot");
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_SNAPSHOTS=1",
                expected_path.display()
            )
        });
        assert_eq!(
            dump,
            expected,
            "{} compiles differently from its snapshot",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected at least three snapshots, found {checked}"
    );
}

#[test]
fn compilation_is_deterministic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml");
    let policy = enforcer::policy::load(&path).expect("example policy is valid");
    let a = enforcer::compile::compile(&policy).expect("compiles");
    let b = enforcer::compile::compile(&policy).expect("compiles");
    assert_eq!(a, b);
}
