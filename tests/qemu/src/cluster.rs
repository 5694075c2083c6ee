//! A cluster under test: one [`Fabric`] and N [`Node`]s attached to it.
//!
//! Node `i` (1-based) gets id `i`, the MAC `52:54:00:00:HI:LO` of its id (the address the
//! kernel derives from its id, see docs/networking.md), and the `peers` config key naming
//! everyone, so `ping worker-2` works on every node. Three-node clusters are the demo
//! layout: `worker-1`, `worker-2` and `witness` (role witness). Dropping a `Cluster` kills
//! every QEMU (each `Node` does on drop) and then stops the fabric.
//!
//! Every cluster keeps a journal (`harness.log` in its directory, `timeline::journal`):
//! each node's clock is read once it has booted and again when the cluster is dropped,
//! and signals, restarts and nemesis acts are recorded, so `cargo xtask timeline` can draw
//! the run on one clock.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timeline::journal::{self, Journal};

use crate::certs::ClusterCa;
use crate::fabric::{Fabric, FabricConfig, Mac, Nemesis};
use crate::node::Node;
use crate::qemu::NodeSpec;
use crate::{Env, HarnessError};

/// How long a node may take from QEMU start to its prompt (TCG, shared cores).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Pause after the last prompt before the cluster is handed over.
const SETTLE: Duration = Duration::from_millis(300);

/// The start of the line the kernel logs once its network is up.
pub const NET_UP_LINE: &str = "net: virtio-net at PCI";

/// The MAC the kernel uses for node `id`.
pub fn node_mac(id: u64) -> Mac {
    assert!(id <= 0xffff, "node id {id} does not fit a fabric MAC");
    Mac([0x52, 0x54, 0x00, 0x00, (id >> 8) as u8, id as u8])
}

/// The conventional names: a three-node cluster is two workers and a witness, any other
/// size is all workers.
pub fn node_names(count: usize) -> Vec<(u64, String, &'static str)> {
    (1..=count as u64)
        .map(|id| {
            if count == 3 && id == 3 {
                (id, "witness".to_string(), "witness")
            } else {
                (id, format!("worker-{id}"), "worker")
            }
        })
        .collect()
}

/// The `peers` config value for these nodes, roles included (every node then shows the
/// same role for every member).
pub fn peers_value(names: &[(u64, String, &'static str)]) -> String {
    names
        .iter()
        .map(|(id, name, role)| format!("{id}:{name}:{role}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Bytes of each node's Raft disk.
pub const RAFT_DISK_BYTES: u64 = 2 << 20;

/// Node `id`'s Raft disk: `disk-<id>.img` in the fabric directory, so a restarted node
/// (which logs under `restart-N/`) boots from the same file. Created zero-filled (a blank
/// disk the kernel formats) if absent; an existing image is kept.
pub fn raft_disk(fabric_dir: &Path, id: u64) -> std::path::PathBuf {
    let path = fabric_dir.join(format!("disk-{id}.img"));
    if !path.exists() {
        let file = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        file.set_len(RAFT_DISK_BYTES)
            .unwrap_or_else(|e| panic!("sizing {}: {e}", path.display()));
    }
    path
}

/// How QEMU caches the Raft disk: `writeback` keeps the host page cache but honours the
/// guest's flushes (VIRTIO_BLK_F_FLUSH is offered and each VIRTIO_BLK_T_FLUSH becomes a
/// host `fdatasync`), so an acknowledged Raft write is on the host's disk, and
/// `raft_commit_us` includes a real flush. (`unsafe` would turn flushes into no-ops.)
pub const RAFT_DISK_CACHE: &str = "writeback";

/// The QEMU arguments attaching `disk` as the node's virtio-blk device. The environment
/// variable `XYLEM_RAFT_DISK_CACHE` overrides the cache mode for experiments (say `unsafe`,
/// to compare against flushes that cost nothing); every test and benchmark uses the default.
pub fn raft_disk_args(disk: &Path) -> Vec<String> {
    let cache =
        std::env::var("XYLEM_RAFT_DISK_CACHE").unwrap_or_else(|_| RAFT_DISK_CACHE.to_string());
    vec![
        "-drive".into(),
        format!(
            "file={},if=none,id=raftdisk,format=raw,cache={cache}",
            disk.display()
        ),
        "-device".into(),
        "virtio-blk-pci,drive=raftdisk".into(),
    ]
}

/// Whether the nodes authenticate each other (issue #15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Every node gets a certificate from a fresh cluster CA: mutual TLS, sealed datagrams.
    Sealed,
    /// `trust=off`: no identities, plain datagrams (the unauthenticated build, for
    /// comparisons and for playing a node without identity).
    Off,
}

/// The specs of a cluster of `count` nodes on `fabric`, each with an identity from a new
/// cluster CA (written to the fabric directory).
pub fn specs(image: &Path, fabric: &Fabric, count: usize, kvm: bool) -> Vec<NodeSpec> {
    specs_with(image, fabric, count, kvm, Trust::Sealed)
        .map(|(specs, _)| specs)
        .unwrap_or_else(|e| panic!("making node certificates: {e}"))
}

/// [`specs`] with a choice of [`Trust`]; also returns the CA (to issue more identities).
pub fn specs_with(
    image: &Path,
    fabric: &Fabric,
    count: usize,
    kvm: bool,
    trust: Trust,
) -> Result<(Vec<NodeSpec>, Option<ClusterCa>), String> {
    let names = node_names(count);
    let peers = peers_value(&names);
    let ca = match trust {
        Trust::Sealed => Some(ClusterCa::create(fabric.dir(), "cluster")?),
        Trust::Off => None,
    };
    let mut specs = Vec::new();
    for (id, name, role) in &names {
        let mut spec = NodeSpec::worker(*id, image);
        spec.name = name.clone();
        spec.role = role.to_string();
        spec.kvm = kvm;
        spec.config_extra.push(("peers".into(), peers.clone()));
        match &ca {
            Some(ca) => spec.fw_cfg_files = ca.issue(*id, name)?.fw_cfg(),
            None => spec.config_extra.push(("trust".into(), "off".into())),
        }
        spec.extra_args = fabric.qemu_args(*id as u32, node_mac(*id));
        spec.extra_args
            .extend(raft_disk_args(&raft_disk(fabric.dir(), *id)));
        specs.push(spec);
    }
    Ok((specs, ca))
}

/// Two report periods of the control plane.
const REPORTS_AFTER_SESSIONS: Duration = Duration::from_millis(600);

/// How long the sessions of a booted cluster may take to come up.
pub const SESSIONS_TIMEOUT: Duration = Duration::from_secs(40);

/// Waits until `node`'s `trust` lists session keys for all `count - 1` other nodes.
pub fn wait_session_mesh(node: &mut Node, count: usize) -> Result<(), HarnessError> {
    let deadline = std::time::Instant::now() + SESSIONS_TIMEOUT;
    loop {
        let out = node.command("trust", Duration::from_secs(10))?;
        let keyed = out
            .lines()
            .find_map(|l| l.strip_prefix("keys: "))
            .map_or(0, |rest| {
                rest.split_whitespace().filter(|w| w.contains(':')).count()
            });
        if keyed + 1 >= count {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(HarnessError::Check(format!(
                "{} has sessions with {keyed} of {} peers:\n{out}",
                node.spec.name,
                count - 1
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A running cluster.
pub struct Cluster {
    // Field order matters: nodes drop (and die) before the fabric stops.
    pub nodes: Vec<Node>,
    pub fabric: Fabric,
    journal: Arc<Journal>,
    /// How often each node was restarted (names the restarted node's log directory).
    restarts: std::collections::BTreeMap<u64, u32>,
    /// The cluster CA (None for [`Trust::Off`]).
    pub ca: Option<ClusterCa>,
}

impl Cluster {
    /// Starts the fabric (seeded), then `count` nodes with identities, and waits for every
    /// prompt.
    pub fn start(env: &Env, name: &str, count: usize, seed: u64) -> Result<Cluster, HarnessError> {
        Cluster::start_with(env, name, count, seed, Trust::Sealed)
    }

    /// As [`Cluster::start`], with `extra_ports` more fabric ports that no node uses (for a
    /// host endpoint, `crate::hostnet`).
    pub fn start_with_ports(
        env: &Env,
        name: &str,
        count: usize,
        seed: u64,
        extra_ports: &[u32],
    ) -> Result<Cluster, HarnessError> {
        Cluster::start_full(env, name, count, seed, Trust::Sealed, 0, extra_ports)
    }

    /// [`Cluster::start`] with a choice of [`Trust`].
    pub fn start_with(
        env: &Env,
        name: &str,
        count: usize,
        seed: u64,
        trust: Trust,
    ) -> Result<Cluster, HarnessError> {
        Cluster::start_with_spare_ports(env, name, count, seed, trust, 0)
    }

    /// [`Cluster::start_with`], plus `spare` fabric ports (ids after the nodes') for nodes a
    /// scenario starts itself, e.g. a rogue.
    pub fn start_with_spare_ports(
        env: &Env,
        name: &str,
        count: usize,
        seed: u64,
        trust: Trust,
        spare: usize,
    ) -> Result<Cluster, HarnessError> {
        Cluster::start_full(env, name, count, seed, trust, spare, &[])
    }

    /// Every way of starting a cluster: `count` nodes, `spare` node ports for nodes the caller
    /// starts itself, and `extra_ports` for host endpoints.
    fn start_full(
        env: &Env,
        name: &str,
        count: usize,
        seed: u64,
        trust: Trust,
        spare: usize,
        extra_ports: &[u32],
    ) -> Result<Cluster, HarnessError> {
        assert!(count >= 1, "a cluster has nodes");
        let dir = env.run_dir.join(name);
        // A previous run of this scenario may have left sockets and logs.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::Io(format!("creating {}", dir.display()), e))?;
        let journal = Arc::new(
            Journal::create(&dir)
                .map_err(|e| HarnessError::Io("creating the journal".into(), e))?,
        );
        let mut ids: Vec<u32> = (1..=(count + spare) as u32).collect();
        ids.extend_from_slice(extra_ports);
        let mut config = FabricConfig::new(&dir, &ids, seed);
        config.journal = Some(Arc::clone(&journal));
        let fabric =
            Fabric::start(config).map_err(|e| HarnessError::Check(format!("fabric: {e:?}")))?;
        let (specs, ca) = specs_with(&env.image, &fabric, count, env.kvm, trust)
            .map_err(|e| HarnessError::Check(format!("certificates: {e}")))?;
        let mut nodes = Vec::new();
        // Only the first `count` ports are nodes; the others belong to the caller.
        for spec in specs {
            let mut node = Node::start(spec, &dir)?;
            node.set_journal(Arc::clone(&journal), 0);
            nodes.push(node);
        }
        for node in &mut nodes {
            // The network comes up (and says so) before the shell's first prompt.
            node.expect(NET_UP_LINE, BOOT_TIMEOUT)?;
            node.wait_for_prompt(BOOT_TIMEOUT)?;
        }
        // Other subsystems may log a line just after the prompt; let it come, then take
        // it with a no-op command so it never lands inside a scenario's first output.
        std::thread::sleep(SETTLE);
        for node in &mut nodes {
            node.command("echo ready", BOOT_TIMEOUT)?;
            node.clock_sample()?;
        }
        if trust == Trust::Sealed {
            // Until a node holds a session with a peer, nothing it sends reaches that peer
            // (not even its status report): a cluster is up when every pair has one.
            for node in &mut nodes {
                wait_session_mesh(node, count)?;
            }
            // And let the first status reports (every 250 ms) cross the new sessions, so
            // the leader knows every worker before a scenario places cells.
            std::thread::sleep(REPORTS_AFTER_SESSIONS);
        }
        Ok(Cluster {
            nodes,
            fabric,
            journal,
            restarts: std::collections::BTreeMap::new(),
            ca,
        })
    }

    /// The run's journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Reads the clock of every node that can answer (not killed, not stopped); the
    /// readings go to the journal and sharpen the clock fit of timelines.
    pub fn sync_clocks(&mut self, timeout: Duration) {
        for node in &mut self.nodes {
            if node.is_responsive() {
                // A node that cannot answer now is simply not sampled.
                let _ = node.clock_sample_within(timeout);
            }
        }
    }

    /// The node with id `id` (1-based).
    pub fn node(&mut self, id: u64) -> &mut Node {
        let index = usize::try_from(id).expect("small id") - 1;
        &mut self.nodes[index]
    }

    /// The fault injector.
    pub fn nemesis(&self) -> Nemesis {
        self.fabric.nemesis()
    }

    /// Replaces node `id` (after it was killed) with a fresh QEMU of the same spec, and waits
    /// for its prompt. Its disk, if any, is kept.
    pub fn restart(&mut self, id: u64) -> Result<(), HarnessError> {
        let index = usize::try_from(id).expect("small id") - 1;
        let spec = self.nodes[index].spec.clone();
        self.restart_as(id, spec)
    }

    /// Replaces node `id` (after it was killed) with a QEMU of `spec` (e.g. the same node
    /// with another identity), and waits for its prompt. Its disk, if any, is kept.
    pub fn restart_as(&mut self, id: u64, spec: NodeSpec) -> Result<(), HarnessError> {
        let index = usize::try_from(id).expect("small id") - 1;
        let dir = self.fabric.dir().to_path_buf();
        // The old QEMU must be gone (and its socket unlinked) before the new one binds.
        drop(self.nodes.remove(index));
        let _ = std::fs::remove_file(crate::fabric::node_path(&dir, id as u32));
        let restarts = self.restarts.entry(id).or_insert(0);
        *restarts += 1;
        let incarnation = *restarts;
        self.journal.record(
            Instant::now(),
            journal::kind::RESTART,
            &[("target", &spec.name), ("incarnation", &incarnation)],
        );
        let mut node = Node::start(spec, &dir.join(format!("restart-{incarnation}")))?;
        node.set_journal(Arc::clone(&self.journal), incarnation);
        let booted = node.wait_for_prompt(BOOT_TIMEOUT);
        self.nodes.insert(index, node);
        booted?;
        self.nodes[index].clock_sample()?;
        Ok(())
    }

    /// Zeroes node `id`'s Raft disk (after it was killed): it restarts as a replaced machine
    /// with a blank disk, which the kernel formats.
    pub fn wipe_disk(&self, id: u64) -> Result<(), HarnessError> {
        let path = raft_disk(self.fabric.dir(), id);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| HarnessError::Io(format!("opening {}", path.display()), e))?;
        file.set_len(0)
            .and_then(|()| file.set_len(RAFT_DISK_BYTES))
            .map_err(|e| HarnessError::Io(format!("wiping {}", path.display()), e))
    }

    /// Every node's id and name.
    pub fn members(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .map(|n| (n.spec.id, n.spec.name.clone()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A last reading of every clock, so timelines can fit each clock's rate over the
        // whole run (the boot readings alone span too little time).
        self.sync_clocks(crate::node::FINAL_SAMPLE_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_the_kernel_scheme() {
        assert_eq!(node_mac(1).0, [0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!(node_mac(0x1234).0, [0x52, 0x54, 0, 0, 0x12, 0x34]);
        assert_ne!(node_mac(1), node_mac(2));
        assert!(!node_mac(255).is_group());
    }

    #[test]
    fn raft_disk_is_created_blank_and_then_kept() {
        let dir = std::env::temp_dir().join(format!("xylem-raft-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = raft_disk(&dir, 7);
        assert_eq!(path, dir.join("disk-7.img"));
        let blank = std::fs::read(&path).unwrap();
        assert_eq!(blank.len() as u64, RAFT_DISK_BYTES);
        assert!(blank.iter().all(|&b| b == 0));
        std::fs::write(&path, b"kept").unwrap();
        assert_eq!(
            std::fs::read(raft_disk(&dir, 7)).unwrap(),
            b"kept",
            "an existing image is not recreated"
        );
        let args = raft_disk_args(&path);
        assert!(
            args[1].starts_with(&format!("file={},", path.display()))
                && args[3].starts_with("virtio-blk-pci")
        );
        assert!(
            args[1].contains("cache=writeback") && !args[1].contains("unsafe"),
            "the Raft disk must honour flushes: {}",
            args[1]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn three_nodes_are_two_workers_and_a_witness() {
        let names = node_names(3);
        assert_eq!(
            peers_value(&names),
            "1:worker-1:worker;2:worker-2:worker;3:witness:witness"
        );
        assert_eq!(names[2].2, "witness");
        assert_eq!(
            peers_value(&node_names(2)),
            "1:worker-1:worker;2:worker-2:worker"
        );
        assert!(node_names(4).iter().all(|(_, _, role)| *role == "worker"));
    }
}
