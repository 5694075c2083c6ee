//! The front door on worker-1, worker-2 and the witness (docs/front-door.md): a service with
//! a port gets a stable address; exactly one node answers for it; clients on the host reach
//! it through the gateway across the death, hang or isolation of any node; DNS names it;
//! bad DNS packets and half-open proxy connections do not hurt a node.
//!
//! The client ([`Prober`]) is what users feel: a fresh `GET /` through the gateway every
//! 20 ms (open loop, each with a 2 s budget), plus one keep-alive connection that sends a
//! request every 20 ms and reconnects on error. Its verdicts are the longest gap between
//! two successful answers and the failed requests.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::hostnet::gateway::{Gateway, Target};
use crate::hostnet::{self, HostNet};
use crate::scenarios::control::{wait_leader, wait_running};
use crate::scenarios::membership::wait_all_alive;
use crate::{ensure, Env, HarnessError};

const CMD: Duration = Duration::from_secs(10);
const CONVERGE: Duration = Duration::from_secs(40);
/// The gateway's fabric port in scenarios (the host endpoint keeps 250).
pub const GATEWAY_ID: u32 = 242;
/// The address the first exposed service gets.
pub const WEB_VIP: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 200);

fn check<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, HarnessError> {
    r.map_err(|e| HarnessError::Check(format!("{what}: {e}")))
}

/// A three-node cluster with the gateway's port, `web` (http, 2 replicas, port 80)
/// running on both workers, and a gateway on 127.0.0.1 (ephemeral port) relaying to it.
pub struct FrontDoorRig {
    pub cluster: Cluster,
    pub net: HostNet,
    pub gateway: Gateway,
}

pub fn start(env: &Env, name: &str, seed: u64) -> Result<FrontDoorRig, HarnessError> {
    let mut cluster = Cluster::start_with_ports(env, name, 3, seed, &[GATEWAY_ID])?;
    wait_all_alive(&mut cluster, &[1, 2, 3])?;
    wait_leader(&mut cluster, &[1, 2, 3])?;
    let out = cluster
        .node(1)
        .command("xylem apply web --payload http --replicas 2 --port 80", CMD)?;
    ensure!(
        out.lines()
            .filter(|l| l.starts_with("committed at index"))
            .count()
            == 2,
        "apply --port printed {out:?}"
    );
    wait_running(&mut cluster, 1, "web", &["worker-1", "worker-2"])?;
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
    rig.wait_owner(&[1, 2, 3], |o| o.is_some())?;
    let deadline = Instant::now() + CONVERGE;
    while rig.gateway.address().is_none() {
        ensure!(
            Instant::now() < deadline,
            "the gateway never resolved web.xylem"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        rig.gateway.address() == Some(WEB_VIP),
        "web.xylem resolved to {:?}",
        rig.gateway.address()
    );
    Ok(rig)
}

/// Which nodes answer for `web`'s address: (node, epoch), read with one `frontdoor` per
/// node. The nodes are asked one after another, so a takeover committed in between shows
/// the old owner (at its old epoch) beside the new one; then they are asked again, and
/// only an answer that persists (or two at one epoch, which must never happen) counts.
pub fn owners(cluster: &mut Cluster, ids: &[u64]) -> Result<Vec<(u64, u64)>, HarnessError> {
    let mut seen = owners_once(cluster, ids)?;
    if seen.len() > 1 {
        let mut epochs: Vec<u64> = seen.iter().map(|o| o.1).collect();
        epochs.sort_unstable();
        epochs.dedup();
        ensure!(
            epochs.len() == seen.len(),
            "two nodes answer for web at one epoch: {seen:?}"
        );
        // Give the older owners their time to apply the newer commit, then look again.
        std::thread::sleep(Duration::from_millis(500));
        seen = owners_once(cluster, ids)?;
    }
    Ok(seen)
}

fn owners_once(cluster: &mut Cluster, ids: &[u64]) -> Result<Vec<(u64, u64)>, HarnessError> {
    let mut out = Vec::new();
    for &id in ids {
        let text = cluster.node(id).command("frontdoor", CMD)?;
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"169.254.77.200:80") {
                let epoch = words
                    .iter()
                    .position(|w| *w == "epoch")
                    .and_then(|i| words.get(i + 1))
                    .and_then(|e| e.parse().ok())
                    .unwrap_or(0);
                out.push((id, epoch));
            }
        }
    }
    Ok(out)
}

impl FrontDoorRig {
    /// Waits until exactly one of `ids` answers for the address and `want(owner)` holds;
    /// never tolerates two answering at once. Returns (owner, epoch).
    pub fn wait_owner(
        &mut self,
        ids: &[u64],
        want: impl Fn(Option<u64>) -> bool,
    ) -> Result<(u64, u64), HarnessError> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let o = owners(&mut self.cluster, ids)?;
            ensure!(o.len() <= 1, "more than one node answers for web: {o:?}");
            if want(o.first().map(|x| x.0)) {
                if let Some(&x) = o.first() {
                    return Ok(x);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "the address never settled as wanted; answering: {o:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One `GET /` through the gateway (three tries: the cluster under test may be
    /// moving the address just then); the answering node's name.
    pub fn get(&self) -> Result<String, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match get_via(self.gateway.listen, Duration::from_secs(2)) {
                Ok(node) => return Ok(node),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let s = &self.gateway.stats;
        Err(format!(
            "{last} (gateway: accepted {} relayed {} connect_failures {}; device {:?})",
            s.accepted.load(Ordering::Relaxed),
            s.relayed.load(Ordering::Relaxed),
            s.connect_failures.load(Ordering::Relaxed),
            self.net.with(|e| e.device_stats()),
        ))
    }
}

/// One `GET /` over loopback TCP to `addr`; `node=<name>` from the body.
pub fn get_via(addr: SocketAddrV4, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr.into(), timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).map_err(|e| e.to_string())?;
    node_of(&body)
}

fn node_of(bytes: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(bytes);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "not a 200: {:?}",
            text.chars().take(60).collect::<String>()
        ));
    }
    text.split("node=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
        .ok_or_else(|| "no node= in the answer".into())
}

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct Sample {
    pub started: Instant,
    pub done: Instant,
    pub keepalive: bool,
    pub outcome: Result<String, String>,
}

/// The client: open-loop fresh connections plus one keep-alive connection.
pub struct Prober {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// How often the client starts a request.
pub const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Each request's budget.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Open-loop requests in flight at most (beyond that a tick is skipped and counted failed).
const IN_FLIGHT_MAX: usize = 200;

impl Prober {
    pub fn start(gateway: SocketAddrV4) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let open = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || open_loop(gateway, &stop, &samples))
        };
        let keep = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || keepalive_loop(gateway, &stop, &samples))
        };
        Prober {
            stop,
            samples,
            threads: vec![open, keep],
        }
    }

    /// Stops and returns every sample, in completion order.
    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        // Let stragglers of the open loop land.
        std::thread::sleep(PROBE_TIMEOUT);
        let mut v = self.samples.lock().expect("poisoned").clone();
        v.sort_by_key(|s| s.done);
        v
    }
}

fn open_loop(gateway: SocketAddrV4, stop: &AtomicBool, samples: &Arc<Mutex<Vec<Sample>>>) {
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if in_flight.load(Ordering::Relaxed) >= IN_FLIGHT_MAX {
            samples.lock().expect("poisoned").push(Sample {
                started,
                done: started,
                keepalive: false,
                outcome: Err("client saturated".into()),
            });
        } else {
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (samples, in_flight) = (samples.clone(), in_flight.clone());
            std::thread::spawn(move || {
                let outcome = get_via(gateway, PROBE_TIMEOUT);
                samples.lock().expect("poisoned").push(Sample {
                    started,
                    done: Instant::now(),
                    keepalive: false,
                    outcome,
                });
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        next += PROBE_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

fn keepalive_loop(gateway: SocketAddrV4, stop: &AtomicBool, samples: &Mutex<Vec<Sample>>) {
    let mut conn: Option<TcpStream> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = keepalive_once(&mut conn, gateway);
        if outcome.is_err() {
            conn = None;
        }
        samples.lock().expect("poisoned").push(Sample {
            started,
            done: Instant::now(),
            keepalive: true,
            outcome,
        });
        next += PROBE_EVERY;
        match next.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => next = Instant::now(),
        }
    }
}

fn keepalive_once(conn: &mut Option<TcpStream>, gateway: SocketAddrV4) -> Result<String, String> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&gateway.into(), PROBE_TIMEOUT)
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(PROBE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        *conn = Some(s);
    }
    let s = conn.as_mut().expect("just set");
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(Some((resp, used))) = hostnet::http::parse_response(&buf) {
            let _ = used;
            if resp.status != 200 {
                return Err(format!("status {}", resp.status));
            }
            return node_of(format!("HTTP/1.1 200 \r\n\r\n{}", resp.text()).as_bytes());
        }
    }
}

/// The client's verdict over `samples`.
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    /// Longest time between two successful answers (completion times).
    pub outage_ms: f64,
    pub failed: usize,
    pub ok: usize,
    /// Around the fault (set by [`across`]): requests in flight when it struck (started
    /// before, done after), failed requests started before it, and failed requests started
    /// after it on a fresh connection and on the keep-alive one.
    pub in_flight_at_fault: usize,
    pub failed_started_before: usize,
    pub failed_new_after: usize,
    pub failed_keepalive_after: usize,
    /// Median latency of the successful requests (ms).
    pub median_ms: f64,
}

pub fn verdict(samples: &[Sample]) -> Verdict {
    let mut last_ok: Option<Instant> = None;
    let mut outage = Duration::ZERO;
    let (mut ok, mut failed) = (0, 0);
    for s in samples {
        match &s.outcome {
            Ok(_) => {
                ok += 1;
                if let Some(prev) = last_ok {
                    outage = outage.max(s.done.saturating_duration_since(prev));
                }
                last_ok = Some(s.done);
            }
            Err(_) => failed += 1,
        }
    }
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| s.outcome.is_ok())
        .map(|s| s.done.saturating_duration_since(s.started))
        .collect();
    latencies.sort_unstable();
    Verdict {
        outage_ms: outage.as_secs_f64() * 1000.0,
        failed,
        ok,
        in_flight_at_fault: 0,
        failed_started_before: 0,
        failed_new_after: 0,
        failed_keepalive_after: 0,
        median_ms: latencies
            .get(latencies.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    }
}

/// [`verdict`] with the counts around a fault at `fault_at`.
pub fn verdict_around(samples: &[Sample], fault_at: Instant) -> Verdict {
    let mut v = verdict(samples);
    for s in samples {
        if s.started <= fault_at && s.done > fault_at {
            v.in_flight_at_fault += 1;
        }
        if s.outcome.is_ok() {
            continue;
        }
        match (s.started <= fault_at, s.keepalive) {
            (true, _) => v.failed_started_before += 1,
            (false, false) => v.failed_new_after += 1,
            (false, true) => v.failed_keepalive_after += 1,
        }
    }
    v
}

/// Failed requests by reason (the first words of the error), most frequent first.
pub fn failure_kinds(samples: &[Sample]) -> Vec<(String, usize)> {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for s in samples {
        if let Err(e) = &s.outcome {
            let key: String = e.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
            let tag = if s.keepalive { "keep-alive: " } else { "" };
            *kinds.entry(format!("{tag}{key}")).or_default() += 1;
        }
    }
    let mut v: Vec<_> = kinds.into_iter().collect();
    v.sort_by_key(|k| std::cmp::Reverse(k.1));
    v
}

/// Basics: one owner (the witness), DNS on every node, the gateway serves, both replicas
/// answer through the proxy, unknown names are NXDOMAIN, and a flood of bad DNS packets
/// and half-open connections to the address leave every node working.
pub fn basics(env: &Env) -> Result<(), HarnessError> {
    let mut rig = start(env, "frontdoor-basics", 61)?;
    let (owner, _) = rig.wait_owner(&[1, 2, 3], |o| o == Some(3))?;
    ensure!(owner == 3, "the witness should own the address");
    for id in 1..=3u32 {
        let ip = check(
            "dns",
            rig.net
                .resolve(hostnet::fabric_ip(id), "web.xylem", Duration::from_secs(2)),
        )?;
        ensure!(
            ip == Some(WEB_VIP),
            "node {id} resolved web.xylem to {ip:?}"
        );
        let none = check(
            "dns",
            rig.net
                .resolve(hostnet::fabric_ip(id), "nope.xylem", Duration::from_secs(2)),
        )?;
        ensure!(none.is_none(), "node {id} resolved nope.xylem to {none:?}");
    }
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let node = check("GET through the gateway", rig.get())?;
        served.insert(node);
    }
    ensure!(
        served.len() == 2,
        "the proxy should spread over both replicas, served by {served:?}"
    );
    bad_dns_and_half_open(&mut rig)?;
    for _ in 0..5 {
        check("GET after the abuse", rig.get())?;
    }
    Ok(())
}

/// 300 malformed datagrams to port 53 of every node and 40 half-open connections to the
/// address (SYN only, and a request without an end), then every node still answers.
fn bad_dns_and_half_open(rig: &mut FrontDoorRig) -> Result<(), HarnessError> {
    let mut seed: u64 = 0x0bad_d115;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let good = kcore::dns::query(7, "web.xylem").expect("a query");
    for i in 0..300 {
        let mut bytes: Vec<u8> = if i % 2 == 0 {
            (0..(next() % 600)).map(|_| next() as u8).collect()
        } else {
            let mut b = good.clone();
            let at = (next() as usize) % b.len();
            b[at] = next() as u8;
            b.truncate(b.len() - (next() % 5) as usize);
            b
        };
        if bytes.is_empty() {
            bytes.push(0);
        }
        let to = SocketAddrV4::new(hostnet::fabric_ip(1 + (i % 3) as u32), 53);
        check("garbage DNS", rig.net.send_udp(to, &bytes))?;
    }
    // Half-open: connections that say half a request and then nothing, held open.
    let mut held = Vec::new();
    for _ in 0..40 {
        if let Ok(mut s) = rig
            .net
            .connect(SocketAddrV4::new(WEB_VIP, 80), Duration::from_secs(2))
        {
            let _ = s.write_all(b"GET / HT", Duration::from_secs(1));
            held.push(s);
        }
    }
    for id in 1..=3 {
        let fd = rig.cluster.node(id).command("frontdoor", CMD)?;
        ensure!(fd.contains("dns: answers"), "node {id} frontdoor: {fd}");
        let ip = check(
            "dns after garbage",
            rig.net.resolve(
                hostnet::fabric_ip(id as u32),
                "web.xylem",
                Duration::from_secs(2),
            ),
        )?;
        ensure!(
            ip == Some(WEB_VIP),
            "node {id} after garbage resolved {ip:?}"
        );
    }
    drop(held);
    Ok(())
}

/// Runs the client across `fault` and returns its verdict; the fault happens after 1 s of
/// steady traffic and the client runs `settle` longer.
pub fn across(
    rig: &mut FrontDoorRig,
    settle: Duration,
    fault: impl FnOnce(&mut FrontDoorRig) -> Result<(), HarnessError>,
) -> Result<(Verdict, Vec<Sample>), HarnessError> {
    // Warm the path first: the gateway's first connections to a service address it has
    // not reached yet wait out its neighbour resolution and used to fail in a burst about
    // 1 s after the client started — right when the fault struck, which made them look
    // like the fault's failures.
    for _ in 0..5 {
        check("GET before the fault", rig.get())?;
    }
    let prober = Prober::start(rig.gateway.listen);
    std::thread::sleep(Duration::from_secs(1));
    let fault_at = Instant::now();
    let faulted = fault(rig);
    std::thread::sleep(settle);
    let samples = prober.finish();
    faulted?;
    // Which requests failed, when (ms from the fault, by start and end) and why: what
    // tells a proxy that picked a dead backend from a connection that was in flight.
    for line in failure_timeline(&samples, fault_at).iter().take(60) {
        eprintln!("      {line}");
    }
    Ok((verdict_around(&samples, fault_at), samples))
}

/// One line per failed request: start and end in ms from `since`, kind and reason.
pub fn failure_timeline(samples: &[Sample], since: Instant) -> Vec<String> {
    let ms = |t: Instant| {
        if t >= since {
            (t - since).as_secs_f64() * 1000.0
        } else {
            -((since - t).as_secs_f64() * 1000.0)
        }
    };
    samples
        .iter()
        .filter_map(|s| {
            let e = s.outcome.as_ref().err()?;
            Some(format!(
                "failed {:>+7.0} ms .. {:>+7.0} ms {} {e}",
                ms(s.started),
                ms(s.done),
                if s.keepalive {
                    "keep-alive"
                } else {
                    "new conn  "
                }
            ))
        })
        .collect()
}

/// Kill a worker (a replica that does not own the address): the owner's proxy stops
/// choosing it; nothing but its in-flight connections fail.
pub fn kill_replica(env: &Env) -> Result<(), HarnessError> {
    let mut rig = start(env, "frontdoor-kill-replica", 62)?;
    rig.wait_owner(&[1, 2, 3], |o| o == Some(3))?;
    let (v, _) = across(&mut rig, Duration::from_secs(4), |rig| {
        rig.cluster.node(2).signal(libc::SIGKILL)
    })?;
    eprintln!("    kill a replica: {v:?}");
    ensure!(v.ok > 100, "too few answers: {v:?}");
    // Only connections in flight on the dead replica may fail. A request that starts
    // after the kill on a fresh connection must be served (the proxy skips a suspected or
    // down backend and retries one that does not answer on the other replica). One thing
    // beyond the front door still costs a few: when the dead node's slot is re-placed on
    // the survivor, the replacement cell starts beside the serving one on the shared port,
    // and a few fresh connections in the ~100 ms of its start were closed without a byte
    // (4 in the run that found it: 5 requests at 20 ms is the bound). The keep-alive
    // connection may have been relayed to the dead replica: its one request in flight
    // there fails, and it reconnects. Of the requests in flight at the kill, round-robin
    // sent about half to the dead replica: at most half of them (+2 for the rotation's
    // phase) may fail.
    ensure!(
        v.failed_new_after <= 5,
        "{} requests started after the kill failed: {v:?}",
        v.failed_new_after
    );
    ensure!(
        v.failed_keepalive_after <= 1,
        "the keep-alive client failed {} times after the kill: {v:?}",
        v.failed_keepalive_after
    );
    ensure!(
        v.failed_started_before <= v.in_flight_at_fault / 2 + 2,
        "{} of {} requests in flight at the kill failed (more than the dead replica's share): {v:?}",
        v.failed_started_before,
        v.in_flight_at_fault
    );
    ensure!(
        v.outage_ms < 1000.0,
        "clients saw a {:.0} ms gap when a non-owner died",
        v.outage_ms
    );
    let (owner, _) = rig.wait_owner(&[1, 3], |o| o.is_some())?;
    ensure!(owner == 3, "the address moved although its owner lives");
    Ok(())
}

/// Kill the owner (the witness): a worker takes the address over with a fresh epoch and
/// announces it; clients recover.
pub fn kill_owner(env: &Env) -> Result<(), HarnessError> {
    let mut rig = start(env, "frontdoor-kill-owner", 63)?;
    let (_, epoch) = rig.wait_owner(&[1, 2, 3], |o| o == Some(3))?;
    let (v, samples) = across(&mut rig, Duration::from_secs(5), |rig| {
        rig.cluster.node(3).signal(libc::SIGKILL)
    })?;
    eprintln!("    kill the owner: {v:?}");
    let (owner, new_epoch) = rig.wait_owner(&[1, 2], |o| o.is_some())?;
    ensure!(
        new_epoch > epoch,
        "epoch did not grow: {epoch} -> {new_epoch}"
    );
    ensure!(owner != 3, "the dead owner still answers");
    let last = samples
        .iter()
        .rev()
        .take(20)
        .filter(|s| s.outcome.is_ok())
        .count();
    ensure!(
        last >= 15,
        "clients did not recover: {last}/20 of the last answers ok"
    );
    // The takeover needs SWIM's verdict, a plan and a commit (about 300 ms on a quiet
    // host; `bench service-failover`); 2 s leaves room for a loaded one. Connections through
    // the dead owner are lost with it; a fresh one started after the kill is retried by the
    // gateway (3 connects of 400 ms) until the new owner's announcement lands, so at most
    // a couple may fail (measured: none).
    ensure!(
        v.outage_ms < 2000.0,
        "clients saw a {:.0} ms gap when the owner died",
        v.outage_ms
    );
    ensure!(
        v.failed_new_after <= 2,
        "{} fresh requests started after the owner died failed: {v:?}",
        v.failed_new_after
    );
    // DNS still names the same address (it never changes, only its owner does).
    for id in 1..=2u32 {
        let ip = check(
            "dns after the move",
            rig.net
                .resolve(hostnet::fabric_ip(id), "web.xylem", Duration::from_secs(2)),
        )?;
        ensure!(ip == Some(WEB_VIP), "node {id} after the move: {ip:?}");
    }
    Ok(())
}

/// SIGSTOP the owner until the majority moves the address, SIGCONT: the old owner does
/// not answer again (fenced), exactly one node answers, clients are served.
pub fn hang_owner(env: &Env) -> Result<(), HarnessError> {
    let mut rig = start(env, "frontdoor-hang-owner", 64)?;
    rig.wait_owner(&[1, 2, 3], |o| o == Some(3))?;
    rig.cluster.node(3).signal(libc::SIGSTOP)?;
    let (moved, _) = rig.wait_owner(&[1, 2], |o| o.is_some())?;
    rig.cluster.node(3).signal(libc::SIGCONT)?;
    // While it wakes up and catches up, never two owners; afterwards the same new one.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let o = owners(&mut rig.cluster, &[1, 2, 3])?;
        ensure!(o.len() <= 1, "two nodes answer after the resume: {o:?}");
        if let Some(&(n, _)) = o.first() {
            ensure!(n != 3, "the resumed old owner answers again: {o:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_all_alive(&mut rig.cluster, &[1, 2, 3])?;
    let (owner, _) = rig.wait_owner(&[1, 2, 3], |o| o.is_some())?;
    ensure!(owner == moved, "the address moved back to {owner}");
    for _ in 0..10 {
        check("GET after the resume", rig.get())?;
    }
    Ok(())
}

/// Partition the owner (the witness) alone: the majority takes the address over; the
/// minority stops answering; after the heal exactly one node answers.
pub fn partition_owner(env: &Env) -> Result<(), HarnessError> {
    let mut rig = start(env, "frontdoor-partition-owner", 65)?;
    rig.wait_owner(&[1, 2, 3], |o| o == Some(3))?;
    rig.cluster
        .nemesis()
        .partition(&[&[1, 2, GATEWAY_ID], &[3]]);
    let deadline = Instant::now() + CONVERGE;
    loop {
        let majority = owners(&mut rig.cluster, &[1, 2])?;
        let minority = owners(&mut rig.cluster, &[3])?;
        if majority.len() == 1 && minority.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no clean takeover: majority {majority:?}, minority {minority:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..10 {
        check("GET during the partition", rig.get())?;
    }
    rig.cluster.nemesis().heal();
    wait_all_alive(&mut rig.cluster, &[1, 2, 3])?;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let o = owners(&mut rig.cluster, &[1, 2, 3])?;
        ensure!(o.len() == 1, "after the heal: {o:?}");
        ensure!(o[0].0 != 3, "the old owner took it back: {o:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..10 {
        check("GET after the heal", rig.get())?;
    }
    Ok(())
}
