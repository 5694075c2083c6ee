//! The one golden-file check of every transcript test (`tests/sim/raft` and `tests/sim/swim`
//! include this file with `#[path]`): the output must match `testdata/<file>` byte for byte.
//!
//! `UPDATE_GOLDEN=1` (exactly `1`) rewrites the file instead; review the diff before
//! committing. Any other value is an error, so a stray `UPDATE_GOLDEN=0` cannot silently
//! rewrite anything. A missing file fails with the command that creates it.

use std::path::Path;

/// The environment variable that regenerates golden files.
pub const UPDATE_VAR: &str = "UPDATE_GOLDEN";

/// Compares `actual` with `<crate>/testdata/<file>` (or rewrites it under `UPDATE_GOLDEN=1`).
pub fn check(crate_dir: &str, file: &str, actual: &str) {
    let path = Path::new(crate_dir).join("testdata").join(file);
    match std::env::var(UPDATE_VAR).as_deref() {
        Ok("1") => {
            std::fs::write(&path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            println!("golden: rewrote {}", path.display());
            return;
        }
        Ok(other) => panic!("{UPDATE_VAR}={other:?}: only {UPDATE_VAR}=1 rewrites golden files"),
        Err(_) => {}
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} ({UPDATE_VAR}=1 writes it; review it before committing)",
            path.display()
        )
    });
    if expected == actual {
        return;
    }
    let (a, e): (Vec<&str>, Vec<&str>) = (actual.lines().collect(), expected.lines().collect());
    let first = (0..a.len().max(e.len()))
        .find(|&i| a.get(i) != e.get(i))
        .unwrap_or(a.len().min(e.len()));
    panic!(
        "{file} differs from the golden file at line {} ({} lines now, {} expected; \
         {UPDATE_VAR}=1 to accept):\n  now:      {:?}\n  expected: {:?}\n--- full output ---\n{actual}",
        first + 1,
        a.len(),
        e.len(),
        a.get(first).copied().unwrap_or("<end>"),
        e.get(first).copied().unwrap_or("<end>"),
    );
}
