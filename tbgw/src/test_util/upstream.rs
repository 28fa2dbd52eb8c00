//! Upstream's sample configuration files, for the tests that check tbgw reads them.
//!
//! The samples are not part of tbgw (they are upstream's files): they live in
//! `../shared/reference/upstream-config` beside a developer's clone, or wherever
//! `TBGW_UPSTREAM_CONFIG` points. A user's clone has neither, and the tests that read a sample
//! skip themselves there (saying so on stderr), so every test passes in any clone.

use std::path::PathBuf;

/// The directory of upstream's sample configuration, if there is one.
pub fn upstream_config_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("TBGW_UPSTREAM_CONFIG") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/upstream-config")
        }
    };
    dir.is_dir().then_some(dir)
}

/// The path of upstream's sample `relative` (e.g. `mqtt.json`), or `None` (with a line on
/// stderr saying the test is skipped) when the samples are not beside this clone.
pub fn upstream_sample(relative: &str) -> Option<PathBuf> {
    let path = upstream_config_dir().map(|d| d.join(relative));
    match path {
        Some(p) if p.is_file() => Some(p),
        _ => {
            eprintln!(
                "skipped: upstream's sample {relative} is not here (set TBGW_UPSTREAM_CONFIG to \
                 upstream's config directory to run this test)"
            );
            None
        }
    }
}
