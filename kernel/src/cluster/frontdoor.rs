//! The front door's control: from the committed address table to what this node answers
//! for (docs/front-door.md).
//!
//! - On the leader, after placement: [`owner_commands`] runs `xylem::frontdoor::plan_owners`
//!   over SWIM's view and proposes `SetOwner`s in the same round as the cell moves, so an
//!   address moves with the first plan after its owner's `node_down`.
//! - On every node, after every reconcile (every 100 ms, and at once on a commit or a
//!   membership verdict): [`plan`] turns the table into a `netstack::frontdoor::Plan` —
//!   the addresses committed to this node, only while it may act (quorum), with the nodes
//!   running a replica as proxy backends — and hands it to the `net` task.

use alloc::string::String;
use alloc::vec::Vec;
use membership::swim::MemberState;
use xylem::command::Command;
use xylem::desired::DesiredState;
use xylem::frontdoor::{self as policy, Candidate, Liveness};
use xylem::{NodeId, NodeRole};

use crate::netstack::frontdoor::{Owned, Plan};

/// SWIM's view of every member, read before taking the control plane's lock.
pub fn liveness(ids: &[NodeId]) -> Vec<(NodeId, Liveness)> {
    ids.iter()
        .map(|&id| {
            let l = match super::membership::state_of(id) {
                Some(MemberState::Alive) => Liveness::Alive,
                Some(MemberState::Suspect) => Liveness::Suspect,
                _ => Liveness::Down,
            };
            (id, l)
        })
        .collect()
}

/// The leader's `SetOwner` commands for this round, numbered from `next_epoch`.
pub fn owner_commands(
    desired: &DesiredState,
    members: &[(NodeId, Liveness, NodeRole)],
    next_epoch: u64,
) -> Vec<Command> {
    let candidates: Vec<Candidate> = members
        .iter()
        .map(|&(id, liveness, role)| Candidate {
            id,
            role,
            liveness,
            draining: desired.is_draining(id),
        })
        .collect();
    let replicas = |service: &str| -> Vec<NodeId> {
        desired
            .assignments_of(service)
            .map(|(_, a)| a.node)
            .collect()
    };
    policy::plan_owners(desired.addresses(), &candidates, replicas, next_epoch)
        .into_iter()
        .map(|c| Command::SetOwner {
            service: c.service,
            node: c.node,
            epoch: c.epoch,
        })
        .collect()
}

/// What this node's `net` task should do now. `may_answer` is the quorum check (and the
/// freshness of the leader's word); `local_running(service)` whether a cell of the service
/// runs here; `live` SWIM's view.
pub fn plan(
    desired: &DesiredState,
    me: NodeId,
    may_answer: bool,
    local_running: impl Fn(&str) -> bool,
    live: &[(NodeId, Liveness)],
) -> Plan {
    let liveness = |id: NodeId| {
        live.iter()
            .find(|(n, _)| *n == id)
            .map_or(Liveness::Down, |(_, l)| *l)
    };
    let addresses = desired.addresses();
    let owned = policy::answering(me, may_answer, addresses)
        .into_iter()
        .filter_map(|a| {
            let (service, _) = addresses.by_index(policy::vip_index(a.ip)?)?;
            // Replicas on other nodes that SWIM has not declared down; alive ones first.
            let mut backends: Vec<(bool, NodeId)> = desired
                .assignments_of(service)
                .map(|(_, asg)| asg.node)
                .filter(|&n| n != me && liveness(n) != Liveness::Down)
                .map(|n| (liveness(n) != Liveness::Alive, n))
                .collect();
            backends.sort_unstable();
            backends.dedup();
            Some(Owned {
                service: String::from(service),
                ip: a.ip,
                port: a.port,
                epoch: a.epoch,
                local: local_running(service),
                backends: backends.into_iter().map(|(_, n)| n).collect(),
            })
        })
        .collect();
    let names = addresses
        .iter()
        .map(|(s, a)| (String::from(s), a.ip()))
        .collect();
    let service_ports = addresses.iter().map(|(_, a)| a.port).collect();
    Plan {
        owned,
        names,
        service_ports,
    }
}
