//! `cargo xtask timeline [RUN_DIR] [--screenshot]`: one HTML picture of a cluster run (see
//! the `timeline` crate and docs/observability.md). Also called by `demo` and, for every
//! failing QEMU scenario, by the test runner, which print the page's path.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::TimelineArgs;

/// Screenshot width in CSS pixels (the page's panels are this wide).
const SHOT_WIDTH_PX: u32 = 1400;
/// Tallest full-page screenshot.
const SHOT_HEIGHT_MAX_PX: u32 = 4000;
/// The zoomed failover picture next to the page.
pub const FOCUS_HTML: &str = "timeline-failover.html";
pub const FOCUS_PNG: &str = "timeline-failover.png";

/// Where runs live.
pub fn runs_root() -> PathBuf {
    crate::root().join("target/xylem")
}

/// `cargo xtask timeline`.
pub fn cmd_timeline(args: &TimelineArgs) -> Result<(), String> {
    let dir = match &args.run_dir {
        Some(dir) => dir.clone(),
        None => timeline::run::latest_run(&runs_root()).ok_or_else(|| {
            format!(
                "no cluster run under {} (run a scenario or the demo first)",
                runs_root().display()
            )
        })?,
    };
    let (page, tl) = timeline::write_html(&dir).map_err(|e| e.to_string())?;
    println!("timeline: {}", page.display());
    for f in &tl.failovers {
        println!(
            "    {}/{}: {} -> {} failover {:.1} ms ({})",
            f.service,
            f.slot,
            f.from_node,
            f.to_node,
            f.ms(),
            f.fault_label
        );
    }
    if tl.garbage > 0 {
        println!("    {} garbage line(s) skipped", tl.garbage);
    }
    if args.screenshot {
        for (png, width, height) in screenshots(&dir, &page, &tl)? {
            println!("screenshot: {} ({width}x{height})", png.display());
        }
    }
    Ok(())
}

/// Screenshots the page (and the zoomed failover, if any) in headless Chromium next to it,
/// checking each is not blank; returns (path, width, height) of each.
pub fn screenshots(
    dir: &Path,
    page: &Path,
    tl: &timeline::model::Timeline,
) -> Result<Vec<(PathBuf, u32, u32)>, String> {
    let mut shots = Vec::new();
    let height = timeline::render::page_height_px(tl).min(SHOT_HEIGHT_MAX_PX);
    let png = dir.join(timeline::PNG_FILE);
    timeline::browser::screenshot(page, &png, SHOT_WIDTH_PX, height)?;
    let px = timeline::browser::check_nonblank(&png)?;
    shots.push((png, px.width, px.height));
    if let Some((focus, height)) = timeline::render::focus_html(tl) {
        let focus_page = dir.join(FOCUS_HTML);
        std::fs::write(&focus_page, focus).map_err(|e| format!("{}: {e}", focus_page.display()))?;
        let png = dir.join(FOCUS_PNG);
        timeline::browser::screenshot(&focus_page, &png, SHOT_WIDTH_PX, height)?;
        let px = timeline::browser::check_nonblank(&png)?;
        shots.push((png, px.width, px.height));
    }
    Ok(shots)
}

/// After a failing scenario: the timeline of the run it left under `runs`, if that run was
/// written since `since`. Prints the path (or why there is none); never fails the caller.
pub fn after_failure(runs: &Path, since: SystemTime) {
    let Some(dir) = timeline::run::latest_run(runs) else {
        return;
    };
    let fresh = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.path().join(timeline::run::EVENTS_FILE).metadata().ok())
        .filter_map(|m| m.modified().ok())
        .any(|t| t >= since);
    if !fresh {
        return;
    }
    match timeline::write_html(&dir) {
        Ok((page, _)) => println!("    timeline: {}", page.display()),
        Err(why) => println!("    (no timeline: {why})"),
    }
}
