//! In-kernel tests and benchmarks of cells.

use ::cell::lifecycle::CellStatus;
use ::cell::spec::{PayloadSpec, RestartPolicy};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::{check, TestResult};
use crate::arch::cpu;
use crate::mm::frames;
use crate::{cells, sched, time};

fn run(spec: &str) -> Result<u64, String> {
    let spec = PayloadSpec::parse(spec).map_err(|e| format!("{e:?}"))?;
    cells::run(spec, RestartPolicy::Never, cells::Limits::default(), None)
        .map_err(|e| format!("{e}"))
}

/// Waits (up to 5 s) until a cell reaches `state`.
fn wait_state(id: u64, state: CellStatus) -> TestResult {
    let deadline = time::now_us() + 5_000_000;
    while cells::state_of(id) != Some(state) {
        check(time::now_us() < deadline, || {
            format!(
                "cell {id} stuck in {:?}, wanted {state:?}",
                cells::state_of(id)
            )
        })?;
        sched::sleep_ms(1);
    }
    Ok(())
}

/// 1000 run/stop cycles of `hello` leave free frames and heap use exactly unchanged.
pub fn run_stop_no_leak() -> TestResult {
    let cycle = || -> TestResult {
        let id = run("hello")?;
        wait_state(id, CellStatus::Running)?;
        cells::stop(id).map_err(|e| format!("stop {id}: {e}"))
    };
    // Warm up past the finished-cell cap so the table's capacity has settled.
    for _ in 0..(cells::table::FINISHED_KEPT + 8) {
        cycle()?;
    }
    // Let the reactor drain the exits the warm-up produced.
    sched::sleep_ms(50);
    // A log holds what its cell printed before it was stopped (0 or one line's worth here):
    // the heap is compared without the logs, which the table bounds on its own.
    let heap_without_logs = || super::settled_heap_used() - cells::table::logs_heap_bytes();
    let (frames_before, heap_before) = (frames::free_frames(), heap_without_logs());
    let started = time::now_us();
    for i in 0..1000 {
        cycle()?;
        if i % 100 == 99 {
            crate::println!(
                "    after {} cycles: heap {} free frames {}",
                i + 1,
                crate::mm::heap::usage().0,
                frames::free_frames()
            );
        }
    }
    sched::sleep_ms(50);
    let (frames_after, heap_after) = (frames::free_frames(), heap_without_logs());
    crate::println!(
        "    1000 run/stop cycles in {} ms",
        (time::now_us() - started) / 1000
    );
    check(frames_after == frames_before, || {
        format!("free frames {frames_before} -> {frames_after}")
    })?;
    check(heap_after == heap_before, || {
        format!("heap {heap_before} -> {heap_after} bytes")
    })
}

/// No cell exit is lost to a flooded event queue: with the reactor held, the queue is
/// filled past its capacity, cells start and exit (their `task_exit` events are refused),
/// and once the reactor runs again every one of them is finished — state dead, frames
/// returned — by the cell table's record of the exit, not by the lost events.
pub fn exit_survives_event_flood() -> TestResult {
    const CELLS: usize = 8;
    let frames_before = frames::free_frames();
    let swept_before = cells::swept_exits();
    let (_, _, overflowed_before) = crate::events::counters();
    crate::reactor::PAUSED.store(true, Ordering::Release);
    // Fill the queue: ticks are the one kind not written to COM2, so this is fast.
    for i in 0..(crate::events::PENDING_CAP as u64 + 100) {
        crate::events::push(crate::events::EventKind::Tick { ticks: i });
    }
    let mut ids = Vec::new();
    for _ in 0..CELLS {
        ids.push(run("hello 1")?);
    }
    // The cells run (below this task's priority) and exit while the queue stays full.
    let deadline = time::now_us() + 5_000_000;
    while !ids
        .iter()
        .all(|&id| crate::cells::table::with(|c| c.get(&id).is_some_and(|r| r.ended.is_some())))
    {
        check(time::now_us() < deadline, || {
            String::from("the cells did not exit while the reactor was held")
        })?;
        sched::sleep_ms(5);
    }
    let (_, _, overflowed) = crate::events::counters();
    let lost = overflowed - overflowed_before;
    let still_running = ids
        .iter()
        .filter(|&&id| cells::state_of(id) == Some(CellStatus::Running))
        .count();
    crate::reactor::PAUSED.store(false, Ordering::Release);
    check(lost >= 2 * CELLS as u64, || {
        format!("only {lost} events overflowed: the exits were not really lost")
    })?;
    check(still_running == CELLS, || {
        format!("{still_running} of {CELLS} cells still looked running before the sweep")
    })?;
    for &id in &ids {
        wait_state(id, CellStatus::Dead)?;
    }
    let swept = cells::swept_exits() - swept_before;
    check(swept >= CELLS as u64, || {
        format!("the sweep finished {swept} exits, expected {CELLS}")
    })?;
    sched::sleep_ms(20);
    check(frames::free_frames() == frames_before, || {
        format!("free frames {frames_before} -> {}", frames::free_frames())
    })
}

/// A faulting cell ends alone and returns all its frames.
pub fn fault_returns_frames() -> TestResult {
    let before = frames::free_frames();
    let id = run("crasher pagefault 0")?;
    wait_state(id, CellStatus::Dead)?;
    check(frames::free_frames() == before, || {
        format!("free frames {before} -> {}", frames::free_frames())
    })
}

/// `METRIC cell_spawn_us` (request to the drop into ring 3) and `METRIC cell_teardown_us`
/// (stop request to every frame returned), medians over 300 samples, and the spawn broken
/// down by stage (`cells::SpawnStage`): the median of each stage's share, printed as
/// `spawn_stage <name> <µs>` lines and one `METRIC cell_spawn_<stage>_us` per stage.
pub fn bench() -> TestResult {
    const SAMPLES: usize = 300;
    const BENCH_POLL_MS: u64 = 20;
    const STAGES: usize = cells::SpawnStage::ALL.len();
    let mut spawn_ns = Vec::with_capacity(SAMPLES);
    let mut teardown_ns = Vec::with_capacity(SAMPLES);
    // One vector per stage, plus the last step (attach to ring 3).
    let mut stage_ns: Vec<Vec<u64>> = (0..=STAGES).map(|_| Vec::with_capacity(SAMPLES)).collect();
    for _ in 0..SAMPLES {
        cells::LAST_USER_ENTRY_TSC.store(0, Ordering::Relaxed);
        let t0 = cpu::rdtsc();
        let id = run("hello")?;
        let deadline = time::now_us() + 5_000_000;
        let entered = loop {
            let tsc = cells::LAST_USER_ENTRY_TSC.load(Ordering::Relaxed);
            if tsc != 0 {
                break tsc;
            }
            check(time::now_us() < deadline, || {
                String::from("no ring-3 entry recorded")
            })?;
            // Sleep, not yield: a yield never lets the lower-priority cell task run. Long
            // enough that this (higher-priority) task does not wake in the middle of the
            // cell's start and charge its own time to a stage.
            sched::sleep_ms(BENCH_POLL_MS);
        };
        spawn_ns.push(time::tsc_to_ns(entered - t0));
        let mut previous = t0;
        for (index, stage) in cells::SPAWN_STAGE_TSC.iter().enumerate() {
            let at = stage.load(Ordering::Relaxed);
            stage_ns[index].push(time::tsc_to_ns(at.saturating_sub(previous)));
            previous = at;
        }
        stage_ns[STAGES].push(time::tsc_to_ns(entered.saturating_sub(previous)));
        let t1 = cpu::rdtsc();
        cells::stop(id).map_err(|e| format!("{e}"))?;
        teardown_ns.push(time::tsc_to_ns(cpu::rdtsc() - t1));
    }
    spawn_ns.sort_unstable();
    teardown_ns.sort_unstable();
    let us = |ns: u64| format!("{}.{}", ns / 1000, (ns % 1000) / 100);
    for (index, samples) in stage_ns.iter_mut().enumerate() {
        samples.sort_unstable();
        let name = cells::SpawnStage::ALL
            .get(index)
            .map_or("enter_user", |stage| stage.name());
        crate::println!("spawn_stage {name} {} us", us(samples[SAMPLES / 2]));
        crate::println!(
            "METRIC cell_spawn_{name}_us {} us",
            us(samples[SAMPLES / 2])
        );
    }
    crate::println!("METRIC cell_spawn_us {} us", us(spawn_ns[SAMPLES / 2]));
    crate::println!(
        "METRIC cell_teardown_us {} us",
        us(teardown_ns[SAMPLES / 2])
    );
    Ok(())
}
