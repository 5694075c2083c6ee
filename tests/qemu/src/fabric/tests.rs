//! Fabric tests over real unix datagram sockets: the test plays the QEMU nodes, binding
//! `node<N>.sock` and sending frames to `switch<N>.sock`. Every wait is bounded by a timeout
//! and every loop by a count.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("xylem-fabric-{name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A fake QEMU node: bound at `node<N>.sock`, sending to `switch<N>.sock`.
struct Node {
    id: NodeId,
    sock: UnixDatagram,
    switch: PathBuf,
}

impl Node {
    fn attach(dir: &Path, id: NodeId) -> Node {
        let path = node_path(dir, id);
        let _ = fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("bind node socket");
        Node {
            id,
            sock,
            switch: switch_path(dir, id),
        }
    }

    fn mac(&self) -> Mac {
        Mac::for_node(self.id)
    }

    fn send(&self, dst: Mac, seq: u32) {
        let frame = frame(dst, self.mac(), seq);
        self.sock
            .send_to(&frame, &self.switch)
            .expect("send to switch");
    }

    /// The next frame, or `None` after `timeout_ms` of silence.
    fn recv(&self, timeout_ms: u64) -> Option<Vec<u8>> {
        self.sock
            .set_read_timeout(Some(Duration::from_millis(timeout_ms)))
            .unwrap();
        let mut buf = vec![0u8; 2048];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    /// Frames until `quiet_ms` of silence, at most `frames_max`.
    fn drain(&self, quiet_ms: u64, frames_max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < frames_max {
            match self.recv(quiet_ms) {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }
}

/// An Ethernet frame carrying a sequence number after a test EtherType (0x88b5, local exp.).
fn frame(dst: Mac, src: Mac, seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(60, 0);
    f
}

fn seq_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[14..18].try_into().unwrap())
}

/// Tests that count frames must never lose one to a full backlog while the (test) node is
/// momentarily not reading, so they run with a backlog larger than any burst they send.
const TEST_BACKLOG_FRAMES: usize = 20_000;

fn start(name: &str, nodes: &[NodeId], seed: u64) -> (Fabric, Vec<Node>) {
    let dir = temp_dir(name);
    let mut config = FabricConfig::new(&dir, nodes, seed);
    config.backlog_frames_max = TEST_BACKLOG_FRAMES;
    let fabric = Fabric::start(config).expect("start fabric");
    let attached = nodes.iter().map(|&id| Node::attach(&dir, id)).collect();
    (fabric, attached)
}

fn finish(fabric: Fabric) -> Stats {
    let dir = fabric.dir().to_path_buf();
    let stats = fabric.shutdown();
    let _ = fs::remove_dir_all(dir);
    stats
}

const SILENCE_MS: u64 = 150;
const WAIT_MS: u64 = 2_000;

#[test]
fn broadcast_floods_then_unicast_after_learning() {
    let (fabric, n) = start("unicast", &[1, 2, 3], 1);
    n[0].send(Mac::BROADCAST, 10);
    assert_eq!(
        seq_of(&n[1].recv(WAIT_MS).expect("2 gets the broadcast")),
        10
    );
    assert_eq!(
        seq_of(&n[2].recv(WAIT_MS).expect("3 gets the broadcast")),
        10
    );
    assert!(n[0].recv(SILENCE_MS).is_none(), "no echo to the sender");
    // Node 1's MAC is learned: a unicast to it reaches only node 1.
    n[1].send(n[0].mac(), 11);
    assert_eq!(seq_of(&n[0].recv(WAIT_MS).expect("1 gets the unicast")), 11);
    assert!(
        n[2].recv(SILENCE_MS).is_none(),
        "3 must not see a unicast to 1"
    );
    // Node 2 is learned now too.
    n[0].send(n[1].mac(), 12);
    assert_eq!(seq_of(&n[1].recv(WAIT_MS).unwrap()), 12);
    assert!(n[2].recv(SILENCE_MS).is_none());
    let s = finish(fabric);
    assert_eq!(
        (
            s.link(1, 2).forwarded,
            s.link(1, 3).forwarded,
            s.link(2, 1).forwarded
        ),
        (2, 1, 1)
    );
    assert_eq!(s.mac_table.len(), 2);
}

#[test]
fn unknown_unicast_floods_and_runts_are_dropped() {
    let (fabric, n) = start("flood", &[1, 2, 3], 1);
    n[0].send(Mac::for_node(99), 5);
    assert!(n[1].recv(WAIT_MS).is_some() && n[2].recv(WAIT_MS).is_some());
    n[0].sock.send_to(&[1, 2, 3], &n[0].switch).unwrap();
    assert!(n[1].recv(SILENCE_MS).is_none());
    let s = finish(fabric);
    assert_eq!(s.port(1).rx_frames, 2);
    assert_eq!(s.port(1).rx_runts, 1);
}

#[test]
fn partition_blocks_and_heal_restores() {
    let (fabric, n) = start("partition", &[1, 2, 3], 1);
    let nemesis = fabric.nemesis();
    nemesis.partition(&[&[1], &[2, 3]]);
    n[0].send(Mac::BROADCAST, 1);
    n[1].send(Mac::BROADCAST, 2);
    assert_eq!(
        seq_of(&n[2].recv(WAIT_MS).expect("2 and 3 share a side")),
        2
    );
    assert!(n[0].recv(SILENCE_MS).is_none() && n[1].recv(SILENCE_MS).is_none());
    assert!(n[2].recv(SILENCE_MS).is_none(), "nothing from 1 crosses");
    nemesis.heal();
    n[0].send(Mac::BROADCAST, 3);
    assert_eq!(seq_of(&n[1].recv(WAIT_MS).expect("healed")), 3);
    assert_eq!(seq_of(&n[2].recv(WAIT_MS).expect("healed")), 3);
    nemesis.isolate(3);
    n[1].send(Mac::BROADCAST, 4);
    assert_eq!(seq_of(&n[0].recv(WAIT_MS).unwrap()), 4);
    assert!(n[2].recv(SILENCE_MS).is_none(), "3 is isolated");
    nemesis.heal();
    nemesis.block(1, 2); // asymmetric: 1 cannot reach 2, 2 still reaches 1
    n[0].send(Mac::BROADCAST, 5);
    n[1].send(Mac::BROADCAST, 6);
    assert_eq!(seq_of(&n[0].recv(WAIT_MS).unwrap()), 6);
    let mut at3: Vec<u32> = n[2]
        .drain(SILENCE_MS, 4)
        .iter()
        .map(|f| seq_of(f))
        .collect();
    at3.sort_unstable(); // two ports, two receiver threads: arrival order is not defined
    assert_eq!(at3, [5, 6]);
    assert!(n[1].recv(SILENCE_MS).is_none(), "1->2 is blocked");
    let s = finish(fabric);
    assert_eq!(s.link(1, 2).dropped_partition, 2);
    assert_eq!(s.link(1, 3).dropped_partition, 1);
    assert_eq!(s.link(2, 1).dropped_partition, 1);
    assert_eq!(s.link(2, 3).dropped_partition, 1);
    assert_eq!(s.link(2, 3).forwarded, 2);
}

/// Sends `frames` broadcasts from node 1 to node 2 at `loss_pct` and returns the sequence
/// numbers node 2 received, in order, plus the final counters.
fn lossy_run(seed: u64, loss_pct: f64, frames: u32) -> (Vec<u32>, Stats) {
    let dir = temp_dir("loss");
    let mut config = FabricConfig::new(&dir, &[1, 2], seed);
    config.backlog_frames_max = frames as usize; // never overflow: the pattern is the point
    let fabric = Fabric::start(config).unwrap();
    let (a, b) = (Node::attach(&dir, 1), Node::attach(&dir, 2));
    fabric.nemesis().set_loss_pct(Link::All, loss_pct);
    let receiver = thread::spawn(move || {
        b.drain(500, frames as usize + 1)
            .iter()
            .map(|f| seq_of(f))
            .collect::<Vec<u32>>()
    });
    for seq in 0..frames {
        a.send(Mac::BROADCAST, seq);
    }
    let got = receiver.join().unwrap();
    (got, finish(fabric))
}

#[test]
fn loss_rate_is_close_to_target_and_repeatable() {
    let frames = 10_000;
    let (got, s) = lossy_run(42, 25.0, frames);
    let l = s.link(1, 2);
    assert_eq!(
        l.forwarded + l.dropped_loss,
        u64::from(frames),
        "{}",
        s.report()
    );
    assert_eq!(
        l.dropped_overflow + l.dropped_unreachable,
        0,
        "{}",
        s.report()
    );
    assert_eq!(got.len() as u64, l.forwarded);
    assert!(
        (2_300..=2_700).contains(&l.dropped_loss),
        "lost {} at 25%",
        l.dropped_loss
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "no delay: order kept");
    let (again, _) = lossy_run(42, 25.0, frames);
    assert_eq!(got, again, "same seed => same drop pattern");
    let (other, _) = lossy_run(43, 25.0, frames);
    assert_ne!(got, other, "another seed => another pattern");
}

#[test]
fn delay_keeps_order_and_bounds() {
    let (fabric, n) = start("delay", &[1, 2], 3);
    fabric
        .nemesis()
        .set_delay_ms(Link::Directed { from: 1, to: 2 }, 200, 0);
    let sent_at = Instant::now();
    for seq in 0..20 {
        n[0].send(Mac::BROADCAST, seq);
    }
    let first = n[1].recv(WAIT_MS).expect("delayed frame");
    let waited_ms = sent_at.elapsed().as_millis();
    assert!(
        (200..1_500).contains(&waited_ms),
        "first frame after {waited_ms} ms"
    );
    let mut seqs = vec![seq_of(&first)];
    seqs.extend(n[1].drain(SILENCE_MS, 40).iter().map(|f| seq_of(f)));
    assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "fixed delay keeps order");
    // The reverse link has no delay.
    let t = Instant::now();
    n[1].send(Mac::BROADCAST, 99);
    assert_eq!(seq_of(&n[0].recv(WAIT_MS).unwrap()), 99);
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "reverse link is not delayed"
    );
    let s = finish(fabric);
    assert_eq!(s.link(1, 2).delayed, 20);
    assert_eq!(s.link(2, 1).delayed, 0);
}

#[test]
fn jitter_reorders_within_bounds() {
    let (fabric, n) = start("jitter", &[1, 2], 4);
    fabric.nemesis().set_delay_ms(Link::All, 80, 40);
    let t0 = Instant::now();
    for seq in 0..200 {
        n[0].send(Mac::BROADCAST, seq);
    }
    let mut seqs = Vec::new();
    let mut arrivals_ms = Vec::new();
    while seqs.len() < 200 {
        let Some(f) = n[1].recv(WAIT_MS) else { break };
        arrivals_ms.push(t0.elapsed().as_millis());
        seqs.push(seq_of(&f));
    }
    let send_ms = t0.elapsed().as_millis(); // an upper bound for when the last one was sent
    assert_eq!(seqs.len(), 200);
    assert!(
        arrivals_ms[0] >= 40,
        "earliest due time is 80-40 ms, got {}",
        arrivals_ms[0]
    );
    assert!(
        *arrivals_ms.last().unwrap() <= 120 + send_ms + 300,
        "latest is 80+40 ms after send (+slack)"
    );
    assert!(
        seqs.windows(2).any(|w| w[0] > w[1]),
        "40 ms jitter on 200 frames must reorder some"
    );
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..200).collect::<Vec<_>>(),
        "nothing lost or doubled"
    );
    assert_eq!(finish(fabric).link(1, 2).delayed, 200);
}

#[test]
fn duplication_doubles_frames() {
    let (fabric, n) = start("dup", &[1, 2], 5);
    let nemesis = fabric.nemesis();
    nemesis.set_duplicate_pct(Link::All, 100.0);
    for seq in 0..10 {
        n[0].send(Mac::BROADCAST, seq);
    }
    let seqs: Vec<u32> = n[1]
        .drain(SILENCE_MS, 40)
        .iter()
        .map(|f| seq_of(f))
        .collect();
    assert_eq!(seqs, (0..10).flat_map(|s| [s, s]).collect::<Vec<_>>());
    nemesis.set_duplicate_pct(Link::All, 20.0);
    let receiver = {
        let b = Node {
            id: 2,
            sock: n[1].sock.try_clone().unwrap(),
            switch: n[1].switch.clone(),
        };
        thread::spawn(move || b.drain(300, 5_000).len())
    };
    for seq in 0..2_000 {
        n[0].send(Mac::BROADCAST, seq);
    }
    let got = receiver.join().unwrap();
    let s = finish(fabric);
    let l = s.link(1, 2);
    assert_eq!(l.dropped_overflow, 0, "{}", s.report());
    assert_eq!(l.duplicated, got as u64 - 2_000 + 10, "{}", s.report());
    assert!(
        (300..=500).contains(&(l.duplicated - 10)),
        "dup {} at 20%",
        l.duplicated - 10
    );
    assert_eq!(l.forwarded, got as u64 + 20);
}

#[test]
fn garbage_is_injected_counted_and_stoppable() {
    let (fabric, n) = start("garbage", &[1, 2, 3], 6);
    let nemesis = fabric.nemesis();
    n[1].send(Mac::BROADCAST, 0); // teach the fabric node 2's MAC so some garbage aims at it
    assert!(n[0].recv(WAIT_MS).is_some() && n[2].recv(WAIT_MS).is_some());
    nemesis.inject_garbage(Target::Node(2), 500, Duration::from_millis(200));
    let got = n[1].drain(300, 1_000);
    assert_eq!(got.len(), 100, "500/s for 200 ms");
    assert!(
        got.iter().any(|f| f.len() >= 6 && f[0..6] == [0xff; 6]),
        "broadcast-looking garbage"
    );
    assert!(
        got.iter().any(|f| f.len() >= 6 && f[0..6] == n[1].mac().0),
        "garbage aimed at the NIC"
    );
    assert!(
        n[0].recv(SILENCE_MS).is_none() && n[2].recv(SILENCE_MS).is_none(),
        "only node 2"
    );
    nemesis.inject_garbage(Target::All, 100, Duration::from_secs(60));
    let early = n[0].drain(SILENCE_MS, 10).len();
    nemesis.stop_garbage();
    thread::sleep(Duration::from_millis(50));
    for node in &n {
        node.drain(SILENCE_MS, 1_000);
    }
    assert!(
        n[0].recv(SILENCE_MS).is_none(),
        "stop_garbage cancels the job"
    );
    let s = finish(fabric);
    assert!(early >= 1);
    assert_eq!(s.port(2).garbage_dropped, 0);
    assert!(
        s.port(2).garbage_injected >= 101 && s.port(1).garbage_injected >= 1,
        "{}",
        s.report()
    );
    assert!(s.port(1).garbage_injected < 100, "the 60 s job was stopped");
    assert_eq!(s.total().forwarded, 2, "garbage is not link traffic");
}

#[test]
fn a_stalled_node_overflows_only_its_own_backlog() {
    let dir = temp_dir("stalled");
    let mut config = FabricConfig::new(&dir, &[1, 2, 3], 11);
    config.backlog_frames_max = 5;
    let fabric = Fabric::start(config).unwrap();
    let n = [
        Node::attach(&dir, 1),
        Node::attach(&dir, 2),
        Node::attach(&dir, 3),
    ];
    let b = Node {
        id: 2,
        sock: n[1].sock.try_clone().unwrap(),
        switch: n[1].switch.clone(),
    };
    let receiver = thread::spawn(move || b.drain(300, 100).len());
    for seq in 0..40 {
        n[0].send(Mac::BROADCAST, seq);
        thread::sleep(Duration::from_millis(1)); // node 2 keeps up; node 3 never reads
    }
    assert_eq!(
        receiver.join().unwrap(),
        40,
        "a stalled neighbour must not cost node 2 frames"
    );
    let s = finish(fabric);
    let stalled = s.link(1, 3);
    // The kernel queues max_dgram_qlen (10 by default) datagrams, the backlog 5 more.
    assert!(
        stalled.forwarded <= 20 && stalled.dropped_overflow >= 20,
        "{}",
        s.report()
    );
    assert_eq!(s.link(1, 2).dropped_overflow, 0);
}

#[test]
fn absent_node_is_counted_unreachable() {
    let dir = temp_dir("absent");
    let fabric = Fabric::start(FabricConfig::new(&dir, &[1, 2, 3], 7)).unwrap();
    let (a, b) = (Node::attach(&dir, 1), Node::attach(&dir, 2)); // node 3 never starts
    a.send(Mac::BROADCAST, 1);
    assert!(b.recv(WAIT_MS).is_some());
    let s = finish(fabric);
    assert_eq!(s.link(1, 3).dropped_unreachable, 1);
    assert_eq!(s.link(1, 2).forwarded, 1);
}

#[test]
fn shutdown_is_prompt_and_unlinks_sockets() {
    let dir = temp_dir("shutdown");
    let fabric = Fabric::start(FabricConfig::new(&dir, &[1, 2], 8)).unwrap();
    let n = [Node::attach(&dir, 1), Node::attach(&dir, 2)];
    let nemesis = fabric.nemesis();
    nemesis.set_delay_ms(Link::All, 10_000, 0); // frames still queued at shutdown
    nemesis.inject_garbage(Target::All, 10, Duration::from_secs(600));
    n[0].send(Mac::BROADCAST, 1);
    thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    drop(fabric);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(500), "shutdown took {took:?}");
    assert!(!switch_path(&dir, 1).exists() && !switch_path(&dir, 2).exists());
    assert!(
        n[0].sock.send_to(&[0; 60], switch_path(&dir, 1)).is_err(),
        "nobody listens"
    );
    // The handle outlives the fabric harmlessly.
    nemesis.heal();
    assert_eq!(nemesis.stats().link(1, 2).delayed, 1);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn stale_socket_is_replaced_and_bad_configs_rejected() {
    let dir = temp_dir("config");
    fs::write(switch_path(&dir, 1), b"stale").unwrap();
    let fabric = Fabric::start(FabricConfig::new(&dir, &[1], 9)).expect("replaces a stale file");
    drop(fabric);
    assert!(matches!(
        Fabric::start(FabricConfig::new(&dir, &[], 9)),
        Err(FabricError::NoNodes)
    ));
    assert!(matches!(
        Fabric::start(FabricConfig::new(&dir, &[1, 1], 9)),
        Err(FabricError::DuplicateNode(1))
    ));
    let mut config = FabricConfig::new(&dir, &[1, 2], 9);
    config.capture_path = Some(dir.join("missing").join("run.pcap"));
    assert!(matches!(
        Fabric::start(config),
        Err(FabricError::Io {
            what: "create capture",
            ..
        })
    ));
    assert!(
        !switch_path(&dir, 1).exists(),
        "a failed start leaves no socket behind"
    );
    let long = dir.join("x".repeat(120));
    assert!(matches!(
        Fabric::start(FabricConfig::new(long, &[1], 9)),
        Err(FabricError::PathTooLong(_))
    ));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn capture_records_every_frame_entering() {
    let dir = temp_dir("capture");
    let mut config = FabricConfig::new(&dir, &[1, 2], 10);
    config.capture_path = Some(dir.join("run.pcap"));
    let fabric = Fabric::start(config).unwrap();
    let n = [Node::attach(&dir, 1), Node::attach(&dir, 2)];
    for seq in 0..5 {
        n[0].send(Mac::BROADCAST, seq);
    }
    assert_eq!(n[1].drain(SILENCE_MS, 10).len(), 5);
    fabric
        .nemesis()
        .inject_garbage(Target::Node(1), 1_000, Duration::from_millis(3));
    assert_eq!(n[0].drain(SILENCE_MS, 10).len(), 3);
    drop(fabric);
    let frames = read_pcap_frames(&fs::read(dir.join("run.pcap")).unwrap()).expect("valid pcap");
    assert_eq!(frames.len(), 8);
    assert_eq!(frames[0], frame(Mac::BROADCAST, Mac::for_node(1), 0));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn qemu_args_name_both_sockets() {
    let args = qemu_args(Path::new("/run/x"), 2, Mac::for_node(2));
    assert_eq!(args[0], "-netdev");
    assert!(
        args[1].contains("local.path=/run/x/node2.sock")
            && args[1].contains("remote.path=/run/x/switch2.sock")
    );
    assert_eq!(
        args[3],
        "virtio-net-pci,netdev=fabric,mac=52:54:00:00:00:02"
    );
}

/// Kills and reaps a QEMU child however the test ends.
struct QemuGuard(std::process::Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const QEMU: &str = "qemu-system-x86_64";
const QEMU_WAIT_MS: u64 = 60_000;

/// End to end with real QEMU: two diskless nodes whose firmware (the iPXE option ROM of
/// virtio-net) broadcasts DHCP requests. Each node's frames must reach the other QEMU, as
/// QEMU's own filter-dump of the receiving netdev shows, and garbage must not kill a node.
/// Needs `qemu-system-x86_64` on PATH (`cargo xtask test` installs it first); without it
/// the test fails, saying so.
#[test]
fn real_qemu_nodes_exchange_frames() {
    assert!(
        crate::qemu::available(),
        "{QEMU} is not installed: run the tests through `cargo xtask test`, which installs it"
    );
    let dir = temp_dir("qemu");
    let fabric = Fabric::start(FabricConfig::new(&dir, &[1, 2], 12)).unwrap();
    let mut guards = Vec::new();
    for id in [1, 2] {
        let child = std::process::Command::new(QEMU)
            .args([
                "-nographic",
                "-nodefaults",
                "-m",
                "64",
                "-boot",
                "n",
                "-serial",
                "none",
            ])
            .args(["-monitor", "none"])
            .args(fabric.qemu_args(id, Mac::for_node(id)))
            .arg("-object")
            .arg(format!(
                "filter-dump,id=dump,netdev=fabric,file={}/qemu{id}.pcap",
                dir.display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn qemu");
        guards.push(QemuGuard(child));
    }
    let deadline = Instant::now() + Duration::from_millis(QEMU_WAIT_MS);
    while Instant::now() < deadline {
        let s = fabric.stats();
        if s.link(1, 2).forwarded >= 1 && s.link(2, 1).forwarded >= 1 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    fabric
        .nemesis()
        .inject_garbage(Target::Node(2), 200, Duration::from_millis(250));
    thread::sleep(Duration::from_millis(600));
    for g in guards.iter_mut() {
        assert!(g.0.try_wait().unwrap().is_none(), "QEMU died (garbage?)");
    }
    drop(guards);
    let s = fabric.shutdown();
    eprintln!("{}", s.report());
    assert!(
        s.link(1, 2).forwarded >= 1 && s.link(2, 1).forwarded >= 1,
        "{}",
        s.report()
    );
    let seen_by_2 = read_pcap_frames(&fs::read(dir.join("qemu2.pcap")).unwrap()).unwrap();
    let from_1 = seen_by_2
        .iter()
        .filter(|f| f.len() >= 14 && Mac::src_of(f) == Mac::for_node(1));
    assert!(
        from_1.count() >= 1,
        "QEMU 2 never received a frame from node 1"
    );
    assert_eq!(
        s.port(2).garbage_injected,
        50,
        "200/s for 250 ms: {}",
        s.report()
    );
    let _ = fs::remove_dir_all(dir);
}
