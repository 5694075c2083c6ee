//! The timeline of a real failover: worker-2 is SIGKILLed while `web` runs on both workers,
//! the failover is measured the way the demo measures it (`measure_failover`), worker-2 is
//! restarted, and then the run's timeline must parse, hold one lane per node (worker-2 with
//! two boots) and show one failover whose milliseconds match the measurement within 5 ms.
//! The page is then rendered in headless Chromium, and the screenshot (kept next to the
//! HTML as timeline.png) must not be blank.

use crate::cluster::Cluster;
use crate::scenarios::control::{self, measure_failover};
use crate::scenarios::membership::wait_all_alive;
use crate::{ensure, Env, HarnessError};

/// Largest gap allowed between the timeline's failover and the measured one.
const AGREE_MS: f64 = 5.0;
const SHOT_WIDTH_PX: u32 = 1400;

fn check(what: &str) -> impl FnOnce(String) -> HarnessError + '_ {
    move |why| HarnessError::Check(format!("{what}: {why}"))
}

pub fn failover(env: &Env) -> Result<(), HarnessError> {
    let (dir, measured) = {
        let mut cluster: Cluster = control::start(env, "timeline-failover", 31)?;
        control::apply(&mut cluster, "web", 2)?;
        control::wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
        let f = measure_failover(&mut cluster, libc::SIGKILL, "web")?;
        control::wait_running(&mut cluster, 1, "web", &["worker-1", "worker-1"])?;
        cluster.restart(2)?;
        wait_all_alive(&mut cluster, &[1, 2, 3])?;
        (cluster.fabric.dir().to_path_buf(), f)
        // The cluster drops here: its last clock readings go to the journal.
    };
    let (page, tl) = timeline::write_html(&dir).map_err(|e| check("timeline")(e.to_string()))?;
    let html = std::fs::read_to_string(&page)
        .map_err(|e| HarnessError::Io(format!("reading {}", page.display()), e))?;
    let shown = timeline::inspect::inspect(&html).map_err(check("timeline page"))?;
    let lanes: Vec<(&str, u32)> = shown.lanes.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    ensure!(
        lanes == [("worker-1", 1), ("worker-2", 2), ("witness", 1)],
        "timeline lanes (node, boots): {lanes:?}"
    );
    ensure!(
        shown.failovers.len() == 1,
        "expected one failover in the timeline, found {:?} (notes: {:?})",
        shown.failovers,
        tl.notes
    );
    let f = &shown.failovers[0];
    ensure!(
        (f.service.as_str(), f.from.as_str(), f.to.as_str()) == ("web", "worker-2", "worker-1"),
        "timeline failover {f:?}"
    );
    let gap = (f.ms - measured.cell_running_ms).abs();
    eprintln!(
        "    failover: measured {:.1} ms, timeline {:.1} ms (gap {gap:.2} ms); {}",
        measured.cell_running_ms,
        f.ms,
        page.display()
    );
    ensure!(
        gap <= AGREE_MS,
        "timeline says {:.1} ms, the run measured {:.1} ms",
        f.ms,
        measured.cell_running_ms
    );
    let png = dir.join(timeline::PNG_FILE);
    let height = timeline::render::page_height_px(&tl);
    timeline::browser::screenshot(&page, &png, SHOT_WIDTH_PX, height)
        .map_err(check("screenshot"))?;
    let px = timeline::browser::check_nonblank(&png).map_err(check("screenshot"))?;
    eprintln!(
        "    screenshot {} ({}x{}, {:.0} % ink, {} colours)",
        png.display(),
        px.width,
        px.height,
        px.ink_fraction * 100.0,
        px.colors
    );
    Ok(())
}
