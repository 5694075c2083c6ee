//! A closed-loop HTTP load generator on an [`Endpoint`], single-threaded with an explicit
//! poll loop (so the client adds no thread hand-offs to the latencies it measures).
//!
//! `connections` keep-alive connections each send one `GET` at a time and send the next as
//! soon as the answer is complete (closed loop: offered load follows the server). Answers
//! during the warm-up are not counted. A connection that fails is counted and reopened.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use super::http::{get_request, parse_response};
use super::{Endpoint, NetError};

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Answers counted (after the warm-up).
    pub requests: u64,
    /// Answers with a status other than 200.
    pub bad_status: u64,
    /// Connections that failed (reset, closed, refused) and were reopened.
    pub connection_errors: u64,
    /// The measured period.
    pub elapsed: Duration,
    /// Every counted request's latency, send to complete answer, in µs (sorted).
    pub latencies_us: Vec<u64>,
}

impl LoadReport {
    /// Requests per second over the measured period.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0..=100), nearest rank.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1]
    }
}

struct Conn {
    handle: SocketHandle,
    sent_at: Option<Instant>,
    received: Vec<u8>,
}

/// Runs the closed loop against `peer` (`GET path`) with `connections` connections for
/// `warmup` + `measure`.
pub fn closed_loop(
    endpoint: &mut Endpoint,
    peer: SocketAddrV4,
    path: &str,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<LoadReport, NetError> {
    let request = get_request(path);
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn {
            handle: endpoint.connect(peer)?,
            sent_at: None,
            received: Vec::new(),
        });
    }
    let started = Instant::now();
    let counting_from = started + warmup;
    let end = counting_from + measure;
    let mut report = LoadReport::default();
    let mut buf = vec![0u8; 16 * 1024];
    while Instant::now() < end {
        endpoint.poll();
        let mut progressed = false;
        for conn in &mut conns {
            let socket = endpoint.tcp(conn.handle);
            match socket.state() {
                tcp::State::SynSent | tcp::State::SynReceived => continue,
                tcp::State::Established => {}
                _ => {
                    // Closed, reset or closing: count it and start over.
                    report.connection_errors += 1;
                    endpoint.abort(conn.handle);
                    conn.handle = endpoint.connect(peer)?;
                    conn.sent_at = None;
                    conn.received.clear();
                    progressed = true;
                    continue;
                }
            }
            if conn.sent_at.is_none() {
                if socket
                    .send_slice(&request)
                    .is_ok_and(|n| n == request.len())
                {
                    conn.sent_at = Some(Instant::now());
                    progressed = true;
                }
                continue;
            }
            while let Ok(n) = socket.recv_slice(&mut buf) {
                if n == 0 {
                    break;
                }
                conn.received.extend_from_slice(&buf[..n]);
            }
            match parse_response(&conn.received) {
                Ok(Some((response, used))) => {
                    let now = Instant::now();
                    if now >= counting_from {
                        report.requests += 1;
                        let sent = conn.sent_at.unwrap_or(now);
                        report.latencies_us.push((now - sent).as_micros() as u64);
                        if response.status != 200 {
                            report.bad_status += 1;
                        }
                    }
                    conn.received.drain(..used);
                    conn.sent_at = None;
                    progressed = true;
                }
                Ok(None) => {}
                Err(_) => {
                    report.connection_errors += 1;
                    conn.received.clear();
                    conn.sent_at = None;
                    endpoint.abort(conn.handle);
                    conn.handle = endpoint.connect(peer)?;
                }
            }
        }
        if !progressed {
            endpoint.wait(Duration::from_millis(1));
        }
    }
    report.elapsed = Instant::now().saturating_duration_since(counting_from);
    for conn in conns {
        endpoint.close(conn.handle, Duration::from_secs(1));
    }
    // Let the closes go out.
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        endpoint.poll();
        endpoint.wait(Duration::from_millis(5));
    }
    report.latencies_us.sort_unstable();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let report = LoadReport {
            requests: 100,
            latencies_us: (1..=100).collect(),
            elapsed: Duration::from_secs(2),
            ..LoadReport::default()
        };
        assert_eq!(report.percentile_us(50.0), 50);
        assert_eq!(report.percentile_us(99.0), 99);
        assert_eq!(report.percentile_us(100.0), 100);
        assert_eq!(report.percentile_us(0.0), 1);
        assert!((report.rps() - 50.0).abs() < 1e-9);
        assert_eq!(LoadReport::default().percentile_us(99.0), 0);
    }
}
