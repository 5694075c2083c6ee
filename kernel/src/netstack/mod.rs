//! The cluster fabric inside the kernel: virtio-net + smoltcp + the node transport.
//!
//! One kernel task, `net`, owns the network stack ([`Stack`]: the smoltcp interface, its
//! sockets, the card, the transport endpoint). It sleeps on a wait queue until the card's
//! interrupt, a request from another task ([`kick`]) or its next deadline (smoltcp's
//! `poll_at`, a ping or probe timeout) wakes it; then it polls smoltcp, serves the UDP
//! transport socket (answering RTT probes itself, queueing everything else for the
//! reactor, see [`transport`]) and the ICMP socket ([`ping`]), and sleeps again. Nothing
//! polls at idle.
//!
//! Deadlines: the scheduler has no "block with a timeout", so a second small task,
//! `net-timer`, sleeps until the armed deadline (in steps of at most [`TIMER_STEP_US`], so
//! an earlier deadline armed meanwhile is late by at most one step) and then wakes `net`.
//! When nothing is armed it blocks too.
//!
//! Locking: the stack sits in one spin mutex that is only ever taken with interrupts
//! masked ([`with_stack`]), so on this single CPU a holder is never preempted and the
//! interrupt handler (which only acknowledges the card and wakes `net`) never needs it.
//!
//! Addresses (docs/networking.md): node `id` is MAC `52:54:00:00:HI:LO` and IPv4
//! `169.254.77.<id>/24` — link-local, because the fabric is a private L2 segment that
//! exists only inside the host's unix sockets.

pub mod cell_sockets;
mod device;
mod neighbors;
pub mod ping;
pub mod tls;
pub mod transport;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kcore::frame_filter::{DropReason, LocalAddrs};
use kcore::run_queue::Priority;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use spin::Mutex;

use crate::arch::cpu::without_interrupts;
use crate::arch::{apic, idt};
use crate::drivers::virtio::net as virtio_net;
use crate::sched::{self, wait::WaitQueue};
use crate::{node, platform, time};

pub use device::Counters;

/// The fabric's subnet: 169.254.77.0/24.
pub const SUBNET: [u8; 3] = [169, 254, 77];
/// Prefix length of [`SUBNET`].
pub const PREFIX_LEN: u8 = 24;
/// The interrupt vector of the card's INTx line.
pub const NET_VECTOR: u8 = idt::IRQ_BASE + 16;
/// Longest the timer task sleeps before re-reading the armed deadline.
pub const TIMER_STEP_US: u64 = 10_000;
/// How long `net` pauses after a pass that used its whole receive budget: at most
/// `RX_BUDGET` frames per pause, i.e. 64 000 frames/s, which no real workload reaches.
pub const FLOOD_PAUSE_US: u64 = 1_000;
const NO_DEADLINE: u64 = u64::MAX;

/// The MAC address of node `id`: QEMU's `52:54:00` prefix, then `00:HI:LO`.
pub fn mac_of(id: u64) -> [u8; 6] {
    assert!(id <= 0xffff, "node id {id} does not fit a fabric MAC");
    [0x52, 0x54, 0x00, 0x00, (id >> 8) as u8, id as u8]
}

/// The fabric IPv4 address of node `id` (ids 1..=254).
pub fn ip_of(id: u64) -> Option<Ipv4Address> {
    (1..=254)
        .contains(&id)
        .then(|| Ipv4Address::new(SUBNET[0], SUBNET[1], SUBNET[2], id as u8))
}

/// The node id behind a fabric address.
pub fn id_of(ip: Ipv4Address) -> Option<u64> {
    let o = ip.octets();
    (o[..3] == SUBNET && (1..=254).contains(&o[3])).then_some(u64::from(o[3]))
}

/// Everything the `net` task owns.
pub struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
    device: device::Device,
    udp: SocketHandle,
    icmp: SocketHandle,
    pub(crate) transport: transport::Service,
    pub(crate) pinger: ping::Pinger,
    /// Cells' sockets: budget, ports, closing streams (`cell_sockets`).
    pub(crate) cells: cell_sockets::CellNet,
    /// When the peers' static neighbour entries are next refreshed (`neighbors`).
    neighbors_due_us: u64,
    /// Mutual-TLS sessions with the peers (empty unless datagrams are sealed).
    pub(crate) tls: tls::Manager,
}

static STACK: Mutex<Option<Stack>> = Mutex::new(None);
/// The `net` task waits here.
static NET_WAIT: WaitQueue = WaitQueue::new();
/// Tasks waiting for a result from `net` (ping, netbench) wait here.
static CLIENT_WAIT: WaitQueue = WaitQueue::new();
/// The `net-timer` task waits here while no deadline is armed.
static TIMER_WAIT: WaitQueue = WaitQueue::new();
static WORK: AtomicBool = AtomicBool::new(false);
static DEADLINE_US: AtomicU64 = AtomicU64::new(NO_DEADLINE);
static IRQS: AtomicU64 = AtomicU64::new(0);
static IRQS_NOT_OURS: AtomicU64 = AtomicU64::new(0);
static WAKEUPS: AtomicU64 = AtomicU64::new(0);

/// Runs `f` on the stack with interrupts masked; `None` when there is no network.
pub fn with_stack<R>(f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
    without_interrupts(|| STACK.lock().as_mut().map(f))
}

/// Whether the node has a network.
pub fn is_up() -> bool {
    with_stack(|_| ()).is_some()
}

/// Asks the `net` task to run (after queueing something for it to send).
pub fn kick() {
    WORK.store(true, Ordering::Release);
    NET_WAIT.wake_one();
}

/// Blocks the caller until `done` returns `Some` (checked after every `net` pass).
pub(crate) fn wait_for<R>(mut done: impl FnMut(&mut Stack) -> Option<R>) -> R {
    let mut result = None;
    CLIENT_WAIT.wait_until(|| {
        result = with_stack(&mut done).flatten();
        result.is_some()
    });
    result.expect("wait_until returned without a result")
}

/// Why the network did not come up.
#[derive(Debug)]
pub enum StartError {
    Probe(virtio_net::ProbeError),
    NoIoApic { gsi: u32 },
    BadNodeId(u64),
    Spawn(sched::SpawnError),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::Probe(err) => write!(f, "{err}"),
            StartError::NoIoApic { gsi } => write!(f, "no I/O APIC serves GSI {gsi}"),
            StartError::BadNodeId(id) => write!(f, "node id {id} has no fabric address (1-254)"),
            StartError::Spawn(err) => write!(f, "cannot start the net tasks: {err:?}"),
        }
    }
}

/// Finds the card, builds the stack and starts the `net` and `net-timer` tasks. A node
/// without a card (single-node tests) logs it and runs without a network.
pub fn start() {
    match try_start() {
        Ok(()) => {}
        Err(StartError::Probe(virtio_net::ProbeError::NotFound)) => {
            log::info!("net: no virtio-net card; networking off")
        }
        Err(err) => log::error!("net: not started: {err}"),
    }
}

fn try_start() -> Result<(), StartError> {
    let id = node::config().id;
    let ip = ip_of(id).ok_or(StartError::BadNodeId(id))?;
    let nic = virtio_net::probe().map_err(StartError::Probe)?;
    let (irq_line, card_mac, location) = (nic.irq_line, nic.mac(), nic.location);
    let mac = mac_of(id);
    if card_mac != mac {
        log::warn!(
            "net: card MAC {:02x?} differs from the node's {:02x?}; using the node's",
            card_mac,
            mac
        );
    }
    let broadcast = Ipv4Address::new(SUBNET[0], SUBNET[1], SUBNET[2], 255);
    let local = LocalAddrs {
        mac,
        ipv4: ip.octets(),
        ipv4_broadcast: broadcast.octets(),
    };
    transport::init_inboxes();
    let stack = build_stack(id, ip, device::Device::new(nic, local));
    without_interrupts(|| *STACK.lock() = Some(stack));
    route_irq(irq_line)?;
    with_stack(|s| s.device.nic.enable_interrupts());
    sched::spawn("net", Priority::HIGH, net_task).map_err(StartError::Spawn)?;
    sched::spawn("net-timer", Priority::HIGH, timer_task).map_err(StartError::Spawn)?;
    tls::start().map_err(StartError::Spawn)?;
    log::info!("net: virtio-net at PCI {location}, IRQ {irq_line}: {ip}/{PREFIX_LEN}");
    Ok(())
}

fn build_stack(id: u64, ip: Ipv4Address, mut device: device::Device) -> Stack {
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(device.local.mac)));
    config.random_seed = crate::arch::cpu::rdtsc() ^ id;
    let now = Instant::from_micros(time::now_us() as i64);
    let mut iface = Interface::new(config, &mut device, now);
    iface.update_ip_addrs(|addrs| {
        addrs
            .push(IpCidr::new(IpAddress::Ipv4(ip), PREFIX_LEN))
            .expect("one address fits");
    });
    // Sized once for every socket the node may ever hold (the kernel's two, the TLS links',
    // and the cells' most, `cell_sockets::CellNet::sockets_max`), so adding a socket never
    // reallocates:
    // no growth under load, and no infallible allocation that could fail.
    let cells = cell_sockets::CellNet::new(cell_socket_budget_bytes(), &[transport::PORT]);
    // The TLS manager's sockets: at most one per peer plus its spare listeners.
    let tls_sockets = crate::cluster::peers::get().len() + tls::SPARE_LISTENERS;
    let mut sockets = SocketSet::new(alloc::vec::Vec::with_capacity(
        cells.sockets_max() + 2 + tls_sockets,
    ));
    let udp = sockets.add(transport::new_socket());
    let icmp = sockets.add(ping::new_socket());
    let tls = tls::Manager::new(&mut sockets);
    Stack {
        iface,
        sockets,
        device,
        udp,
        icmp,
        transport: transport::Service::new(id),
        pinger: ping::Pinger::new(),
        cells,
        neighbors_due_us: 0,
        tls,
    }
}

/// The node-wide budget of cell socket buffers: a quarter of the kernel heap.
fn cell_socket_budget_bytes() -> usize {
    let (_, heap_bytes) = crate::mm::heap::usage();
    usize::try_from(heap_bytes / 4).unwrap_or(usize::MAX)
}

/// Routes the card's INTx (an ISA IRQ number chosen by the firmware) through the I/O APIC.
/// PCI interrupts are level-triggered; the polarity comes from the MADT's override for
/// that IRQ (QEMU declares 5, 9, 10 and 11 level, active-high), active-high otherwise.
fn route_irq(line: u8) -> Result<(), StartError> {
    let platform = platform::get();
    let route = platform.isa_route(line);
    let (base, gsi_base) = platform
        .io_apic_for(route.gsi)
        .ok_or(StartError::NoIoApic { gsi: route.gsi })?;
    idt::register_irq(NET_VECTOR, on_interrupt);
    apic::ioapic_route(
        base,
        gsi_base,
        route.gsi,
        NET_VECTOR,
        apic::id(),
        true,
        route.active_low,
    );
    // If a frame arrived before the route existed, the line went high while the pin was
    // masked and edge-triggered, and an I/O APIC ignores edges on a masked pin: the line
    // would now stay high with no interrupt ever delivered. Reading the ISR lowers it, so
    // the next frame raises it again; the `net` task's first pass takes what is waiting.
    virtio_net::ack_interrupt();
    Ok(())
}

/// The card's interrupt: acknowledge it (deasserting the line) and wake `net`.
fn on_interrupt() {
    if virtio_net::ack_interrupt() {
        IRQS.fetch_add(1, Ordering::Relaxed);
        kick();
    } else {
        // Another device sharing the line, or a level interrupt seen twice.
        IRQS_NOT_OURS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `net` task: poll, serve sockets, arm the next deadline, sleep.
fn net_task() {
    loop {
        let (more, deadline_us) =
            with_stack(|s| s.service(time::now_us())).expect("the stack exists while net runs");
        CLIENT_WAIT.wake_all();
        if more {
            // A full budget means a flood (real traffic is far below 64 frames a pass).
            // Pause instead of yielding: a yield would keep this high-priority task ahead
            // of the reactor and everything else, so a flood could starve the control loop.
            sched::sleep_until_us(time::now_us() + FLOOD_PAUSE_US);
            continue;
        }
        arm_timer(deadline_us);
        NET_WAIT.wait_until(|| WORK.swap(false, Ordering::AcqRel));
        WAKEUPS.fetch_add(1, Ordering::Relaxed);
    }
}

fn arm_timer(deadline_us: Option<u64>) {
    match deadline_us {
        Some(d) if d <= time::now_us() => WORK.store(true, Ordering::Release),
        Some(d) => {
            DEADLINE_US.store(d, Ordering::Release);
            TIMER_WAIT.wake_one();
        }
        None => DEADLINE_US.store(NO_DEADLINE, Ordering::Release),
    }
}

/// The `net-timer` task: wakes `net` when its deadline passes.
fn timer_task() {
    loop {
        TIMER_WAIT.wait_until(|| DEADLINE_US.load(Ordering::Acquire) != NO_DEADLINE);
        let deadline = DEADLINE_US.load(Ordering::Acquire);
        let now = time::now_us();
        if deadline != NO_DEADLINE && now < deadline {
            sched::sleep_until_us(deadline.min(now + TIMER_STEP_US));
            continue;
        }
        if DEADLINE_US
            .compare_exchange(deadline, NO_DEADLINE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            kick();
        }
    }
}

impl Stack {
    /// One pass: smoltcp ingress/egress, the transport and ICMP sockets, timeouts. Returns
    /// whether frames are still waiting (the receive budget ran out) and the next deadline.
    fn service(&mut self, now_us: u64) -> (bool, Option<u64>) {
        let now = Instant::from_micros(now_us as i64);
        if now_us >= self.neighbors_due_us {
            self.seed_neighbors(now);
            self.neighbors_due_us = now_us + neighbors::REFRESH_US;
        }
        self.device.start_poll();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let more = self.device.budget_exhausted();
        let udp = self
            .sockets
            .get_mut::<smoltcp::socket::udp::Socket>(self.udp);
        self.transport.service(udp, now_us);
        let icmp = self
            .sockets
            .get_mut::<smoltcp::socket::icmp::Socket>(self.icmp);
        self.pinger.service(icmp, now_us);
        let (tls_work, tls_at) =
            self.tls
                .service(self.iface.context(), &mut self.sockets, &mut self.transport);
        if tls_work {
            tls::wake();
        }
        // Flush what the handlers queued (pongs, probes, echo requests).
        self.device.start_poll();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let more = more || self.device.budget_exhausted();
        // Cells' closed streams that finished (or timed out) go away now.
        self.reap_lingering(now_us);
        let smoltcp_at = self
            .iface
            .poll_at(now, &self.sockets)
            .map(|t| t.total_micros().max(0) as u64);
        let deadline = [
            smoltcp_at,
            self.transport.deadline_us(),
            self.pinger.deadline_us(),
            self.cells.deadline_us(),
            Some(self.neighbors_due_us),
            tls_at,
        ]
        .into_iter()
        .flatten()
        .min();
        (more, deadline)
    }

    /// Tells smoltcp every configured peer's fixed fabric address (see `neighbors`).
    fn seed_neighbors(&mut self, now: Instant) {
        let local = (
            EthernetAddress(self.device.local.mac),
            Ipv4Address::from(self.device.local.ipv4),
        );
        let me = node::config().id;
        let peers = crate::cluster::peers::get()
            .iter()
            .filter(|p| p.id != me)
            // ip_of first: it admits only fabric ids (1..=254), which mac_of accepts.
            .filter_map(|p| ip_of(p.id).map(|ip| (EthernetAddress(mac_of(p.id)), ip)));
        neighbors::seed(&mut self.iface, &mut self.sockets, now, local, peers);
    }

    /// Takes back a handshake step the `tls` task ran.
    pub(crate) fn finish_tls_job(&mut self, result: tls::JobResult) {
        self.tls
            .finish_job(result, &mut self.sockets, &mut self.transport);
    }

    /// Snapshot for the `net` command.
    pub fn status(&self) -> Status {
        let local = self.device.local;
        Status {
            mac: local.mac,
            ip: Ipv4Address::from(local.ipv4),
            link_up: self.device.nic.link_up(),
            counters: self.device.counters,
        }
    }

    /// The UDP socket and the transport service, together.
    fn transport_parts(
        &mut self,
    ) -> (
        &mut transport::Service,
        &mut smoltcp::socket::udp::Socket<'static>,
    ) {
        (
            &mut self.transport,
            self.sockets
                .get_mut::<smoltcp::socket::udp::Socket>(self.udp),
        )
    }

    /// The ICMP socket and the pinger, together.
    fn ping_parts(
        &mut self,
    ) -> (
        &mut ping::Pinger,
        &mut smoltcp::socket::icmp::Socket<'static>,
    ) {
        (
            &mut self.pinger,
            self.sockets
                .get_mut::<smoltcp::socket::icmp::Socket>(self.icmp),
        )
    }
}

/// What `net` prints about the interface.
#[derive(Clone, Copy, Debug)]
pub struct Status {
    pub mac: [u8; 6],
    pub ip: Ipv4Address,
    pub link_up: bool,
    pub counters: Counters,
}

/// Interrupts taken, interrupts with nothing for us, and `net` wake-ups, for `net`.
pub fn activity() -> (u64, u64, u64) {
    (
        IRQS.load(Ordering::Relaxed),
        IRQS_NOT_OURS.load(Ordering::Relaxed),
        WAKEUPS.load(Ordering::Relaxed),
    )
}

/// The pre-filter's drop reasons with their counts.
pub fn filter_drops(counters: &Counters) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    DropReason::ALL
        .iter()
        .map(|r| (r.name(), counters.rx_dropped[r.index()]))
}
