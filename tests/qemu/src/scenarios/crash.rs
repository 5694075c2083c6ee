//! Panics that survive a reboot. worker-2 panics on purpose (`crash panic …`); its crash
//! record must be on its disk (read here with the kernel's own decoder), and its next boot,
//! on the same disk, must report it on the console (`last panic: …`), as a `last_panic`
//! COM2 event naming the boot that panicked, and in the Raft leader's `xylem status`, then
//! mark it reported. Then worker-2 takes a page fault on purpose; the record is flipped on
//! the host before the reboot, and the reboot must call it corrupt everywhere, never trust it.

use std::path::Path;
use std::time::{Duration, Instant};

use kcore::crash_record::{self, Slot, AREA_SECTORS, RECORD_BYTES, SECTOR_BYTES};

use crate::cluster::{self, Cluster};
use crate::events::Event;
use crate::scenarios::control::{self, wait_leader};
use crate::scenarios::membership::wait_all_alive;
use crate::{ensure, Env, HarnessError};

const CMD: Duration = Duration::from_secs(10);
const EXIT: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(30);
const VICTIM: u64 = 2;
const MESSAGE: &str = "deliberate panic from the crash-record scenario";

/// The crash area's record bytes on node `id`'s disk image.
fn read_record(dir: &Path, id: u64) -> Result<[u8; RECORD_BYTES], HarnessError> {
    let path = cluster::raft_disk(dir, id);
    let disk = std::fs::read(&path)
        .map_err(|e| HarnessError::Io(format!("reading {}", path.display()), e))?;
    let start = disk.len() - (AREA_SECTORS as usize) * SECTOR_BYTES;
    let mut record = [0u8; RECORD_BYTES];
    record.copy_from_slice(&disk[start..start + RECORD_BYTES]);
    Ok(record)
}

/// Flips one bit of the record's message on node `id`'s disk image.
fn corrupt_record(dir: &Path, id: u64) -> Result<(), HarnessError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let path = cluster::raft_disk(dir, id);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| HarnessError::Io(format!("opening {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| HarnessError::Io("disk size".into(), e))?
        .len();
    let at = len - AREA_SECTORS * SECTOR_BYTES as u64 + 400;
    let mut byte = [0u8; 1];
    let io = |e| HarnessError::Io("flipping a bit of the crash record".into(), e);
    file.seek(SeekFrom::Start(at)).map_err(io)?;
    file.read_exact(&mut byte).map_err(io)?;
    byte[0] ^= 0x10;
    file.seek(SeekFrom::Start(at)).map_err(io)?;
    file.write_all(&byte).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Makes worker-2 crash with `line`; returns its COM2 `panic` event once QEMU has exited
/// with the panic status.
fn crash(cluster: &mut Cluster, line: &str) -> Result<Event, HarnessError> {
    let node = cluster.node(VICTIM);
    node.send_line(line)?;
    let status = node.wait_exit(EXIT)?;
    ensure!(
        status.code() == Some(crate::qemu::status::PANIC),
        "'{line}' ended QEMU with {status:?}, not the panic status"
    );
    // The console reader may still be copying the last bytes.
    std::thread::sleep(Duration::from_millis(300));
    let console = node.output();
    ensure!(
        console.contains("!!! crash record written to disk"),
        "no crash record was written:\n{}",
        tail(&console)
    );
    node.events()
        .into_iter()
        .find(|e| e.kind == "panic")
        .ok_or_else(|| HarnessError::Check("no kind=panic line on COM2".into()))
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(1500);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

/// Waits until the leader's `xylem status` names worker-2 in its LAST PANIC section with
/// `want` in the line.
fn wait_status_panic(cluster: &mut Cluster, want: &str) -> Result<String, HarnessError> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let leader = wait_leader(cluster, &[1, 2, 3])?;
        let status = cluster.node(leader).command("xylem status", CMD)?;
        let line = status
            .lines()
            .skip_while(|l| !l.contains("LAST PANIC"))
            .find(|l| l.starts_with("worker-2"));
        if let Some(line) = line.filter(|l| l.contains(want)) {
            return Ok(line.to_string());
        }
        ensure!(
            Instant::now() < deadline,
            "the leader's status never showed worker-2's last panic ({want:?}):\n{status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The leader's `xylem status --json` names worker-2's panic; `xylem events --json` parses.
fn check_json(cluster: &mut Cluster, boot_id: &str) -> Result<(), HarnessError> {
    let leader = wait_leader(cluster, &[1, 2, 3])?;
    let parse = |text: &str| -> Result<serde_json::Value, HarnessError> {
        serde_json::from_str(text.trim())
            .map_err(|e| HarnessError::Check(format!("not one JSON object ({e}): {text:?}")))
    };
    let status = parse(&cluster.node(leader).command("xylem status --json", CMD)?)?;
    let worker2 = status["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == "worker-2"))
        .ok_or_else(|| HarnessError::Check(format!("no worker-2 in {status}")))?;
    ensure!(
        status["format"] == "xylem-status/1"
            && status["quorum"]["ok"] == true
            && worker2["last_panic"]["kind"] == "panicked"
            && worker2["last_panic"]["boot_id"] == boot_id
            && worker2["last_panic"]["message"]
                .as_str()
                .is_some_and(|m| MESSAGE.starts_with(m) && m.len() > 20),
        "xylem status --json on the leader: {status}"
    );
    let events = parse(&cluster.node(leader).command("xylem events 5 --json", CMD)?)?;
    ensure!(
        events["format"] == "xylem-events/1"
            && events["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty() && e.len() <= 5),
        "xylem events --json: {events}"
    );
    Ok(())
}

fn restart_and_check_console(cluster: &mut Cluster, want: &str) -> Result<Event, HarnessError> {
    cluster.restart(VICTIM)?;
    let console = cluster.node(VICTIM).output();
    let line = console
        .lines()
        .find(|l| l.contains("last panic:"))
        .ok_or_else(|| HarnessError::Check(format!("no 'last panic:' line at boot:\n{console}")))?;
    ensure!(line.contains(want), "boot said {line:?}, expected {want:?}");
    cluster
        .node(VICTIM)
        .wait_event("last_panic on COM2", CMD, |e| e.kind == "last_panic")
}

pub fn records(env: &Env) -> Result<(), HarnessError> {
    let mut cluster = control::start(env, "crash-record", 32)?;
    // Something in every node's control-plane history, for `xylem events --json`.
    control::apply(&mut cluster, "web", 1)?;
    let dir = cluster.fabric.dir().to_path_buf();
    ensure!(
        crash_record::decode(&read_record(&dir, VICTIM)?) == Slot::Blank,
        "a fresh disk has a crash record"
    );

    // 1. A panic: recorded, reported three ways, then marked reported.
    let panic = crash(&mut cluster, &format!("crash panic {MESSAGE}"))?;
    let boot_id = panic.get("boot_id").unwrap_or("?").to_string();
    let Slot::Valid(record) = crash_record::decode(&read_record(&dir, VICTIM)?) else {
        return Err(HarnessError::Check(
            "the disk holds no valid crash record".into(),
        ));
    };
    ensure!(
        format!("{:016x}", record.boot_id) == boot_id
            && record.message.as_str() == MESSAGE
            && record.exception.is_none()
            && record.location.as_str().contains("shell/crash.rs")
            && !record.frames().is_empty()
            && record.reported_by.is_none(),
        "the record on disk: {record:?} (panic event {})",
        panic.raw
    );
    let event = restart_and_check_console(&mut cluster, MESSAGE)?;
    ensure!(
        event.get("status") == Some("valid")
            && event.get("boot_id") == Some(boot_id.as_str())
            && event.get("message") == Some(MESSAGE.replace(' ', "_").as_str()),
        "last_panic event {}",
        event.raw
    );
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    let line = wait_status_panic(&mut cluster, &MESSAGE[..30])?;
    eprintln!("    leader's status: {line}");
    check_json(&mut cluster, &boot_id)?;
    let Slot::Valid(acked) = crash_record::decode(&read_record(&dir, VICTIM)?) else {
        return Err(HarnessError::Check(
            "the record vanished after the report".into(),
        ));
    };
    ensure!(
        acked.reported_by.is_some() && acked.boot_id == record.boot_id,
        "the record was not marked reported: {acked:?}"
    );

    // 2. A page fault, whose record is flipped on disk before the reboot.
    let fault = crash(&mut cluster, "crash pagefault")?;
    let Slot::Valid(record) = crash_record::decode(&read_record(&dir, VICTIM)?) else {
        return Err(HarnessError::Check(
            "no valid record after the page fault".into(),
        ));
    };
    ensure!(
        record.exception.map(|e| e.vector) == Some(14) && record.cr2 == 0xdead_beef,
        "page-fault record {record:?} (event {})",
        fault.raw
    );
    corrupt_record(&dir, VICTIM)?;
    ensure!(
        matches!(
            crash_record::decode(&read_record(&dir, VICTIM)?),
            Slot::Corrupt(_)
        ),
        "the flipped record still decodes"
    );
    let event = restart_and_check_console(&mut cluster, "crash record corrupt")?;
    ensure!(
        event.get("status") == Some("corrupt") && event.get("message").is_none(),
        "last_panic event for a corrupt record: {}",
        event.raw
    );
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    let line = wait_status_panic(&mut cluster, "crash record corrupt")?;
    eprintln!("    leader's status: {line}");
    ensure!(
        crash_record::decode(&read_record(&dir, VICTIM)?) == Slot::Blank,
        "the corrupt record was not cleared after its report"
    );
    Ok(())
}
