//! Cells that serve: the `http` payload answering a real TCP client on the fabric (the
//! host endpoint, `crate::hostnet`), socket error paths from inside a cell, every socket
//! freed when a cell is killed, per-cell and node-wide memory limits, and a 10,000-connection
//! storm that leaks nothing.
//!
//! Each scenario boots one node on a fabric with one extra port for the host endpoint
//! (`hostnet::HOST_ID`, 169.254.77.250).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::hostnet::{self, http, HostNet, HostStream, NetError};
use crate::node::Node;
use crate::{ensure, Env, HarnessError};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
const NET_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of the storm.
pub const STORM_CONNECTIONS: usize = 10_000;
/// Connections the storm keeps in flight at once.
const STORM_PARALLEL: usize = 8;
/// Listen backlog of the `http` payload (`cell/payloads/src/bin/http.rs`).
const HTTP_BACKLOG: u64 = 32;
/// Connect attempts per storm connection: a SYN that finds the listen backlog full is
/// answered with RST (smoltcp has no SYN queue), and the client tries again, as real clients
/// do. Refusals are counted and reported.
const STORM_TRIES: usize = 100;

fn check<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> Result<T, HarnessError> {
    result.map_err(|e| HarnessError::Check(format!("{what}: {e}")))
}

/// One node plus the host endpoint.
pub fn start(env: &Env, name: &str) -> Result<(Cluster, HostNet), HarnessError> {
    let cluster = Cluster::start_with_ports(env, name, 1, 11, &[hostnet::HOST_ID])?;
    let host = check(
        "host endpoint",
        HostNet::start(cluster.fabric.dir(), hostnet::HOST_ID),
    )?;
    Ok((cluster, host))
}

fn cell_id(out: &str) -> Result<String, HarnessError> {
    out.strip_prefix("cell ")
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| HarnessError::Check(format!("no cell id in {out:?}")))
}

/// Starts a cell and waits until its log shows `ready` (or the cell is gone).
pub fn run_cell(node: &mut Node, spec: &str, ready: &str) -> Result<String, HarnessError> {
    let out = node.command(&format!("cell run {spec}"), COMMAND_TIMEOUT)?;
    let id = cell_id(&out)?;
    wait_log(node, &id, ready, Duration::from_secs(20))?;
    Ok(id)
}

/// Waits until cell `id`'s log contains `text`; returns the log.
pub fn wait_log(
    node: &mut Node,
    id: &str,
    text: &str,
    timeout: Duration,
) -> Result<String, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        let logs = node.command(&format!("cell logs {id} 200"), COMMAND_TIMEOUT)?;
        if logs.contains(text) {
            return Ok(logs);
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Check(format!(
                "cell {id} never logged {text:?}; log: {logs:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(open, lingering, buffer bytes)` from the `net` command's cell-socket line.
pub fn cell_sockets(node: &mut Node) -> Result<(u64, u64, u64), HarnessError> {
    let out = node.command("net", COMMAND_TIMEOUT)?;
    let line = out
        .lines()
        .find(|l| l.starts_with("cell sockets:"))
        .ok_or_else(|| HarnessError::Check(format!("no cell sockets line in {out:?}")))?;
    let field = |name: &str| -> Option<u64> {
        let rest = line.split(&format!(" {name} ")).nth(1)?;
        rest.split([' ', '/']).next()?.parse().ok()
    };
    match (field("open"), field("lingering"), field("buffers")) {
        (Some(open), Some(lingering), Some(bytes)) => Ok((open, lingering, bytes)),
        _ => Err(HarnessError::Check(format!("cannot read {line:?}"))),
    }
}

/// `(free frames, heap bytes used)` from `mem`.
pub fn memory(node: &mut Node) -> Result<(u64, u64), HarnessError> {
    let out = node.command("mem", COMMAND_TIMEOUT)?;
    let free = out
        .split("free ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let heap = out
        .split(" KiB (")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    match (free, heap) {
        (Some(free), Some(heap)) => Ok((free, heap)),
        _ => Err(HarnessError::Check(format!("cannot read mem: {out:?}"))),
    }
}

/// Finished cells the node keeps listed (`kernel/src/cells/table.rs`, `FINISHED_KEPT`), plus
/// one: after this many finished cells, one more finishing evicts an old record, so the heap
/// does not grow with finished cells any more and a leak check can demand equality.
const FINISHED_KEPT_PLUS_ONE: usize = 33;

/// Runs short cells until the finished-cell table is at its cap (see above).
fn fill_finished_table(node: &mut Node) -> Result<(), HarnessError> {
    for _ in 0..FINISHED_KEPT_PLUS_ONE {
        node.command("cell run crasher exit 0 0", COMMAND_TIMEOUT)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Heap difference between finished-cell records of different payloads (names, arguments).
const RECORD_SLACK_BYTES: u64 = 1024;

/// Heap growth the storm may cause without a leak: containers keep the capacity of their
/// busiest moment. Far below 10,000 connections' worth of any per-connection leak.
const HEAP_SLACK_BYTES: u64 = 4096;

/// As [`memory`], the smallest heap figure of five samples 100 ms apart (what other tasks
/// hold for a moment is not a leak).
fn settled_memory(node: &mut Node) -> Result<(u64, u64), HarnessError> {
    let mut best = memory(node)?;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(100));
        let now = memory(node)?;
        best = (now.0, best.1.min(now.1));
    }
    Ok(best)
}

/// Waits until no cell socket is lingering and at most `open` are open.
fn wait_sockets_settle(node: &mut Node, open: u64) -> Result<(u64, u64, u64), HarnessError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = cell_sockets(node)?;
        if now.0 <= open && now.1 == 0 {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            let net = node.command("net", COMMAND_TIMEOUT)?;
            let states = net.lines().find(|l| l.contains("tcp states")).unwrap_or("");
            return Err(HarnessError::Check(format!(
                "cell sockets did not settle to {open} open, 0 lingering: {now:?}; {}",
                states.trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn connect(host: &HostNet, port: u16) -> Result<HostStream, HarnessError> {
    check(
        "connect",
        host.connect(hostnet::node_addr(1, port), NET_TIMEOUT),
    )
}

fn get(stream: &mut HostStream, path: &str) -> Result<http::Response, HarnessError> {
    check(&format!("GET {path}"), http::get(stream, path, NET_TIMEOUT))
}

/// `http` answers a real TCP client on the fabric: `/`, `/healthz`, keep-alive, 404, 405,
/// 400, 413, `Connection: close`, two connections at once; stopping the cell frees its
/// sockets and the port then refuses.
pub fn http_serves(env: &Env) -> Result<(), HarnessError> {
    let (mut cluster, host) = start(env, "cells-http")?;
    let id = run_cell(cluster.node(1), "http 80", "http: serving")?;
    let first = connect(&host, 80);
    if first.is_err() {
        eprintln!("DEBUG fabric: {}", cluster.fabric.report());
        eprintln!("DEBUG host: {:?}", host.with(|e| e.device_stats()));
        eprintln!(
            "DEBUG net: {}",
            cluster.node(1).command("net", COMMAND_TIMEOUT)?
        );
    }
    let node = cluster.node(1);
    let mut first = first?;
    let root = get(&mut first, "/")?;
    ensure!(
        root.status == 200 && root.text() == format!("node=worker-1 cell=cell-{id} requests=1\n"),
        "GET / answered {} {:?}",
        root.status,
        root.text()
    );
    let again = get(&mut first, "/")?;
    ensure!(
        again.text().ends_with("requests=2\n"),
        "keep-alive: {:?}",
        again.text()
    );
    let health = get(&mut first, "/healthz")?;
    ensure!(
        health.status == 200 && health.text() == "ok\n",
        "healthz: {health:?}"
    );
    let missing = get(&mut first, "/nope")?;
    ensure!(
        missing.status == 404,
        "404 expected, got {}",
        missing.status
    );
    let post = check(
        "POST",
        http::exchange(
            &mut first,
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            NET_TIMEOUT,
        ),
    )?;
    ensure!(post.status == 405, "405 expected, got {}", post.status);
    // A second connection is served while the first stays open and idle.
    let mut second = connect(&host, 80)?;
    ensure!(
        get(&mut second, "/healthz")?.status == 200,
        "second connection"
    );
    let close = check(
        "Connection: close",
        http::exchange(
            &mut second,
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            NET_TIMEOUT,
        ),
    )?;
    ensure!(
        close.header("connection") == Some("close"),
        "close header: {close:?}"
    );
    ensure!(
        check("read after close", second.read(&mut [0u8; 16], NET_TIMEOUT))? == 0,
        "server did not close after Connection: close"
    );
    // Bad requests: 400 (and the server closes), 413 for an oversized head.
    let mut bad = connect(&host, 80)?;
    let garbage = check(
        "garbage",
        http::exchange(&mut bad, b"NOT HTTP AT ALL\r\n\r\n", NET_TIMEOUT),
    )?;
    ensure!(
        garbage.status == 400,
        "400 expected, got {}",
        garbage.status
    );
    let mut big = connect(&host, 80)?;
    let mut head = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    head.resize(10_000, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let too_big = check(
        "oversized head",
        http::exchange(&mut big, &head, NET_TIMEOUT),
    )?;
    ensure!(
        too_big.status == 413,
        "413 expected, got {}",
        too_big.status
    );
    // The first connection still works after all that.
    ensure!(
        get(&mut first, "/")?.text().contains("requests="),
        "first connection died"
    );
    drop((first, second, bad, big));
    let stopped = node.command(&format!("cell stop {id}"), COMMAND_TIMEOUT)?;
    ensure!(stopped.contains("stopped"), "stop: {stopped:?}");
    wait_sockets_settle(node, 0)?;
    match host.connect(hostnet::node_addr(1, 80), NET_TIMEOUT) {
        Err(NetError::Refused) => Ok(()),
        other => Err(HarnessError::Check(format!(
            "port 80 after the cell stopped: {:?}",
            other.map(|_| "connected")
        ))),
    }
}

/// `nettest` checks the socket calls' error paths from inside a cell (bad descriptors,
/// including one another cell holds, pointers and arguments, limits, `ECONNREFUSED` from
/// the host endpoint).
pub fn net_errors(env: &Env) -> Result<(), HarnessError> {
    let (mut cluster, _host) = start(env, "cells-net-errors")?;
    let node = cluster.node(1);
    // Another cell holds descriptors 3..=66 (nettest checks that 40 is not its own).
    let hog = run_cell(node, "sockhog 64 20000", "holding 64 sockets")?;
    let ip = hostnet::fabric_ip(hostnet::HOST_ID);
    let out = node.command(&format!("cell run nettest {ip}"), COMMAND_TIMEOUT)?;
    let id = cell_id(&out)?;
    let logs = wait_log(node, &id, "passed,", Duration::from_secs(60))?;
    ensure!(
        logs.contains(" 0 failed") && !logs.contains("FAIL"),
        "nettest failures: {logs}"
    );
    let exit = node.wait_event("nettest exit", Duration::from_secs(10), |e| {
        e.kind == "cell_exit" && e.get("cell") == Some(id.as_str())
    })?;
    ensure!(
        exit.get("reason") == Some("exited") && exit.get("code") == Some("0"),
        "nettest exit: {exit:?}"
    );
    node.command(&format!("cell stop {hog}"), COMMAND_TIMEOUT)?;
    wait_sockets_settle(node, 0)?;
    Ok(())
}

/// A cell holding 64 sockets (listeners and UDP), plus one with established connections,
/// is killed: every socket is freed (count, buffer bytes, frames, heap back to baseline).
pub fn sockets_freed_on_kill(env: &Env) -> Result<(), HarnessError> {
    let (mut cluster, host) = start(env, "cells-sockets-freed")?;
    let node = cluster.node(1);
    // Warm up allocations that stay (the socket table, tasks, finished-cell records)
    // before the baseline.
    let warm = run_cell(node, "sockhog 64 21000", "holding")?;
    node.command(&format!("cell stop {warm}"), COMMAND_TIMEOUT)?;
    wait_sockets_settle(node, 0)?;
    fill_finished_table(node)?;
    let (frames_before, heap_before) = settled_memory(node)?;
    let id = run_cell(node, "sockhog 64 20000", "holding 64 sockets")?;
    let (open, _, bytes) = cell_sockets(node)?;
    ensure!(
        open >= 64 && bytes > 0,
        "sockhog: {open} open, {bytes} bytes"
    );
    node.command(&format!("cell stop {id}"), COMMAND_TIMEOUT)?;
    let (open, lingering, bytes) = wait_sockets_settle(node, 0)?;
    ensure!(
        open == 0 && lingering == 0 && bytes == 0,
        "after kill: {open} open, {lingering} lingering, {bytes} bytes"
    );
    // An echo cell killed while it has live connections: the peers see resets.
    let echo = run_cell(node, "echo 7", "listening")?;
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut stream = connect(&host, 7)?;
        check("echo write", stream.write_all(b"ping", NET_TIMEOUT))?;
        let mut buf = [0u8; 4];
        let n = check("echo read", stream.read(&mut buf, NET_TIMEOUT))?;
        ensure!(&buf[..n] == b"ping", "echo answered {:?}", &buf[..n]);
        streams.push(stream);
    }
    node.command(&format!("cell stop {echo}"), COMMAND_TIMEOUT)?;
    let (open, lingering, bytes) = wait_sockets_settle(node, 0)?;
    ensure!(
        open == 0 && lingering == 0 && bytes == 0,
        "after echo kill: {open}/{lingering}/{bytes}"
    );
    for mut stream in streams {
        match stream.read(&mut [0u8; 4], NET_TIMEOUT) {
            Ok(0) | Err(NetError::Reset) => {}
            other => {
                return Err(HarnessError::Check(format!(
                    "a connection of the killed cell still works: {other:?}"
                )))
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let (frames_after, heap_after) = settled_memory(node)?;
    ensure!(
        frames_after == frames_before,
        "free frames {frames_before} -> {frames_after}"
    );
    // Two finished-cell records (sockhog, echo) replaced two older ones (crasher): their
    // names and arguments differ by some tens of bytes. A leak of even 15 bytes per socket
    // (72 sockets) would exceed this; socket counts and buffer bytes were checked exactly.
    ensure!(
        heap_after <= heap_before + RECORD_SLACK_BYTES,
        "heap {heap_before} -> {heap_after} bytes"
    );
    Ok(())
}

/// A memory-hungry cell gets `ENOMEM` at its limit (`--memory-mib 4`) and the node lives;
/// a cell allowed more than the node has exhausts the node's frames: `memory_low`, `ENOMEM`,
/// and the node keeps serving (an `http` cell answers throughout); every frame comes back.
pub fn memory_limits(env: &Env) -> Result<(), HarnessError> {
    let (mut cluster, host) = start(env, "cells-memory")?;
    let node = cluster.node(1);
    let (frames_before, _) = memory(node)?;
    let out = node.command("cell run memhog 256 --memory-mib 4", COMMAND_TIMEOUT)?;
    let id = cell_id(&out)?;
    let logs = wait_log(node, &id, "memhog: ok", Duration::from_secs(30))?;
    let mapped_kib: u64 = logs
        .split("mapped ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| HarnessError::Check(format!("no mapped figure: {logs}")))?;
    ensure!(
        logs.contains("then ENOMEM") && (2048..4096).contains(&mapped_kib),
        "a 4 MiB cell mapped {mapped_kib} KiB: {logs}"
    );
    let up = node.command("uptime", COMMAND_TIMEOUT)?;
    ensure!(up.starts_with("up "), "node unresponsive: {up:?}");
    // Node-wide: the http cell keeps answering while a greedy cell takes every frame.
    let http_id = run_cell(node, "http 80", "http: serving")?;
    let _ = http_id;
    let hog = node.command(
        "cell run memhog 1024 3000 --memory-mib 4096",
        COMMAND_TIMEOUT,
    )?;
    let hog_id = cell_id(&hog)?;
    let logs = wait_log(node, &hog_id, "holding", Duration::from_secs(60))?;
    ensure!(logs.contains("then ENOMEM"), "greedy memhog: {logs}");
    node.wait_event("memory_low", Duration::from_secs(10), |e| {
        e.kind == "memory_low"
    })?;
    let mut stream = connect(&host, 80)?;
    ensure!(
        get(&mut stream, "/healthz")?.status == 200,
        "http under memory pressure"
    );
    let up = node.command("uptime", COMMAND_TIMEOUT)?;
    ensure!(
        up.starts_with("up "),
        "node unresponsive under pressure: {up:?}"
    );
    wait_log(node, &hog_id, "memhog: ok", Duration::from_secs(30))?;
    node.wait_event("memory_ok", Duration::from_secs(10), |e| {
        e.kind == "memory_ok"
    })?;
    // "ok" is printed before the cell exits; its address space returns at the exit.
    node.wait_event("the greedy memhog's exit", Duration::from_secs(10), |e| {
        e.kind == "cell_exit" && e.get("cell") == Some(hog_id.as_str())
    })?;
    drop(stream);
    node.command(&format!("cell stop {http_id}"), COMMAND_TIMEOUT)?;
    wait_sockets_settle(node, 0)?;
    let (frames_after, _) = memory(node)?;
    ensure!(
        frames_after == frames_before,
        "free frames {frames_before} -> {frames_after}"
    );
    Ok(())
}

/// One storm connection, by kind: a full request, a bare connect+close (FIN), a connect+
/// reset (RST), or a half request then reset. Refused connects are retried (and counted).
fn storm_one(host: &HostNet, index: usize, refused: &AtomicUsize) -> Result<(), String> {
    let mut tries = 0;
    let mut stream = loop {
        match host.connect(hostnet::node_addr(1, 80), NET_TIMEOUT) {
            Ok(stream) => break stream,
            Err(NetError::Refused) if tries + 1 < STORM_TRIES => {
                tries += 1;
                refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("connect {index} (try {}): {e}", tries + 1)),
        }
    };
    match index % 4 {
        0 => {
            let answer = http::get(&mut stream, "/healthz", NET_TIMEOUT)
                .map_err(|e| format!("GET {index}: {e}"))?;
            if answer.status != 200 {
                return Err(format!("GET {index}: status {}", answer.status));
            }
            stream.close();
        }
        1 => stream.close(),
        2 => stream.abort(),
        _ => {
            let _ = stream.write_all(b"GET / HT", NET_TIMEOUT);
            stream.abort();
        }
    }
    Ok(())
}

/// Opens and drops `count` connections, `STORM_PARALLEL` at a time. Returns the failures
/// and how many connects were refused (and retried).
fn storm(host: &HostNet, count: usize) -> (Vec<String>, usize) {
    let next = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..STORM_PARALLEL {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return;
                }
                if let Err(why) = storm_one(host, index, &refused) {
                    failures.lock().expect("poisoned").push(why);
                }
            });
        }
    });
    (
        failures.into_inner().expect("poisoned"),
        refused.into_inner(),
    )
}

/// 10,000 connections opened and dropped (requests, FINs, RSTs, half requests): the cell
/// keeps serving, and sockets, frames and heap are back to the baseline afterwards.
pub fn connection_storm(env: &Env) -> Result<(), HarnessError> {
    let (mut cluster, host) = start(env, "cells-conn-storm")?;
    let node = cluster.node(1);
    run_cell(node, "http 80", "http: serving")?;
    let (warm, _) = storm(&host, 200);
    if !warm.is_empty() {
        let net = node.command("net", COMMAND_TIMEOUT)?;
        let ls = node.command("cell logs 1 20", COMMAND_TIMEOUT)?;
        return Err(HarnessError::Check(format!(
            "warm-up failures: {:?}; host: {:?} {:?}; net: {net}; log: {ls}",
            &warm[..warm.len().min(5)],
            host.with(|e| e.device_stats()),
            host.socket_counts()
        )));
    }
    // Settled: only the listener's backlog sockets (the http payload's BACKLOG, 32) remain.
    let (open_before, _, bytes_before) = wait_sockets_settle(node, HTTP_BACKLOG)?;
    let (frames_before, heap_before) = settled_memory(node)?;
    let started = Instant::now();
    let (failures, refused) = storm(&host, STORM_CONNECTIONS);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "    {STORM_CONNECTIONS} connections in {secs:.1} s ({:.0}/s), {} failed, {refused} refused connects retried",
        STORM_CONNECTIONS as f64 / secs,
        failures.len()
    );
    ensure!(
        failures.is_empty(),
        "{} of {STORM_CONNECTIONS} storm connections failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let mut stream = connect(&host, 80)?;
    ensure!(
        get(&mut stream, "/healthz")?.status == 200,
        "http after the storm"
    );
    drop(stream);
    let (open_after, _, bytes_after) = wait_sockets_settle(node, open_before)?;
    ensure!(
        open_after == open_before && bytes_after == bytes_before,
        "sockets {open_before} open / {bytes_before} bytes before, {open_after} / {bytes_after} after"
    );
    let (frames_after, heap_after) = settled_memory(node)?;
    ensure!(
        frames_after == frames_before,
        "free frames {frames_before} -> {frames_after}"
    );
    // Equality up to container high-water marks (a vector's capacity after the busiest
    // moment): a leak of even one byte per connection would be 10,000 bytes.
    ensure!(
        heap_after <= heap_before + HEAP_SLACK_BYTES,
        "heap {heap_before} -> {heap_after} bytes after the storm"
    );
    let (host_open, host_closing) = host.socket_counts();
    eprintln!("    host endpoint: {host_open} sockets, {host_closing} closing");
    Ok(())
}
