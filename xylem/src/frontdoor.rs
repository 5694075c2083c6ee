//! The front door: a stable address per service, who answers for it, and where its
//! connections go (docs/front-door.md).
//!
//! Pure and sans-IO like the rest of the crate. Four pieces, in the order data flows:
//!
//! 1. [`Addresses`]: the committed address table, part of the replicated desired state. A
//!    service created with a port gets a virtual IPv4 address (a *VIP*) from the reserved
//!    range [`VIP_FIRST`]..; the lowest free one, chosen at apply time, so every node picks
//!    the same. Each address has at most one [`Owner`] `(node, epoch)`, changed only by a
//!    committed `SetOwner` whose epoch is above the current owner's (fencing).
//! 2. [`plan_owners`]: the Raft leader's decision, run beside placement. It keeps an owner
//!    while SWIM has not declared it down (a *suspected* owner keeps its address, so a
//!    transient loss never moves it, and nothing moves back when a node returns: that is
//!    the hysteresis against a flapping link), and picks a new owner for an address whose
//!    owner is down, unknown, a non-member or draining: a live witness first, then a live
//!    node running a replica of the service (connections are then delivered locally), then
//!    any live worker. Why the witness first: it hosts no cells, so the common fault — a
//!    worker dying with its replicas — never moves the address at all (no ARP change, the
//!    owner's proxy just stops choosing the dead backend), and the proxy spreads
//!    connections over every worker's replica instead of sending all to the owner's own.
//! 3. [`answering`]: what a node answers for. Only the committed owner, and only while it
//!    has quorum (in contact with the leader and caught up): a node cut off, paused or
//!    behind answers for nothing, so a stale owner never reclaims its old address, and two
//!    nodes never answer for one address at the same epoch.
//! 4. [`Announcer`] (gratuitous ARP after a takeover, rate-limited so a flapping link
//!    cannot make a storm) and [`Backends`] (round-robin over the replicas, skipping a
//!    backend that just refused or did not answer, for the owner's TCP proxy).

use crate::{Epoch, NodeId, NodeRole};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The fabric's /24 (docs/networking.md): VIPs live on the same segment as the nodes, so
/// any client on it reaches them with plain ARP, no route.
pub const SUBNET: [u8; 3] = [169, 254, 77];
/// The first VIP's last octet: `169.254.77.200`. Node ids stay below it.
pub const VIP_FIRST: u8 = 200;
/// How many VIPs exist: `169.254.77.200` ..= `169.254.77.239` (240..=254 are left to the
/// host endpoints and gateways of the test harness).
pub const VIPS_MAX: u8 = 40;
/// The DNS zone services are named in: `<service>.xylem`.
pub const ZONE: &str = "xylem";

/// The VIP with index `index` (`0..VIPS_MAX`) as IPv4 octets.
pub fn vip_addr(index: u8) -> [u8; 4] {
    assert!(index < VIPS_MAX, "VIP index {index} out of range");
    [SUBNET[0], SUBNET[1], SUBNET[2], VIP_FIRST + index]
}

/// The VIP index of an address, if it is one.
pub fn vip_index(addr: [u8; 4]) -> Option<u8> {
    (addr[..3] == SUBNET && (VIP_FIRST..VIP_FIRST + VIPS_MAX).contains(&addr[3]))
        .then(|| addr[3] - VIP_FIRST)
}

/// Who answers for an address, fenced by `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub node: NodeId,
    pub epoch: Epoch,
}

/// One service's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Index into the VIP range ([`vip_addr`]).
    pub index: u8,
    /// The TCP port the service listens on (its cells listen on the same port).
    pub port: u16,
    /// The node answering for it, if any was committed yet.
    pub owner: Option<Owner>,
}

impl Address {
    /// The address as IPv4 octets.
    pub fn ip(&self) -> [u8; 4] {
        vip_addr(self.index)
    }
}

/// Why the address table refused a change (every node refuses the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressError {
    /// All [`VIPS_MAX`] addresses are taken.
    Exhausted,
    /// The service has no address (no port, or it does not exist).
    NoAddress,
    /// The epoch is not above the current owner's: a stale or duplicate decision.
    StaleEpoch { current: Epoch },
    /// Port 0 is not a port.
    BadPort,
    /// Another service has this port: cells listen on the node's port, and connections to
    /// either address would reach either service's cells on a node running both.
    PortTaken,
}

/// The committed address table (lives in the desired state, changes only on apply).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    by_service: BTreeMap<String, Address>,
}

impl Addresses {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `service` the lowest free VIP for `port` (idempotent: a service that already
    /// has one keeps its index and takes the new port).
    pub fn allocate(&mut self, service: &str, port: u16) -> Result<u8, AddressError> {
        self.check_allocate(service, port)?;
        if let Some(addr) = self.by_service.get_mut(service) {
            addr.port = port;
            return Ok(addr.index);
        }
        let index = (0..VIPS_MAX)
            .find(|i| self.by_service.values().all(|a| a.index != *i))
            .ok_or(AddressError::Exhausted)?;
        self.by_service.insert(
            String::from(service),
            Address {
                index,
                port,
                owner: None,
            },
        );
        Ok(index)
    }

    /// Checks an allocation without doing it.
    pub fn check_allocate(&self, service: &str, port: u16) -> Result<(), AddressError> {
        if port == 0 {
            return Err(AddressError::BadPort);
        }
        if self
            .by_service
            .iter()
            .any(|(s, a)| s != service && a.port == port)
        {
            return Err(AddressError::PortTaken);
        }
        if self.by_service.contains_key(service) || self.by_service.len() < usize::from(VIPS_MAX) {
            Ok(())
        } else {
            Err(AddressError::Exhausted)
        }
    }

    /// Frees a deleted service's address (its index may be reused by a later service; the
    /// epochs of that service's owners are new, so no old owner can answer for it).
    pub fn release(&mut self, service: &str) {
        self.by_service.remove(service);
    }

    /// Checks a change of owner without doing it.
    pub fn check_owner(&self, service: &str, epoch: Epoch) -> Result<(), AddressError> {
        let addr = self
            .by_service
            .get(service)
            .ok_or(AddressError::NoAddress)?;
        match addr.owner {
            Some(o) if o.epoch >= epoch => Err(AddressError::StaleEpoch { current: o.epoch }),
            _ => Ok(()),
        }
    }

    /// Commits a new owner: only with an epoch above the current owner's.
    pub fn set_owner(
        &mut self,
        service: &str,
        node: NodeId,
        epoch: Epoch,
    ) -> Result<(), AddressError> {
        self.check_owner(service, epoch)?;
        let addr = self
            .by_service
            .get_mut(service)
            .expect("checked just above");
        addr.owner = Some(Owner { node, epoch });
        Ok(())
    }

    /// The service's address.
    pub fn get(&self, service: &str) -> Option<&Address> {
        self.by_service.get(service)
    }

    /// The service whose VIP has this index.
    pub fn by_index(&self, index: u8) -> Option<(&str, &Address)> {
        self.by_service
            .iter()
            .find(|(_, a)| a.index == index)
            .map(|(s, a)| (s.as_str(), a))
    }

    /// Every address, by service name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Address)> {
        self.by_service.iter().map(|(s, a)| (s.as_str(), a))
    }

    /// How many services have an address.
    pub fn len(&self) -> usize {
        self.by_service.len()
    }

    /// Whether no service has an address.
    pub fn is_empty(&self) -> bool {
        self.by_service.is_empty()
    }
}

/// SWIM's verdict on a node, as the owner planner needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Suspected: keeps what it owns, gets nothing new.
    Suspect,
    /// Declared down (or left).
    Down,
}

/// The leader's view of one member for [`plan_owners`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    pub role: NodeRole,
    pub liveness: Liveness,
    pub draining: bool,
}

/// One decision of [`plan_owners`]: `service`'s address now belongs to `node` at `epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerChange {
    pub service: String,
    pub node: NodeId,
    pub epoch: Epoch,
}

/// The leader's owner decisions for this round. `replica_nodes(service)` lists the nodes
/// the service's slots are assigned to; epochs are numbered from `next_epoch` upwards (the
/// caller passes `epoch_high + 1 + <epochs it already used this round>`).
pub fn plan_owners(
    addresses: &Addresses,
    candidates: &[Candidate],
    replica_nodes: impl Fn(&str) -> Vec<NodeId>,
    next_epoch: Epoch,
) -> Vec<OwnerChange> {
    let mut epoch = next_epoch;
    let mut out = Vec::new();
    // Addresses each node will own after this round, to spread new ones.
    let mut owned: BTreeMap<NodeId, u32> = BTreeMap::new();
    for (_, addr) in addresses.iter() {
        if let Some(o) = addr.owner {
            *owned.entry(o.node).or_default() += 1;
        }
    }
    for (service, addr) in addresses.iter() {
        let current = addr
            .owner
            .and_then(|o| candidates.iter().find(|c| c.id == o.node));
        let healthy = current.is_some_and(|c| c.liveness != Liveness::Down && !c.draining);
        if healthy {
            continue;
        }
        let replicas = replica_nodes(service);
        let best = candidates
            .iter()
            .filter(|c| c.liveness == Liveness::Alive && !c.draining)
            .filter(|c| Some(c.id) != addr.owner.map(|o| o.node))
            .min_by_key(|c| {
                (
                    c.role != NodeRole::Witness,
                    !replicas.contains(&c.id),
                    owned.get(&c.id).copied().unwrap_or(0),
                    c.id,
                )
            });
        let Some(best) = best else {
            // Nobody can take it: leave it where it is (a down owner answers nothing
            // anyway) rather than move it to a node that may be gone as well.
            continue;
        };
        if let Some(o) = addr.owner {
            if let Some(n) = owned.get_mut(&o.node) {
                *n = n.saturating_sub(1);
            }
        }
        *owned.entry(best.id).or_default() += 1;
        out.push(OwnerChange {
            service: String::from(service),
            node: best.id,
            epoch,
        });
        epoch += 1;
    }
    out
}

/// How long a node keeps answering for its addresses after it last had quorum (local ms).
///
/// Quorum blinks for reasons that move nothing: the Raft leader dies (every node is without
/// a leader until the next one is elected and has reported, 100-300 ms) and every commit
/// is seen a moment before it is applied. Without a grace, the owner dropped its address at
/// each blink and reset every connection through it — even when the node that died ran
/// neither the address nor a replica. The price: a node cut off keeps answering for up to
/// this long after its quorum ends (1 s, against a takeover that needs a SWIM `node_down`
/// verdict, an election if the leader was lost, and a commit), and only at its old epoch,
/// which a new owner's is above; a paused node's clock jumps on resume, so it has no grace
/// left and answers for nothing until it has caught up again.
pub const ANSWER_GRACE_MS: u64 = 1_000;

/// An address a node answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Answer {
    pub ip: [u8; 4],
    pub port: u16,
    pub epoch: Epoch,
}

/// The addresses node `me` answers for now: those committed to it, and none at all
/// without quorum.
pub fn answering(me: NodeId, quorum: bool, addresses: &Addresses) -> Vec<Answer> {
    if !quorum {
        return Vec::new();
    }
    addresses
        .iter()
        .filter_map(|(_, a)| {
            let o = a.owner?;
            (o.node == me).then(|| Answer {
                ip: a.ip(),
                port: a.port,
                epoch: o.epoch,
            })
        })
        .collect()
}

/// When announcements (gratuitous ARP) go out after a node starts answering for an
/// address: at once, then after each delay (ms) of [`ANNOUNCE_AFTER_MS`].
pub const ANNOUNCE_AFTER_MS: [u64; 3] = [0, 50, 250];
/// At most this many announcements per address in any [`ANNOUNCE_WINDOW_MS`]: a link that
/// flaps (address lost and regained over and over) cannot turn into an ARP storm.
pub const ANNOUNCE_PER_WINDOW_MAX: u32 = 6;
/// The window of [`ANNOUNCE_PER_WINDOW_MAX`].
pub const ANNOUNCE_WINDOW_MS: u64 = 10_000;

/// Schedules and rate-limits gratuitous ARP per address.
#[derive(Clone, Debug, Default)]
pub struct Announcer {
    /// Per address: pending announcement times.
    due: BTreeMap<[u8; 4], Vec<u64>>,
    /// Per address: when the recent announcements went out.
    sent: BTreeMap<[u8; 4], Vec<u64>>,
    /// Announcements dropped by the rate limit.
    pub suppressed: u64,
}

impl Announcer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The node started answering for `ip` at `now_ms`.
    pub fn started(&mut self, ip: [u8; 4], now_ms: u64) {
        let times = ANNOUNCE_AFTER_MS.iter().map(|d| now_ms + d).collect();
        self.due.insert(ip, times);
    }

    /// The node stopped answering for `ip`: nothing more goes out for it.
    pub fn stopped(&mut self, ip: [u8; 4]) {
        self.due.remove(&ip);
    }

    /// The addresses to announce now (each at most once per call), within the rate limit.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<[u8; 4]> {
        let mut out = Vec::new();
        for (ip, times) in self.due.iter_mut() {
            if !times.iter().any(|t| *t <= now_ms) {
                continue;
            }
            times.retain(|t| *t > now_ms);
            let sent = self.sent.entry(*ip).or_default();
            sent.retain(|t| now_ms.saturating_sub(*t) < ANNOUNCE_WINDOW_MS);
            if sent.len() >= ANNOUNCE_PER_WINDOW_MAX as usize {
                self.suppressed += 1;
                continue;
            }
            sent.push(now_ms);
            out.push(*ip);
        }
        self.due.retain(|_, times| !times.is_empty());
        self.sent.retain(|_, s| !s.is_empty());
        out
    }

    /// The next time [`Announcer::take_due`] has work.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.due.values().flat_map(|t| t.iter().copied()).min()
    }
}

/// How long a backend that refused or did not answer is skipped.
pub const BACKEND_PENALTY_MS: u64 = 2_000;
/// Most backends remembered as failed (oldest forgotten first).
pub const PENALTIES_MAX: usize = 64;

/// Round-robin backend choice for the owner's proxy, with a short penalty for a backend
/// that just failed.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    next: BTreeMap<String, usize>,
    penalty_until_ms: BTreeMap<NodeId, u64>,
}

impl Backends {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next backend for `service` among `nodes` (sorted, deduplicated by the caller or
    /// not: order is what matters), skipping those in `tried` (this connection's failed
    /// attempts) and, while others remain, those in penalty.
    pub fn pick(
        &mut self,
        service: &str,
        nodes: &[NodeId],
        tried: &[NodeId],
        now_ms: u64,
    ) -> Option<NodeId> {
        let fresh: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| !tried.contains(n))
            .collect();
        if fresh.is_empty() {
            return None;
        }
        let healthy: Vec<NodeId> = fresh
            .iter()
            .copied()
            .filter(|n| self.penalty_until_ms.get(n).is_none_or(|t| *t <= now_ms))
            .collect();
        let pool = if healthy.is_empty() { fresh } else { healthy };
        let cursor = self.next.entry(String::from(service)).or_insert(0);
        let chosen = pool[*cursor % pool.len()];
        *cursor = cursor.wrapping_add(1);
        Some(chosen)
    }

    /// `node` refused or did not answer at `now_ms`.
    pub fn failed(&mut self, node: NodeId, now_ms: u64) {
        if self.penalty_until_ms.len() >= PENALTIES_MAX
            && !self.penalty_until_ms.contains_key(&node)
        {
            let oldest = self
                .penalty_until_ms
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(n, _)| *n);
            if let Some(n) = oldest {
                self.penalty_until_ms.remove(&n);
            }
        }
        self.penalty_until_ms
            .insert(node, now_ms + BACKEND_PENALTY_MS);
    }

    /// `node` accepted a connection: its penalty ends.
    pub fn succeeded(&mut self, node: NodeId) {
        self.penalty_until_ms.remove(&node);
    }

    /// Forgets a deleted service's cursor.
    pub fn forget(&mut self, service: &str) {
        self.next.remove(service);
    }
}

#[cfg(test)]
mod tests;
