//! The host endpoint's "network card": one fabric port as a smoltcp `Device`.
//!
//! The fabric (docs/fabric.md) gives every port two unix datagram sockets: it binds
//! `switch<N>.sock` and delivers frames for port N to `node<N>.sock`. A QEMU node binds
//! `node<N>.sock`; so does [`PortDevice`], and it sends its frames to `switch<N>.sock`. One
//! datagram is one Ethernet frame, both ways.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Tries to hand one frame to a full switch queue, [`TX_BACKOFF`] apart (20 ms at most).
const TX_RETRIES: usize = 100;
/// Pause between tries.
const TX_BACKOFF: Duration = Duration::from_micros(200);

/// The largest frame we send or take: Ethernet header + 1500 bytes of IP.
pub const FRAME_BYTES_MAX: usize = 1514;

/// Frame counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeviceStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames the fabric socket refused (its queue was full); smoltcp retransmits.
    pub tx_dropped: u64,
}

/// One fabric port.
pub struct PortDevice {
    socket: UnixDatagram,
    /// Where frames go: the switch's socket for this port.
    switch: std::path::PathBuf,
    pub stats: DeviceStats,
}

impl PortDevice {
    /// Binds `node<port>.sock` in `fabric_dir` and aims at the switch's `switch<port>.sock`.
    pub fn attach(fabric_dir: &Path, port: u32) -> io::Result<PortDevice> {
        let node_path = crate::fabric::node_path(fabric_dir, port);
        let _ = std::fs::remove_file(&node_path);
        let socket = UnixDatagram::bind(&node_path)?;
        // Not `connect`ed: a connected datagram socket takes datagrams only from its peer,
        // and the switch delivers from other sockets than the one we send to.
        socket.set_nonblocking(true)?;
        Ok(PortDevice {
            socket,
            switch: crate::fabric::switch_path(fabric_dir, port),
            stats: DeviceStats::default(),
        })
    }

    /// Waits until a frame is waiting or `timeout` passes (no busy loop).
    pub fn wait_readable(&self, timeout: Duration) {
        wait_fd(self.socket.as_raw_fd(), timeout);
    }

    /// The socket's descriptor (to wait on it without holding the device).
    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Waits until `fd` is readable or `timeout` passes. Sub-millisecond timeouts round up to
/// one millisecond (`poll(2)`'s unit), which is what keeps this from spinning.
pub fn wait_fd(fd: RawFd, timeout: Duration) {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: `fds` is a live array of one pollfd for the duration of the call; a closed
    // descriptor makes poll return POLLNVAL, never touch memory.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
}

/// A received frame.
pub struct RxToken {
    frame: Vec<u8>,
}

/// Permission to send one frame.
pub struct TxToken<'a> {
    device: &'a mut PortDevice,
}

impl phy::Device for PortDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let mut frame = vec![0u8; FRAME_BYTES_MAX + 64];
        match self.socket.recv(&mut frame) {
            Ok(len) => {
                frame.truncate(len);
                self.stats.rx_frames += 1;
                Some((RxToken { frame }, TxToken { device: self }))
            }
            Err(_) => None,
        }
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken { device: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_BYTES_MAX;
        caps
    }
}

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.frame)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = vec![0u8; len];
        let result = f(&mut frame);
        // The switch's socket queues few datagrams (net.unix.max_dgram_qlen, 10 by default)
        // and its thread drains it promptly: on a full queue wait for room (briefly) rather
        // than drop, so tests see the cell's behaviour, not host-side loss. A frame that still
        // does not fit is dropped and counted, as a congested link would, and TCP recovers.
        for _ in 0..TX_RETRIES {
            match self.device.socket.send_to(&frame, &self.device.switch) {
                Ok(_) => {
                    self.device.stats.tx_frames += 1;
                    return result;
                }
                // Poll(POLLOUT) says nothing about an unconnected datagram socket's receiver,
                // so back off with a short sleep.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(TX_BACKOFF),
                Err(_) => break,
            }
        }
        self.device.stats.tx_dropped += 1;
        result
    }
}
