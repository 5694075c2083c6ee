//! Timelines of cluster runs: `cargo xtask timeline [RUN_DIR]`.
//!
//! A run leaves one COM2 event log per node boot and the harness journal (kills,
//! partitions, clock samples). This crate turns them into one picture:
//!
//! 1. [`run::load`] reads a run directory ([`log`] parses lines, counting garbage);
//! 2. [`model::build`] puts every event on the host clock ([`align`]) and derives lanes,
//!    spans, cells, commits, faults and failovers;
//! 3. [`render::html`] writes one self-contained HTML page with inline SVG (no script, no
//!    network): an overview of the whole run and a zoomed panel per failover;
//! 4. [`inspect`] reads such a page back (tests check lanes and failover figures with it),
//!    and [`browser`] screenshots it in headless Chromium.
//!
//! The harness side writes the journal through [`journal::Journal`]. Host-only (std).

pub mod align;
pub mod browser;
pub mod inspect;
pub mod journal;
pub mod log;
pub mod model;
pub mod render;
pub mod run;

use std::path::{Path, PathBuf};

/// The page's file name inside a run directory.
pub const HTML_FILE: &str = "timeline.html";
/// The screenshot's file name, next to the page.
pub const PNG_FILE: &str = "timeline.png";

/// Reads the run in `dir`, writes `dir/timeline.html`, and returns its path with the model.
pub fn write_html(dir: &Path) -> Result<(PathBuf, model::Timeline), run::RunError> {
    let logs = run::load(dir)?;
    let timeline = model::build(&logs);
    let path = dir.join(HTML_FILE);
    std::fs::write(&path, render::html(&timeline)).map_err(|error| run::RunError::Io {
        path: path.clone(),
        error,
    })?;
    Ok((path, timeline))
}
