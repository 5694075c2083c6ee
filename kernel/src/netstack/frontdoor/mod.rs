//! The front door's mechanism in the `net` task: service addresses (VIPs) on the interface,
//! gratuitous ARP, the owner's TCP proxy and the DNS responder (docs/front-door.md).
//!
//! Policy lives in `xylem::frontdoor` (who owns which address, fenced by epoch and quorum);
//! the control plane (`cluster::control`) turns the committed state into a [`Plan`] and
//! hands it over with [`configure`]. The `net` task applies the latest plan at the start of
//! its next pass ([`FrontDoor::service`]):
//!
//! - an address this node now answers for is added to the receive pre-filter, and is
//!   announced with gratuitous ARP on the `xylem::frontdoor::Announcer` schedule
//!   (rate-limited). smoltcp runs in "any IP" mode ([`prepare`]), so whatever the
//!   pre-filter lets through it takes as ours: it answers ARP for an owned address and
//!   accepts TCP and UDP to it. The interface's address list is never changed, because
//!   smoltcp flushes its whole neighbour cache on every change (`update_ip_addrs`), and a
//!   flushed cache made the cluster's transport re-ARP for every peer (one request per
//!   second for the whole cache): a takeover stalled Raft and SWIM for seconds;
//! - an address it no longer answers for is removed at once, with its proxy listeners and
//!   every proxied connection that came in on it;
//! - with no local replica of the service, [`proxy`] listens on `VIP:port` and relays each
//!   connection to a replica on another node; with a local replica, the cell's own listener
//!   (bound to every local address) takes the connection directly;
//! - [`dns`] answers `A <service>.xylem` on UDP port 53 on every node.
//!
//! Neighbours: `proxy` (connections), `dns` (names), `kcore::frame_filter` (the announcement
//! frame and the pre-filter's address list).

pub mod dns;
pub mod proxy;

use alloc::string::String;
use alloc::vec::Vec;
use kcore::frame_filter::{self, EXTRA_ADDRS_MAX};
use smoltcp::iface::{Interface, Route};
use smoltcp::wire::{IpAddress, IpCidr, Ipv4Address};
use spin::Mutex;
use xylem::frontdoor::Announcer;

use super::Stack;
use crate::arch::cpu::without_interrupts;

/// One address this node answers for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    pub service: String,
    pub ip: [u8; 4],
    pub port: u16,
    pub epoch: u64,
    /// A replica runs on this node: its cell's listener serves the address directly.
    pub local: bool,
    /// Other nodes running a replica (proxy targets), in a stable order.
    pub backends: Vec<u64>,
}

/// What the control plane wants the front door to do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Addresses to answer for (empty without quorum). At most [`EXTRA_ADDRS_MAX`] count.
    pub owned: Vec<Owned>,
    /// Every service's name and address, for DNS (answered with or without quorum: a name
    /// maps to its address forever, whoever owns it).
    pub names: Vec<(String, [u8; 4])>,
    /// Every service's port: cells may share these (two replicas of a service on one node).
    pub service_ports: Vec<u16>,
}

/// Sets the interface up for service addresses: "any IP" mode, and a route for the VIP
/// range through the node's own address (smoltcp accepts a packet for an address it does
/// not hold only if a route sends that address to one it does). The receive pre-filter
/// (`kcore::frame_filter`) is what limits the interface to the node's own address and the
/// service addresses it answers for now.
pub fn prepare(iface: &mut Interface, own: Ipv4Address) {
    iface.set_any_ip(true);
    let first = xylem::frontdoor::vip_addr(0);
    let cidr = IpCidr::new(IpAddress::Ipv4(Ipv4Address::from(first)), 26);
    iface.routes_mut().update(|routes| {
        routes
            .push(Route {
                cidr,
                via_router: IpAddress::Ipv4(own),
                preferred_until: None,
                expires_at: None,
            })
            .expect("an empty route table has room");
    });
}

/// The newest plan not yet applied by the `net` task.
static PENDING: Mutex<Option<Plan>> = Mutex::new(None);
/// The last plan handed over (the control plane refreshes every 100 ms; only a change
/// wakes the `net` task).
static LAST: Mutex<Option<Plan>> = Mutex::new(None);

/// Hands the `net` task a new plan (applied on its next pass; only the latest counts).
pub fn configure(plan: Plan) {
    let changed = without_interrupts(|| {
        let mut last = LAST.lock();
        if last.as_ref() == Some(&plan) {
            return false;
        }
        *last = Some(plan.clone());
        *PENDING.lock() = Some(plan);
        true
    });
    if changed {
        super::kick();
    }
}

/// Counters for the `frontdoor` command.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub addresses_added: u64,
    pub addresses_removed: u64,
    /// Owned addresses beyond what the interface holds ([`EXTRA_ADDRS_MAX`]).
    pub addresses_overflow: u64,
    pub announcements: u64,
    pub announcements_failed: u64,
}

/// The front door's state in the stack.
pub struct FrontDoor {
    plan: Plan,
    announcer: Announcer,
    pub proxy: proxy::Proxy,
    pub dns: dns::Dns,
    pub counters: Counters,
}

impl FrontDoor {
    /// Sockets the front door may hold at once (the stack's socket table is sized with it).
    pub const SOCKETS_MAX: usize = proxy::SOCKETS_MAX + 1;

    pub fn new(dns: dns::Dns) -> Self {
        Self {
            plan: Plan::default(),
            announcer: Announcer::new(),
            proxy: proxy::Proxy::new(),
            dns,
            counters: Counters::default(),
        }
    }

    /// The plan in force.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Gratuitous ARPs the rate limit held back.
    pub fn announcements_suppressed(&self) -> u64 {
        self.announcer.suppressed
    }

    /// The earliest time the front door needs the `net` task again.
    pub fn deadline_us(&self) -> Option<u64> {
        let announce = self.announcer.deadline_ms().map(|ms| ms * 1000);
        [announce, self.proxy.deadline_us()]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Stack {
    /// The front door's part of a `net` pass: apply a new plan, send due announcements,
    /// run the proxy and DNS.
    pub(super) fn serve_front_door(&mut self, now_us: u64) {
        let plan = without_interrupts(|| PENDING.lock().take());
        if let Some(plan) = plan {
            self.apply_plan(plan, now_us);
        }
        for ip in self.front.announcer.take_due(now_us / 1000) {
            self.announce(ip);
        }
        self.serve_proxy(now_us);
        self.serve_dns();
    }

    fn apply_plan(&mut self, mut plan: Plan, now_us: u64) {
        if plan.owned.len() > EXTRA_ADDRS_MAX {
            self.front.counters.addresses_overflow += (plan.owned.len() - EXTRA_ADDRS_MAX) as u64;
            plan.owned.truncate(EXTRA_ADDRS_MAX);
        }
        let old: Vec<[u8; 4]> = self.front.plan.owned.iter().map(|o| o.ip).collect();
        let new: Vec<[u8; 4]> = plan.owned.iter().map(|o| o.ip).collect();
        for ip in old.iter().filter(|ip| !new.contains(ip)) {
            self.front.announcer.stopped(*ip);
            self.front.counters.addresses_removed += 1;
            self.proxy_drop_address(*ip, now_us);
            log::info!(
                "frontdoor: no longer answering for {}",
                Ipv4Address::from(*ip)
            );
        }
        for o in plan.owned.iter().filter(|o| !old.contains(&o.ip)) {
            self.front.announcer.started(o.ip, now_us / 1000);
            self.front.counters.addresses_added += 1;
            log::info!(
                "frontdoor: answering for {}:{} ({}, epoch {})",
                Ipv4Address::from(o.ip),
                o.port,
                o.service,
                o.epoch
            );
        }
        self.device.local.set_extra(&new);
        self.cells.set_shared_tcp_ports(&plan.service_ports);
        self.front.plan = plan;
        self.proxy_sync_listeners();
    }

    /// Sends one gratuitous ARP for `ip` straight to the card.
    fn announce(&mut self, ip: [u8; 4]) {
        let frame = frame_filter::announcement(self.device.local.mac, ip);
        match self.device.nic.send(&frame) {
            Ok(()) => {
                self.front.counters.announcements += 1;
                self.device.counters.tx_frames += 1;
                self.device.counters.tx_bytes += frame.len() as u64;
            }
            Err(_) => self.front.counters.announcements_failed += 1,
        }
    }
}
