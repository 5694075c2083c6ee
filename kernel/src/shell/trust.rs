//! `trust`: this node's identity verdict, its TLS sessions, and what it refused.

use alloc::string::String;
use alloc::vec::Vec;

use super::{Command, CommandError};
use crate::identity::{self, Mode};
use crate::netstack::{self, tls};

pub const COMMANDS: &[Command] = &[Command {
    name: "trust",
    usage: "trust",
    help: "identity, mutual-TLS sessions, sealed-datagram and refusal counters",
    run: trust,
}];

fn trust(args: &[&str]) -> Result<(), CommandError> {
    super::basic::no_args(args)?;
    match identity::mode() {
        Mode::Sealed => crate::println!("mode: sealed (mutual TLS, authenticated datagrams)"),
        Mode::Plain { why } => crate::println!("mode: OFF ({why}): datagrams unauthenticated"),
        Mode::Refused { why } => {
            crate::println!("mode: REFUSED: {why}");
            crate::println!("the cluster stack is not running on this node");
        }
    }
    if let Some(s) = identity::wall_clock_s() {
        crate::println!("rtc: {s} s since the Unix epoch");
    }
    let Some(report) = netstack::with_stack(|s| {
        let links = s.tls.links();
        let counters = s.tls.counters.clone();
        let handshakes: Vec<u64> = s.tls.handshake_ms().collect();
        let ring = s.transport.keyring();
        let seal = *ring.counters();
        let peers: Vec<(u64, Option<u32>)> = ring.peers().map(|p| (p, ring.key_id(p))).collect();
        (links, counters, handshakes, seal, peers)
    }) else {
        crate::println!("no network");
        return Ok(());
    };
    let (links, counters, handshakes, seal, peers) = report;
    crate::println!("{:<16} {:<8} {:<12} KEY", "PEER", "ROLE", "STATE");
    for (peer, dialer, state, key) in links {
        let name = peer.map_or(String::from("-"), |p| {
            alloc::format!("{} ({})", p.name, p.id)
        });
        let key = key.map_or(String::from("-"), |k| alloc::format!("{k:#010x}"));
        let role = if dialer { "dial" } else { "accept" };
        crate::println!("{name:<16} {role:<8} {state:<12} {key}");
    }
    let keyed: Vec<String> = peers
        .iter()
        .map(|(p, k)| alloc::format!("{p}:{:#010x}", k.unwrap_or(0)))
        .collect();
    crate::println!(
        "keys: {}",
        if keyed.is_empty() {
            String::from("none")
        } else {
            keyed.join(" ")
        }
    );
    crate::println!(
        "sessions: established {}  closed {}  refused {}",
        counters.established,
        counters.closed,
        counters.refused_total()
    );
    let reasons: Vec<String> = tls::Refusal::ALL
        .iter()
        .map(|r| alloc::format!("{} {}", r.name(), counters.refused[*r as usize]))
        .collect();
    crate::println!("refused: {}", reasons.join("  "));
    if let Some((at_us, addr, why, detail)) = counters.last_refusal {
        crate::println!(
            "last refusal: node-{addr} {} at {} ms: {detail}",
            why.name(),
            at_us / 1000
        );
    }
    let drops: Vec<String> = seal
        .iter()
        .map(|(n, c)| alloc::format!("{n} {c}"))
        .collect();
    crate::println!(
        "datagrams: sealed {}  opened {}  no_session {}  rekeys {}",
        seal.sealed,
        seal.opened,
        seal.no_session,
        seal.rekeys
    );
    crate::println!(
        "datagrams refused: {}  ({})",
        seal.dropped_total(),
        drops.join("  ")
    );
    let control: Vec<String> = crate::cluster::control::inbound_refusals()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| alloc::format!("{name} {n}"))
        .collect();
    if !control.is_empty() {
        crate::println!("control messages refused: {}", control.join("  "));
    }
    if let Some(last) = handshakes.last() {
        let mut sorted = handshakes.clone();
        sorted.sort_unstable();
        crate::println!(
            "tls_handshake_ms: last {last}  median {}  (n={})",
            sorted[sorted.len() / 2],
            sorted.len()
        );
    }
    Ok(())
}

/// One line for `members`: what this node refused (so a rogue shows up as a count).
pub fn refusal_summary() -> Option<String> {
    netstack::with_stack(|s| {
        let seal = s.transport.keyring().counters();
        alloc::format!(
            "refused: {} TLS sessions, {} datagrams (unsealed {}, no_key {}, bad_tag {}, replayed {}); see trust",
            s.tls.counters.refused_total(),
            seal.dropped_total(),
            seal.dropped(net::seal::OpenError::Unsealed),
            seal.dropped(net::seal::OpenError::NoKey),
            seal.dropped(net::seal::OpenError::BadTag),
            seal.dropped(net::seal::OpenError::Replayed),
        )
    })
}
