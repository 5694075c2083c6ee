//! Operating the cluster as its clients see it (`docs/operations.md`, "Behind the front
//! door"): a drain and a rolling update of `web` (the `http` payload, port 80) on worker-1,
//! worker-2 and the witness, while a client on the host requests through the gateway every
//! 20 ms. Zero failed requests is the verdict, which needs both halves of operate's
//! readiness: a replacement is promoted only once it listens on the port, and the cell it
//! replaces is first quiesced (no new connections; it is no longer a backend anywhere) and
//! stopped only after `stop_grace_ms`.
//!
//! The client ([`Client`]): a fresh connection every 20 ms (open loop, 2 s budget each), one
//! keep-alive connection with a request every 20 ms, and a *slow* request every 50 ms (its
//! head sent in two parts [`SLOW_PAUSE`] apart, so about six are in flight inside a cell at
//! any time: a cell stopped without a grace would cut those). The keep-alive side behaves as HTTP
//! clients do (RFC 9112 §9.3.1): a request on a reused connection that the server closed
//! while idle — no byte of an answer came back — is retried once on a fresh connection; such
//! retries are counted and reported, a second failure is a failed request.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::hostnet::gateway::{Gateway, Target};
use crate::hostnet::{self, HostNet};
use crate::scenarios::control::{cell_table, committed, wait_leader, wait_running};
use crate::scenarios::frontdoor::{FrontDoorRig, GATEWAY_ID, WEB_VIP};
use crate::scenarios::membership::wait_all_alive;
use crate::{ensure, Env, HarnessError};

const CMD: Duration = Duration::from_secs(10);
/// A drain or rollout must finish within this.
const OPERATE_MAX: Duration = Duration::from_secs(60);
/// How often the client starts a request.
const EVERY: Duration = Duration::from_millis(20);
/// Each request's budget.
const BUDGET: Duration = Duration::from_secs(2);
/// The pause inside a slow request's head.
const SLOW_PAUSE: Duration = Duration::from_millis(300);
/// How often a slow request starts.
const SLOW_EVERY: Duration = Duration::from_millis(50);
/// Open-loop requests in flight at most (beyond, a tick is skipped and counted failed).
const IN_FLIGHT_MAX: usize = 200;

fn check<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, HarnessError> {
    r.map_err(|e| HarnessError::Check(format!("{what}: {e}")))
}

/// What one answer said: the node and the greeting (`None` without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub node: String,
    pub greeting: Option<String>,
}

fn answer_of(body: &str) -> Result<Answer, String> {
    let field = |key: &str| {
        body.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    Ok(Answer {
        node: field("node=").ok_or_else(|| format!("no node= in {body:?}"))?,
        greeting: field("greeting="),
    })
}

/// One `GET /` on a fresh connection (`Connection: close`).
fn get_fresh(gateway: SocketAddrV4) -> Result<Answer, String> {
    get_fresh_paced(gateway, None)
}

/// One `GET /` on a fresh connection; with `pause`, the head goes in two parts that far
/// apart (a slow client: the request is in flight inside the cell meanwhile).
fn get_fresh_paced(gateway: SocketAddrV4, pause: Option<Duration>) -> Result<Answer, String> {
    let mut s = TcpStream::connect_timeout(&gateway.into(), BUDGET).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(BUDGET))
        .map_err(|e| e.to_string())?;
    let head: &[u8] = b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n";
    if let Some(pause) = pause {
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.write_all(&head[..16]).map_err(|e| e.to_string())?;
        std::thread::sleep(pause);
        s.write_all(&head[16..]).map_err(|e| e.to_string())?;
    } else {
        s.write_all(head).map_err(|e| e.to_string())?;
    }
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    match hostnet::http::parse_response(&bytes) {
        Ok(Some((r, _))) if r.status == 200 => answer_of(&r.text()),
        Ok(Some((r, _))) => Err(format!("status {}", r.status)),
        _ => Err(format!("no answer ({} bytes)", bytes.len())),
    }
}

/// How a keep-alive request failed.
enum KeepFail {
    /// The reused connection was closed (or reset) before any byte of the answer.
    ClosedIdle(String),
    Other(String),
}

/// One `GET /` on the keep-alive connection (opened if needed).
fn get_keepalive(conn: &mut Option<TcpStream>, gateway: SocketAddrV4) -> Result<Answer, KeepFail> {
    let reused = conn.is_some();
    let fail = |e: String, got: usize| {
        if reused && got == 0 {
            KeepFail::ClosedIdle(e)
        } else {
            KeepFail::Other(e)
        }
    };
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&gateway.into(), BUDGET)
            .map_err(|e| KeepFail::Other(e.to_string()))?;
        s.set_read_timeout(Some(BUDGET))
            .map_err(|e| KeepFail::Other(e.to_string()))?;
        *conn = Some(s);
    }
    let s = conn.as_mut().expect("just set");
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .map_err(|e| fail(e.to_string(), 0))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s
            .read(&mut chunk)
            .map_err(|e| fail(e.to_string(), buf.len()))?;
        if n == 0 {
            return Err(fail("closed".into(), buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(Some((r, _))) = hostnet::http::parse_response(&buf) {
            if r.status != 200 {
                return Err(KeepFail::Other(format!("status {}", r.status)));
            }
            return answer_of(&r.text()).map_err(KeepFail::Other);
        }
    }
}

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct Sample {
    pub started: Instant,
    pub done: Instant,
    pub keepalive: bool,
    pub slow: bool,
    pub outcome: Result<Answer, String>,
}

/// The client: open-loop fresh connections plus one keep-alive connection.
pub struct Client {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    /// Keep-alive requests retried on a fresh connection after an idle close.
    retries: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Client {
    pub fn start(gateway: SocketAddrV4) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let retries = Arc::new(AtomicUsize::new(0));
        let open = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || open_loop(gateway, &stop, &samples))
        };
        let keep = {
            let (stop, samples, retries) = (stop.clone(), samples.clone(), retries.clone());
            std::thread::spawn(move || keepalive_loop(gateway, &stop, &samples, &retries))
        };
        let slow = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || open_loop_paced(gateway, &stop, &samples, true))
        };
        Client {
            stop,
            samples,
            retries,
            threads: vec![open, keep, slow],
        }
    }

    /// Stops; every sample in completion order, and the keep-alive retries.
    pub fn finish(self) -> (Vec<Sample>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        // Let stragglers of the open loop land.
        std::thread::sleep(BUDGET);
        let mut v = self.samples.lock().expect("poisoned").clone();
        v.sort_by_key(|s| s.done);
        (v, self.retries.load(Ordering::Relaxed))
    }
}

fn open_loop(gateway: SocketAddrV4, stop: &AtomicBool, samples: &Arc<Mutex<Vec<Sample>>>) {
    open_loop_paced(gateway, stop, samples, false);
}

fn open_loop_paced(
    gateway: SocketAddrV4,
    stop: &AtomicBool,
    samples: &Arc<Mutex<Vec<Sample>>>,
    slow: bool,
) {
    let (every, pause) = if slow {
        (SLOW_EVERY, Some(SLOW_PAUSE))
    } else {
        (EVERY, None)
    };
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if in_flight.load(Ordering::Relaxed) >= IN_FLIGHT_MAX {
            samples.lock().expect("poisoned").push(Sample {
                started,
                done: started,
                keepalive: false,
                slow,
                outcome: Err("client saturated".into()),
            });
        } else {
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (samples, in_flight) = (samples.clone(), in_flight.clone());
            std::thread::spawn(move || {
                let outcome = get_fresh_paced(gateway, pause);
                samples.lock().expect("poisoned").push(Sample {
                    started,
                    done: Instant::now(),
                    keepalive: false,
                    slow,
                    outcome,
                });
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

fn keepalive_loop(
    gateway: SocketAddrV4,
    stop: &AtomicBool,
    samples: &Mutex<Vec<Sample>>,
    retries: &AtomicUsize,
) {
    let mut conn: Option<TcpStream> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = match get_keepalive(&mut conn, gateway) {
            Ok(a) => Ok(a),
            Err(KeepFail::ClosedIdle(_)) => {
                retries.fetch_add(1, Ordering::Relaxed);
                conn = None;
                get_keepalive(&mut conn, gateway).map_err(|e| match e {
                    KeepFail::ClosedIdle(e) | KeepFail::Other(e) => e,
                })
            }
            Err(KeepFail::Other(e)) => Err(e),
        };
        if outcome.is_err() {
            conn = None;
        }
        samples.lock().expect("poisoned").push(Sample {
            started,
            done: Instant::now(),
            keepalive: true,
            slow: false,
            outcome,
        });
        next += EVERY;
        match next.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => next = Instant::now(),
        }
    }
}

/// Failed requests by reason, most frequent first.
fn failures(samples: &[Sample]) -> Vec<(String, usize)> {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for s in samples {
        if let Err(e) = &s.outcome {
            let key: String = e.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
            let tag = match (s.keepalive, s.slow) {
                (true, _) => "keep-alive: ",
                (_, true) => "slow: ",
                _ => "",
            };
            *kinds.entry(format!("{tag}{key}")).or_default() += 1;
        }
    }
    let mut v: Vec<_> = kinds.into_iter().collect();
    v.sort_by_key(|k| std::cmp::Reverse(k.1));
    v
}

/// Longest time between two successful answers, ms.
fn longest_gap_ms(samples: &[Sample]) -> f64 {
    let mut last: Option<Instant> = None;
    let mut gap = Duration::ZERO;
    for s in samples.iter().filter(|s| s.outcome.is_ok()) {
        if let Some(prev) = last {
            gap = gap.max(s.done.saturating_duration_since(prev));
        }
        last = Some(s.done);
    }
    gap.as_secs_f64() * 1000.0
}

/// A three-node cluster (worker-1, worker-2, the witness) with `web` applied by `apply`
/// (http, port 80) running on `on`, the address owned by the witness, and a gateway.
fn start(
    env: &Env,
    name: &str,
    seed: u64,
    apply: &str,
    on: &[&str],
) -> Result<FrontDoorRig, HarnessError> {
    let mut cluster = Cluster::start_with_ports(env, name, 3, seed, &[GATEWAY_ID])?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    wait_leader(&mut cluster, &[1, 2, 3])?;
    let out = cluster.node(1).command(apply, CMD)?;
    ensure!(
        out.lines()
            .filter(|l| l.starts_with("committed at index"))
            .count()
            == 2,
        "{apply} printed {out:?}"
    );
    wait_running(&mut cluster, 1, "web", on)?;
    let net = check(
        "gateway port",
        HostNet::start(cluster.fabric.dir(), GATEWAY_ID),
    )?;
    let target = Target {
        service: "web".into(),
        port: 80,
        dns_servers: (1..=3).map(hostnet::fabric_ip).collect(),
    };
    let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    let gateway = check("gateway", Gateway::start(net.clone(), listen, target))?;
    let mut rig = FrontDoorRig {
        cluster,
        net,
        gateway,
    };
    rig.wait_owner(&[1, 2, 3], |o| o == Some(3))?;
    let deadline = Instant::now() + OPERATE_MAX;
    while rig.gateway.address() != Some(WEB_VIP) {
        ensure!(
            Instant::now() < deadline,
            "the gateway never resolved web.xylem to {WEB_VIP}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The path works end to end before the clock starts.
    let deadline = Instant::now() + OPERATE_MAX;
    while get_fresh(rig.gateway.listen).is_err() {
        ensure!(Instant::now() < deadline, "no answer through the gateway");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(rig)
}

fn write(cluster: &mut Cluster, command: &str) -> Result<(), HarnessError> {
    let out = cluster.node(1).command(command, CMD)?;
    // The serial console's echo of the command sometimes leads the answer: look at lines.
    ensure!(out.lines().any(committed), "{command} printed {out:?}");
    Ok(())
}

/// Every `web` cell in `xylem status` (any state), by node.
fn web_cells(status: &str) -> Vec<(String, String)> {
    cell_table(status)
        .into_iter()
        .filter(|(name, _, _)| name.starts_with("web/"))
        .map(|(_, node, state)| (node, state))
        .collect()
}

/// The client's verdict: no failed request, enough answers. Prints the figures, and when
/// each failed request started (ms from `t0`, the operator's command).
fn judge(what: &str, samples: &[Sample], retries: usize, t0: Instant) -> Result<(), HarnessError> {
    let ok = samples.iter().filter(|s| s.outcome.is_ok()).count();
    let failed = failures(samples);
    let gap = longest_gap_ms(samples);
    eprintln!(
        "    {what}: {ok} answers, {} failed {failed:?}, longest gap {gap:.0} ms, \
         keep-alive retries after an idle close {retries}",
        samples.len() - ok
    );
    let at = |i: Instant| {
        if i >= t0 {
            i.duration_since(t0).as_millis() as i64
        } else {
            -(t0.duration_since(i).as_millis() as i64)
        }
    };
    let when: Vec<(i64, i64)> = samples
        .iter()
        .filter(|s| s.outcome.is_err())
        .map(|s| (at(s.started), at(s.done)))
        .take(20)
        .collect();
    if !when.is_empty() {
        eprintln!("    failed requests (started, done) ms from the command: {when:?}");
    }
    ensure!(ok > 200, "{what}: too few answers ({ok})");
    let slow_ok = samples
        .iter()
        .filter(|s| s.slow && s.outcome.is_ok())
        .count();
    ensure!(slow_ok > 10, "{what}: too few slow answers ({slow_ok})");
    ensure!(
        failed.is_empty(),
        "{what}: clients saw failed requests: {failed:?}"
    );
    Ok(())
}

/// What the gateway and the owner's proxy counted (printed when a request failed).
fn diagnose(rig: &mut FrontDoorRig) {
    let s = &rig.gateway.stats;
    eprintln!(
        "    gateway: accepted {} relayed {} connect_failures {} refused_busy {}",
        s.accepted.load(Ordering::Relaxed),
        s.relayed.load(Ordering::Relaxed),
        s.connect_failures.load(Ordering::Relaxed),
        s.refused_busy.load(Ordering::Relaxed)
    );
    for id in 1..=3 {
        if let Ok(out) = rig.cluster.node(id).command("frontdoor", CMD) {
            for line in out
                .lines()
                .filter(|l| l.contains("proxy") || l.contains("answer"))
            {
                eprintln!("    node {id}: {}", line.trim());
            }
        }
    }
}

/// `xylem drain worker-2` while the client runs: `web`'s replica there moves to worker-1
/// make-before-break (the replacement listens before it takes the slot; the old cell is
/// quiesced, then stopped), with zero failed requests; worker-2 ends `drained` and runs no
/// `web` cell at all.
pub fn drain_clients(env: &Env) -> Result<(), HarnessError> {
    let mut rig = start(
        env,
        "operate-drain-clients",
        44,
        "xylem apply web --payload http --replicas 2 --port 80",
        &["worker-1", "worker-2"],
    )?;
    let client = Client::start(rig.gateway.listen);
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let drained = (|| -> Result<String, HarnessError> {
        write(&mut rig.cluster, "xylem drain worker-2")?;
        loop {
            let status = rig.cluster.node(1).command("xylem status", CMD)?;
            let cells = web_cells(&status);
            let running = cells.iter().filter(|(_, s)| s == "running").count();
            ensure!(
                running >= 2,
                "web ran {running} cells during the drain:\n{status}"
            );
            let done = status.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.first() == Some(&"worker-2") && words.last() == Some(&"drained")
            }) && cells.len() == 2
                && cells.iter().all(|(n, s)| n == "worker-1" && s == "running");
            if done {
                return Ok(status);
            }
            ensure!(
                t0.elapsed() < OPERATE_MAX,
                "drain not done within {OPERATE_MAX:?}:\n{status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })();
    let took = t0.elapsed();
    // Clients keep going a while after the old cell stopped.
    std::thread::sleep(Duration::from_secs(1));
    let (samples, retries) = client.finish();
    drained?;
    eprintln!(
        "    drain of worker-2 under clients: {} ms (old cell stopped)",
        took.as_millis()
    );
    judge("drain", &samples, retries, t0).inspect_err(|_| diagnose(&mut rig))?;
    let tail: Vec<&Sample> = samples.iter().rev().take(20).collect();
    ensure!(
        tail.iter()
            .all(|s| s.outcome.as_ref().is_ok_and(|a| a.node == "worker-1")),
        "after the drain, answers still came from elsewhere: {tail:?}"
    );
    let events = rig.cluster.node(1).command("xylem events 64", CMD)?;
    ensure!(
        events.contains("surge web/") && events.contains("promote web/"),
        "no make-before-break move in the events:\n{events}"
    );
    Ok(())
}

/// `web` rolled from greeting `v1` to `v2` while the client runs: zero failed requests, the
/// answers switch from v1 to v2 (and never back), and `rollout status` says complete. Then a
/// version that cannot start (an out-of-range port: it exits at once, every time) is rolled
/// back by the scheduler on its own, still with zero failed requests, all answers v2.
pub fn rollout_clients(env: &Env) -> Result<(), HarnessError> {
    let mut rig = start(
        env,
        "operate-rollout-clients",
        45,
        "xylem apply web --payload http --args 80 v1 --replicas 2 --port 80",
        &["worker-1", "worker-2"],
    )?;
    let first = check("GET", get_fresh(rig.gateway.listen))?;
    ensure!(
        first.greeting.as_deref() == Some("v1"),
        "before the rollout: {first:?}"
    );
    let client = Client::start(rig.gateway.listen);
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let rolled = (|| {
        write(
            &mut rig.cluster,
            "xylem apply web --payload http --args 80 v2 --replicas 2 --port 80",
        )?;
        loop {
            let out = rig
                .cluster
                .node(1)
                .command("xylem rollout status web", CMD)?;
            let status = rig.cluster.node(1).command("xylem status", CMD)?;
            let cells = web_cells(&status);
            let running = cells.iter().filter(|(_, s)| s == "running").count();
            ensure!(
                running >= 2,
                "web ran {running} cells during the rollout:\n{status}"
            );
            // Complete, and the old cells gone (stopped after their grace).
            if out.contains("state: complete") && cells.len() == 2 {
                return Ok(());
            }
            ensure!(
                t0.elapsed() < OPERATE_MAX,
                "rollout not done within {OPERATE_MAX:?}:\n{out}\n{status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })();
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (samples, retries) = client.finish();
    rolled?;
    eprintln!(
        "    rollout v1 -> v2 under clients: {} ms (old cells stopped)",
        took.as_millis()
    );
    judge("rollout", &samples, retries, t0).inspect_err(|_| diagnose(&mut rig))?;
    let greetings: Vec<&str> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().ok())
        .map(|a| a.greeting.as_deref().unwrap_or("-"))
        .collect();
    let first_v2 = greetings.iter().position(|g| *g == "v2");
    ensure!(
        greetings.first() == Some(&"v1") && first_v2.is_some(),
        "answers never switched from v1 to v2: {:?}",
        &greetings[..greetings.len().min(10)]
    );
    let tail = &greetings[greetings.len().saturating_sub(40)..];
    ensure!(
        tail.iter().all(|g| *g == "v2"),
        "after the rollout, answers still said: {tail:?}"
    );
    // A version that cannot run: rolled back by itself, clients never notice.
    let client = Client::start(rig.gateway.listen);
    let t0 = Instant::now();
    let back = (|| {
        write(
            &mut rig.cluster,
            "xylem apply web --payload http --args 99999 v3 --replicas 2 --port 80",
        )?;
        loop {
            let out = rig
                .cluster
                .node(1)
                .command("xylem rollout status web", CMD)?;
            if out.contains("rolled back: generation") {
                ensure!(out.contains("(http 80 v2)"), "rolled back to:\n{out}");
                return Ok(());
            }
            ensure!(
                t0.elapsed() < OPERATE_MAX,
                "no automatic rollback within {OPERATE_MAX:?}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })();
    let took = t0.elapsed();
    // Clients keep going while the failed replacement is given up and the v2 cells serve on.
    std::thread::sleep(Duration::from_secs(4));
    let (samples, retries) = client.finish();
    back?;
    eprintln!(
        "    crash-looping v3 rolled back under clients in {} ms",
        took.as_millis()
    );
    judge("rollback", &samples, retries, t0).inspect_err(|_| diagnose(&mut rig))?;
    ensure!(
        samples
            .iter()
            .filter_map(|s| s.outcome.as_ref().ok())
            .all(|a| a.greeting.as_deref() == Some("v2")),
        "a v3 cell answered although it cannot listen"
    );
    Ok(())
}
