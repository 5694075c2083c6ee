//! The front door's control: from the committed address table to what this node answers
//! for (docs/front-door.md).
//!
//! - On the leader, `xylem::node::ControlNode` plans owners (`xylem::frontdoor::plan_owners`)
//!   in the same round as the cell moves, so an address moves with the first plan after its
//!   owner's `node_down`.
//! - On every node, after every input the control plane handles (ticks every 10 ms,
//!   commits, membership verdicts): [`plan`] turns the table into a `netstack::frontdoor::Plan` —
//!   the addresses committed to this node, only while it may act (quorum, or within
//!   `xylem::frontdoor::ANSWER_GRACE_MS` after it), with the nodes running a replica as
//!   proxy backends — and hands it to the `net` task.

use alloc::string::String;
use alloc::vec::Vec;
use xylem::frontdoor as policy;
use xylem::node::{ControlNode, LocalCellRow, Observed};
use xylem::status::MemberState;
use xylem::{CellState, NodeId};

use crate::netstack::frontdoor::{Owned, Plan};

/// What this node's `net` task should do now: the addresses `ControlNode::answering`
/// gives it (committed to it, with quorum or within its grace after it), with the nodes
/// running a replica as proxy backends (SWIM not declaring them down; only the alive ones
/// while any is) and whether a replica runs here (`cells`: the node's cell table, when
/// read for this input).
pub fn plan(control: &ControlNode, obs: &Observed, cells: Option<&[LocalCellRow]>) -> Plan {
    let me = control.id();
    let desired = control.desired();
    let addresses = desired.addresses();
    let liveness = |id: NodeId| match (id == me, obs.members.get(&id)) {
        (true, _) | (_, Some(MemberState::Alive)) => 0u8,
        (_, Some(MemberState::Suspect)) => 1,
        _ => 2,
    };
    let local_running = |service: &str| {
        cells.is_some_and(|rows| {
            rows.iter().any(|r| {
                r.state == CellState::Running
                    && control.name_of(r.id).is_some_and(|n| {
                        n.service == service
                            && desired
                                .assignment(service, n.slot)
                                .is_some_and(|a| a.node == me && a.epoch == n.epoch)
                    })
            })
        })
    };
    let owned = control
        .answering(obs)
        .into_iter()
        .filter_map(|a| {
            let (service, _) = addresses.by_index(policy::vip_index(a.ip)?)?;
            let mut backends: Vec<(u8, NodeId)> = desired
                .assignments_of(service)
                .map(|(_, asg)| asg.node)
                .filter(|&n| n != me && liveness(n) < 2)
                .map(|n| (liveness(n), n))
                .collect();
            backends.sort_unstable();
            backends.dedup();
            // A suspected node is skipped while an alive one remains: it is most likely
            // dead (SWIM suspects before it declares), and a connection sent to it waits
            // out the proxy's connect timeout before trying the next.
            if backends.iter().any(|b| b.0 == 0) {
                backends.retain(|b| b.0 == 0);
            }
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
