//! A cluster under test: one [`Fabric`] and N [`Node`]s attached to it.
//!
//! Node `i` (1-based) gets id `i`, the MAC `52:54:00:00:HI:LO` of its id (the address the
//! kernel derives from its id, see docs/networking.md), and the `peers` config key naming
//! everyone, so `ping worker-2` works on every node. Three-node clusters are the demo
//! layout: `worker-1`, `worker-2` and `witness` (role witness). Dropping a `Cluster` kills
//! every QEMU (each `Node` does on drop) and then stops the fabric.

use std::path::Path;
use std::time::Duration;

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

/// The `peers` config value for these nodes.
pub fn peers_value(names: &[(u64, String, &'static str)]) -> String {
    names
        .iter()
        .map(|(id, name, _)| format!("{id}:{name}"))
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

/// The specs of a cluster of `count` nodes on `fabric`.
pub fn specs(image: &Path, fabric: &Fabric, count: usize, kvm: bool) -> Vec<NodeSpec> {
    let names = node_names(count);
    let peers = peers_value(&names);
    names
        .iter()
        .map(|(id, name, role)| {
            let mut spec = NodeSpec::worker(*id, image);
            spec.name = name.clone();
            spec.role = role.to_string();
            spec.kvm = kvm;
            spec.config_extra.push(("peers".into(), peers.clone()));
            spec.extra_args = fabric.qemu_args(*id as u32, node_mac(*id));
            spec.extra_args
                .extend(raft_disk_args(&raft_disk(fabric.dir(), *id)));
            spec
        })
        .collect()
}

/// A running cluster.
pub struct Cluster {
    // Field order matters: nodes drop (and die) before the fabric stops.
    pub nodes: Vec<Node>,
    pub fabric: Fabric,
    /// How often each node was restarted (names the restarted node's log directory).
    restarts: std::collections::BTreeMap<u64, u32>,
}

impl Cluster {
    /// Starts the fabric (seeded), then `count` nodes, and waits for every prompt.
    pub fn start(env: &Env, name: &str, count: usize, seed: u64) -> Result<Cluster, HarnessError> {
        assert!(count >= 1, "a cluster has nodes");
        let dir = env.run_dir.join(name);
        // A previous run of this scenario may have left sockets and logs.
        let _ = std::fs::remove_dir_all(&dir);
        let ids: Vec<u32> = (1..=count as u32).collect();
        let fabric = Fabric::start(FabricConfig::new(&dir, &ids, seed))
            .map_err(|e| HarnessError::Check(format!("fabric: {e:?}")))?;
        let mut nodes = Vec::new();
        for spec in specs(&env.image, &fabric, count, env.kvm) {
            nodes.push(Node::start(spec, &dir)?);
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
        }
        Ok(Cluster {
            nodes,
            fabric,
            restarts: std::collections::BTreeMap::new(),
        })
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
        let dir = self.fabric.dir().to_path_buf();
        // The old QEMU must be gone (and its socket unlinked) before the new one binds.
        drop(self.nodes.remove(index));
        let _ = std::fs::remove_file(crate::fabric::node_path(&dir, id as u32));
        let restarts = self.restarts.entry(id).or_insert(0);
        *restarts += 1;
        let mut node = Node::start(spec, &dir.join(format!("restart-{restarts}")))?;
        node.wait_for_prompt(BOOT_TIMEOUT)?;
        self.nodes.insert(index, node);
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
        assert_eq!(peers_value(&names), "1:worker-1;2:worker-2;3:witness");
        assert_eq!(names[2].2, "witness");
        assert_eq!(peers_value(&node_names(2)), "1:worker-1;2:worker-2");
        assert!(node_names(4).iter().all(|(_, _, role)| *role == "worker"));
    }
}
