//! Network commands: net, pci, peers, ping, netbench.

use alloc::format;
use alloc::string::String;
use core::fmt::Write;
use kcore::peers::Peers;
use net::Kind;
use smoltcp::wire::Ipv4Address;

use super::{Command, CommandError};
use crate::netstack::{self, ping, transport};
use crate::{node, sched};

pub const COMMANDS: &[Command] = &[
    Command {
        name: "net",
        usage: "net",
        help: "interface, frame counters, transport drops and inboxes",
        run: net,
    },
    Command {
        name: "pci",
        usage: "pci",
        help: "PCI functions on bus 0 with their interrupt lines",
        run: pci,
    },
    Command {
        name: "peers",
        usage: "peers",
        help: "the cluster's nodes (config key peers)",
        run: peers,
    },
    Command {
        name: "ping",
        usage: "ping <node|ip> [count 1-1000]",
        help: "ICMP echo with per-reply RTT",
        run: ping,
    },
    Command {
        name: "netbench",
        usage: "netbench <node> [count] [timeout_ms] [tries]",
        help: "transport RTT probes (ProbePing/Pong)",
        run: netbench,
    },
];

const PING_TIMEOUT_US: u64 = 1_000_000;
const PING_INTERVAL_MS: u64 = 100;
const COUNT_MAX: u32 = 100_000;

fn failed(why: String) -> CommandError {
    CommandError::Failed(why)
}

fn peer_table() -> Result<Peers, CommandError> {
    let text = node::extra("peers").map(String::as_str).unwrap_or("");
    Peers::parse(text).map_err(|e| failed(format!("config key peers is malformed: {e}")))
}

/// A node name from `peers` or a dotted address on the fabric subnet.
fn resolve(target: &str) -> Result<(Ipv4Address, String), CommandError> {
    if target.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Address = target
            .parse()
            .map_err(|_| failed(format!("'{target}' is not an IPv4 address")))?;
        if netstack::id_of(ip).is_none() {
            return Err(failed(format!(
                "{ip} is not a node address on the fabric (169.254.77.1-254)"
            )));
        }
        return Ok((ip, format!("{ip}")));
    }
    let peers = peer_table()?;
    let Some(id) = peers.id_of(target) else {
        let mut known = String::new();
        for p in peers.iter() {
            let _ = write!(
                known,
                "{}{}",
                if known.is_empty() { "" } else { ", " },
                p.name
            );
        }
        return Err(failed(format!(
            "unknown node '{target}' (peers: {})",
            if known.is_empty() { "none" } else { &known }
        )));
    };
    let ip =
        netstack::ip_of(id).ok_or_else(|| failed(format!("node {id} has no fabric address")))?;
    Ok((ip, String::from(target)))
}

fn parse_count(text: &str, max: u32) -> Result<u32, CommandError> {
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(failed(format!("'{text}' is not a count (1-{max})"))),
    }
}

fn require_network() -> Result<(), CommandError> {
    if netstack::is_up() {
        Ok(())
    } else {
        Err(failed(String::from("no network on this node")))
    }
}

fn net(args: &[&str]) -> Result<(), CommandError> {
    if !args.is_empty() {
        return Err(CommandError::Usage);
    }
    let Some((status, endpoint, pongs, send_errors, cells)) = netstack::with_stack(|s| {
        (
            s.status(),
            s.transport.endpoint().clone(),
            s.transport.pongs_sent,
            s.transport.send_errors,
            (
                s.cells.counters,
                s.cells.budget,
                s.cells.lingering(),
                s.tcp_states(),
            ),
        )
    }) else {
        crate::println!("net: no network card");
        return Ok(());
    };
    let m = status.mac;
    let c = status.counters;
    crate::println!(
        "interface: mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}  ip {}/{}  link {}",
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5],
        status.ip,
        netstack::PREFIX_LEN,
        if status.link_up { "up" } else { "down" }
    );
    crate::println!(
        "frames: rx {} ({} bytes)  tx {} ({} bytes)  tx_errors {}  rx_dropped {}",
        c.rx_frames,
        c.rx_bytes,
        c.tx_frames,
        c.tx_bytes,
        c.tx_errors,
        c.rx_dropped_total()
    );
    let mut line = String::from("  filter drops:");
    for (name, count) in netstack::filter_drops(&c) {
        let _ = write!(line, " {name} {count}");
    }
    crate::println!("{line}");
    crate::println!(
        "transport: udp port {}  cluster {}  pongs_sent {}  send_errors {}",
        transport::PORT,
        transport::cluster_id(),
        pongs,
        send_errors
    );
    let (mut sent, mut received) = (String::from("  sent:"), String::from("  received:"));
    for kind in Kind::ALL {
        let _ = write!(sent, " {} {}", kind.name(), endpoint.sent(kind));
        let _ = write!(received, " {} {}", kind.name(), endpoint.received(kind));
    }
    crate::println!("{sent}");
    crate::println!("{received}");
    let mut drops = String::from("  drops:");
    for (reason, count) in endpoint.drops().iter() {
        let _ = write!(drops, " {reason} {count}");
    }
    crate::println!("{drops} (total {})", endpoint.drops().total());
    print_inboxes();
    let (counters, budget, lingering, states) = cells;
    crate::println!(
        "cell sockets: open {}  lingering {}  created {}  accepted {}  lingered {}  aborted {}  buffers {}/{} bytes  refused {}",
        counters.created - counters.removed,
        lingering,
        counters.created,
        counters.accepted,
        counters.lingered,
        counters.aborted,
        budget.used_bytes,
        budget.max_bytes,
        budget.refused
    );
    let mut line = String::from("  tcp states:");
    for (name, count) in states {
        let _ = write!(line, " {name} {count}");
    }
    crate::println!("{line}");
    let (irqs, not_ours, wakeups) = netstack::activity();
    crate::println!("activity: irqs {irqs}  irqs_not_ours {not_ours}  net_wakeups {wakeups}");
    Ok(())
}

fn print_inboxes() {
    for i in transport::inbox_stats() {
        let mut line = format!(
            "  inbox {}: queued {} pending {} overflowed {} delivered {} unclaimed {}",
            i.kind.name(),
            i.queued,
            i.pending,
            i.overflowed,
            i.delivered,
            i.unclaimed
        );
        if let Some((from, len, preview)) = i.last {
            let text: String = preview
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            let _ = write!(line, "  last from {from} ({len} bytes) '{text}'");
        }
        crate::println!("{line}");
    }
}

fn peers(args: &[&str]) -> Result<(), CommandError> {
    if !args.is_empty() {
        return Err(CommandError::Usage);
    }
    let table = peer_table()?;
    if table.is_empty() {
        crate::println!("no peers configured");
    }
    for p in table.iter() {
        let me = if p.id == node::config().id {
            "  (this node)"
        } else {
            ""
        };
        let ip = netstack::ip_of(p.id).map_or(String::from("-"), |ip| format!("{ip}"));
        crate::println!("{:>4}  {:<20} {}{}", p.id, p.name, ip, me);
    }
    Ok(())
}

fn ping(args: &[&str]) -> Result<(), CommandError> {
    let (target, count) = match args {
        [target] => (*target, 4),
        [target, count] => (*target, parse_count(count, 1000)?),
        _ => return Err(CommandError::Usage),
    };
    let (ip, label) = resolve(target)?;
    require_network()?;
    crate::println!("PING {label} ({ip}): {} data bytes", ping::PAYLOAD_BYTES);
    let (mut received, mut rtts) = (0u32, (u64::MAX, 0u64, 0u64));
    for seq in 0..count {
        match ping::ping_once(ip, seq as u16, PING_TIMEOUT_US) {
            // Earlier requests still wait for an ARP reply: this one is lost, not fatal.
            Err(ping::PingError::SendFailed) => {
                crate::println!("send failed: seq={seq} (ICMP send buffer full)")
            }
            Err(err) => return Err(failed(format!("{err:?}"))),
            Ok(ping::Outcome::Reply { seq, rtt_us, bytes }) => {
                received += 1;
                rtts = (rtts.0.min(rtt_us), rtts.1 + rtt_us, rtts.2.max(rtt_us));
                crate::println!("{} bytes from {ip}: seq={seq} rtt_us={rtt_us}", bytes + 8);
            }
            Ok(ping::Outcome::Timeout { seq }) => crate::println!("timeout: seq={seq}"),
        }
        if seq + 1 < count {
            sched::sleep_ms(PING_INTERVAL_MS);
        }
    }
    let loss_pct = (count - received) * 100 / count;
    crate::println!("--- {label} ping statistics ---");
    if received > 0 {
        crate::println!("{count} transmitted, {received} received, {loss_pct}% loss, rtt_us min={} avg={} max={}", rtts.0, rtts.1 / u64::from(received), rtts.2);
    } else {
        crate::println!("{count} transmitted, 0 received, 100% loss");
    }
    Ok(())
}

fn node_id_of(target: &str) -> Result<u64, CommandError> {
    let (ip, _) = resolve(target)?;
    netstack::id_of(ip).ok_or_else(|| failed(format!("{ip} is not a node address")))
}

fn netbench(args: &[&str]) -> Result<(), CommandError> {
    let (target, rest) = args.split_first().ok_or(CommandError::Usage)?;
    if rest.len() > 3 {
        return Err(CommandError::Usage);
    }
    let count = rest
        .first()
        .map_or(Ok(100), |c| parse_count(c, COUNT_MAX))?;
    let timeout_ms = rest.get(1).map_or(Ok(250), |t| parse_count(t, 10_000))?;
    let tries_max = rest.get(2).map_or(Ok(1), |t| parse_count(t, 100))?;
    let peer = node_id_of(target)?;
    require_network()?;
    let config = transport::BenchConfig {
        peer,
        count,
        timeout_us: u64::from(timeout_ms) * 1000,
        tries_max,
    };
    let report = transport::bench(config).map_err(|e| failed(format!("{e:?}")))?;
    let r = report.rtt;
    crate::println!(
        "netbench {target} (node {}): count {} answered {} given_up {} retries {}",
        report.config.peer,
        report.config.count,
        report.answered,
        report.given_up,
        report.retries
    );
    crate::println!(
        "rtt_us count={} min={} mean={} p50={} p90={} p99={} max={}",
        r.count,
        r.min_us,
        r.mean_us,
        r.p50_us,
        r.p90_us,
        r.p99_us,
        r.max_us
    );
    Ok(())
}

fn pci(args: &[&str]) -> Result<(), CommandError> {
    if !args.is_empty() {
        return Err(CommandError::Usage);
    }
    crate::println!(
        "{:<9} {:<10} {:<9} {:>4} {:>4}",
        "BDF",
        "VENDOR:ID",
        "CLASS",
        "IRQ",
        "PIN"
    );
    for d in crate::drivers::pci::enumerate() {
        let f = d.function;
        let pin = if d.interrupt_pin == 0 {
            String::from("-")
        } else {
            format!("{}", (b'A' + d.interrupt_pin - 1) as char)
        };
        crate::println!(
            "{:02x}:{:02x}.{}   {:04x}:{:04x}  {:02x}.{:02x}.{:02x}  {:>4} {:>4}",
            f.bus,
            f.device,
            f.function,
            d.vendor_id,
            d.device_id,
            d.class.0,
            d.class.1,
            d.class.2,
            d.interrupt_line,
            pin
        );
    }
    Ok(())
}
