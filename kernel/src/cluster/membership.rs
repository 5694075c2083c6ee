//! Membership: the SWIM failure detector, driven over the node transport.
//!
//! Inbound SWIM messages (transport inbox, delivered by the reactor) go to `step`; the
//! reactor's 10 ms ticks go to `tick_late`. Outputs are sent as `Kind::Swim` envelopes, and
//! SWIM's verdicts become kernel events — `node_up`, `node_suspect`, `node_alive`,
//! `node_down`, `node_left` — in the ordered queue and on COM2, like an IRQ, for the
//! control plane to act on. The seed is the node id mixed with the boot TSC, so nodes
//! probe in different orders; every decision is still the protocol's own.
//!
//! Real lateness: the reactor's tick is armed every [`sched::TICK_EVENT_MS`]; each tick measures,
//! on the TSC clock, how long after the previous one it ran. A gap well beyond the period
//! means this node (its VM under a loaded host, or its reactor) was not running, so SWIM
//! is told (`tick_late`) and suspects itself (`self_suspect` on COM2) before it accuses
//! anyone: until `self_trusted` its own suspicions and Down verdicts are withheld, so the
//! planner, which moves cells only on `node_down`, never acts on this node's stale view.
//! (Gating the planner itself was tried: a leader newly elected under load was often a
//! few tens of ms late and then delayed a real failover by its window.)

use ::membership::swim::{self, Config, DownReason, Event, MemberState, Output, Swim};
use ::membership::NodeId;
use alloc::vec::Vec;
use spin::Mutex;

use super::peers;
use crate::arch::cpu::{self, without_interrupts};
use crate::events::{self, EventKind};
use crate::netstack::transport;
use crate::{node, sched, time};

static SWIM: Mutex<Option<Swim>> = Mutex::new(None);

/// Encoded SWIM messages are bounded well below the transport's payload limit.
const MESSAGE_BUF_BYTES: usize = 1400;

/// Starts membership with the configured peers. Without peers the node is alone and SWIM
/// has nothing to probe.
pub fn init() {
    let me = node::config();
    let seed = me.id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ cpu::rdtsc();
    // Metadata is "<name>,<role>": peers learn names and roles with the first alive update.
    let meta = alloc::format!("{},{}", me.name, me.role.as_str());
    let mut swim = match Swim::new(Config::lan().with_seed(seed), me.id, meta.as_bytes()) {
        Ok(swim) => swim,
        Err(err) => {
            log::error!("membership disabled: {err:?}");
            return;
        }
    };
    for peer in peers::get().iter().filter(|p| p.id != me.id) {
        if let Err(err) = swim.add_peer(peer.id) {
            log::error!("membership: cannot add peer {}: {err:?}", peer.id);
        }
    }
    without_interrupts(|| *SWIM.lock() = Some(swim));
    transport::set_consumer(net::Kind::Swim, on_message);
}

fn now_ms() -> u64 {
    time::now_us() / 1000
}

/// A SWIM message arrived (from the reactor).
pub fn on_message(from: NodeId, bytes: &[u8]) {
    let Ok(msg) = postcard::from_bytes::<swim::Message>(bytes) else {
        MALFORMED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        return;
    };
    drive(|swim| swim.step(from, msg, now_ms()));
}

static MALFORMED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// When the previous reactor tick ran (ms), 0 before the first.
static LAST_TICK_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// A reactor tick: how late it ran is the gap since the previous tick beyond one period.
pub fn on_tick() {
    let now = now_ms();
    let last = LAST_TICK_MS.swap(now, core::sync::atomic::Ordering::Relaxed);
    let late_ms = if last == 0 {
        0
    } else {
        now.saturating_sub(last)
            .saturating_sub(sched::TICK_EVENT_MS)
    };
    drive(|swim| swim.tick_late(now, late_ms));
}

/// True while SWIM suspects this node itself (it ran late recently), for `members`.
pub fn suspects_self() -> bool {
    without_interrupts(|| SWIM.lock().as_ref().is_some_and(Swim::suspects_self))
}

/// Runs one input through SWIM, then sends its messages and publishes its verdicts
/// (outside the lock: sending takes the network stack's lock, events wake the reactor).
fn drive(input: impl FnOnce(&mut Swim)) {
    let (outputs, withheld): (Vec<Output>, u64) = without_interrupts(|| {
        let mut guard = SWIM.lock();
        let Some(swim) = guard.as_mut() else {
            return (Vec::new(), 0);
        };
        input(swim);
        let withheld = swim.stats().verdicts_withheld;
        (swim.drain_outputs().collect(), withheld)
    });
    let mut buf = [0u8; MESSAGE_BUF_BYTES];
    for output in outputs {
        match output {
            Output::Send { to, msg } => match postcard::to_slice(&msg, &mut buf) {
                // A send can fail while the link is down; SWIM's own timeouts cover loss.
                Ok(bytes) => {
                    let _ = transport::send(net::Kind::Swim, to, bytes);
                }
                Err(err) => log::error!("membership: cannot encode a message to {to}: {err}"),
            },
            Output::Event(event) => events::push(to_kernel_event(event, withheld)),
        }
    }
}

fn to_kernel_event(event: Event, withheld: u64) -> EventKind {
    match event {
        Event::NodeUp { id } => EventKind::NodeUp { peer: id },
        Event::NodeSuspect { id, incarnation } => EventKind::NodeSuspect {
            peer: id,
            incarnation,
        },
        Event::NodeAlive { id, incarnation } => EventKind::NodeAlive {
            peer: id,
            incarnation,
        },
        Event::NodeDown { id, reason } => EventKind::NodeDown {
            peer: id,
            reporter: match reason {
                DownReason::SuspicionTimeout => None,
                DownReason::ReportedBy { reporter } => Some(reporter),
            },
        },
        Event::NodeLeft { id } => EventKind::NodeLeft { peer: id },
        Event::SelfSuspect { late_ms } => EventKind::SelfSuspect { late_ms },
        Event::SelfTrusted => EventKind::SelfTrusted { withheld },
    }
}

/// One row of `members`.
pub struct MemberRow {
    pub id: NodeId,
    pub name: alloc::string::String,
    pub state: MemberState,
    pub incarnation: u64,
    /// Milliseconds since it was last heard from.
    pub last_heard_ago_ms: u64,
    pub is_self: bool,
}

/// The membership table, this node first; `None` when membership is not running.
pub fn members() -> Option<Vec<MemberRow>> {
    let now = now_ms();
    without_interrupts(|| {
        let guard = SWIM.lock();
        let swim = guard.as_ref()?;
        Some(
            swim.members()
                .map(|m| MemberRow {
                    id: m.id,
                    // Metadata arrives with the first alive update; until then, the peer list.
                    name: match meta_fields(m.meta) {
                        Some((name, _)) => alloc::string::String::from(name),
                        None => peers::name_of(m.id),
                    },
                    state: m.state,
                    incarnation: m.incarnation,
                    last_heard_ago_ms: now.saturating_sub(m.last_heard_ms),
                    is_self: m.is_self,
                })
                .collect(),
        )
    })
}

/// Splits "<name>,<role>" metadata.
fn meta_fields(meta: &[u8]) -> Option<(&str, &str)> {
    let text = core::str::from_utf8(meta).ok()?;
    let (name, role) = text.split_once(',')?;
    (!name.is_empty()).then_some((name, role))
}

/// A node's role as it announced it (this node's from its config).
pub fn role_of(id: NodeId) -> Option<kcore::node_config::Role> {
    let me = node::config();
    if id == me.id {
        return Some(me.role);
    }
    without_interrupts(|| {
        let guard = SWIM.lock();
        let member = guard.as_ref()?.member(id)?;
        match meta_fields(&member.meta)?.1 {
            "witness" => Some(kcore::node_config::Role::Witness),
            "worker" => Some(kcore::node_config::Role::Worker),
            _ => None,
        }
    })
}

/// A node's membership state as this node sees it (itself: always alive).
pub fn state_of(id: NodeId) -> Option<MemberState> {
    without_interrupts(|| {
        let guard = SWIM.lock();
        let swim = guard.as_ref()?;
        if swim.self_id() == id {
            return Some(MemberState::Alive);
        }
        swim.member(id).map(|m| m.state)
    })
}

/// Messages that failed to decode.
pub fn malformed() -> u64 {
    MALFORMED.load(core::sync::atomic::Ordering::Relaxed)
}
