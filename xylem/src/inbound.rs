//! Control messages from peers (`Kind::Control` datagrams), checked before they touch
//! anything (issue #15.4, defence in depth behind the sealed transport).
//!
//! Two messages exist ([`ControlMsg`]): a node's status [`NodeReport`], and a command a
//! follower's shell forwards to the leader. [`Inbound::on_message`] decides, in order:
//!
//! 1. the bytes decode as a [`ControlMsg`], else [`Refusal::Undecodable`];
//! 2. the sender is a configured member, else [`Refusal::NotMember`];
//! 3. a report decodes, names its sender as its node, is newer than the one held; it is kept
//!    in [`Reports`], a map bounded by [`REPORTS_MAX`] and keyed only by members;
//! 4. a forwarded command is accepted only by the leader, only if it is an operator command
//!    (`ApplyService`, `Scale`, `Delete`, `SetDraining`: `Assign`/`Unassign` come from the
//!    leader's own planner and nobody else), and only if it passes
//!    [`validate_operator_command`] — exactly the check the leader's own shell runs — so the
//!    leader proposes nothing a local command could not.
//!
//! Every refusal is counted per reason ([`InboundCounters`]). Sans-IO: the kernel passes the
//! membership, the leader flag, the desired state and the time.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::desired::{ApplyError, DesiredState};
use crate::report::NodeReport;
use crate::NodeId;

/// Most reports held (one per member; members are at most this many).
pub const REPORTS_MAX: usize = 64;

/// A control message between nodes (postcard).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlMsg {
    /// A node's status report (`NodeReport::encode`).
    Report(Vec<u8>),
    /// A command a follower's shell forwards to the leader (`Command::encode`).
    Forward(Vec<u8>),
}

/// Why a control message was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a postcard `ControlMsg`.
    Undecodable,
    /// The sender is not a member of the cluster.
    NotMember,
    /// The report does not decode.
    BadReport,
    /// The report names another node than its sender.
    ReportSenderMismatch,
    /// The report is not newer than the one held.
    StaleReport,
    /// A forward reached a node that is not the leader.
    NotLeader,
    /// The forwarded bytes are not a command.
    BadCommand,
    /// `Assign`/`Unassign` forwarded: only the leader's planner proposes those.
    NotAnOperatorCommand,
    /// The command fails the validation a local command gets.
    Invalid(ApplyError),
}

impl Refusal {
    /// Counter index and name.
    fn slot(&self) -> (usize, &'static str) {
        match self {
            Refusal::Undecodable => (0, "undecodable"),
            Refusal::NotMember => (1, "not_member"),
            Refusal::BadReport => (2, "bad_report"),
            Refusal::ReportSenderMismatch => (3, "report_sender_mismatch"),
            Refusal::StaleReport => (4, "stale_report"),
            Refusal::NotLeader => (5, "not_leader"),
            Refusal::BadCommand => (6, "bad_command"),
            Refusal::NotAnOperatorCommand => (7, "not_operator_command"),
            Refusal::Invalid(_) => (8, "invalid_command"),
        }
    }
}

const REFUSALS: usize = 9;

/// Refusals per reason, and what was accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboundCounters {
    refused: [u64; REFUSALS],
    /// Reports stored.
    pub reports: u64,
    /// Forwarded commands handed out for proposal.
    pub forwarded: u64,
}

impl InboundCounters {
    /// Refusals of one reason.
    pub fn refused(&self, why: &Refusal) -> u64 {
        self.refused[why.slot().0]
    }

    /// Every refusal.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }
}

/// What an accepted message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The report was stored.
    Report,
    /// Propose these command bytes (the leader only gets here).
    Propose(Vec<u8>),
}

/// Checks an operator command exactly as the leader's shell does before proposing it: it
/// must be an operator command and apply cleanly to the current desired state (which also
/// validates a spec against the payload catalog).
pub fn validate_operator_command(command: &Command, desired: &DesiredState) -> Result<(), Refusal> {
    match command {
        Command::Assign { .. } | Command::Unassign { .. } => Err(Refusal::NotAnOperatorCommand),
        _ => desired.check(command).map_err(Refusal::Invalid),
    }
}

/// The latest report of each member, bounded.
#[derive(Clone, Debug, Default)]
pub struct Reports {
    map: BTreeMap<NodeId, (NodeReport, u64)>,
}

impl Reports {
    /// Stores `report` from member `from` received at `now_ms`. Newer `seq` wins; when the
    /// map is full, the entry heard from longest ago is evicted.
    pub fn insert(&mut self, from: NodeId, report: NodeReport, now_ms: u64) -> Result<(), Refusal> {
        if report.node != from {
            return Err(Refusal::ReportSenderMismatch);
        }
        if let Some((held, _)) = self.map.get(&from) {
            if report.seq <= held.seq {
                return Err(Refusal::StaleReport);
            }
        }
        if !self.map.contains_key(&from) && self.map.len() >= REPORTS_MAX {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.map.remove(&id);
            }
        }
        self.map.insert(from, (report, now_ms));
        debug_assert!(self.map.len() <= REPORTS_MAX);
        Ok(())
    }

    /// Stores this node's own report (always accepted; its seq only grows).
    pub fn insert_own(&mut self, report: NodeReport, now_ms: u64) {
        let id = report.node;
        let _ = self.insert(id, report, now_ms);
    }

    /// The report of `node` and when it arrived.
    pub fn get(&self, node: NodeId) -> Option<&(NodeReport, u64)> {
        self.map.get(&node)
    }

    /// Every held report, by node id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &(NodeReport, u64))> {
        self.map.iter()
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops the reports of nodes that are no longer members.
    pub fn retain_members(&mut self, members: &[NodeId]) {
        self.map.retain(|id, _| members.contains(id));
    }
}

/// What the receiver knows when a message arrives.
pub struct View<'a> {
    /// The cluster's members (configured peers and this node).
    pub members: &'a [NodeId],
    /// Whether this node is the Raft leader now.
    pub is_leader: bool,
    /// The committed desired state.
    pub desired: &'a DesiredState,
}

/// The receiving side of control messages: reports held, counters.
#[derive(Clone, Debug, Default)]
pub struct Inbound {
    /// The latest report of each member.
    pub reports: Reports,
    counters: InboundCounters,
}

impl Inbound {
    /// Handles one message from `from` (module docs); refusals are counted.
    pub fn on_message(
        &mut self,
        from: NodeId,
        bytes: &[u8],
        now_ms: u64,
        view: &View<'_>,
    ) -> Result<Accepted, Refusal> {
        let result = self.decide(from, bytes, now_ms, view);
        match &result {
            Ok(Accepted::Report) => self.counters.reports += 1,
            Ok(Accepted::Propose(_)) => self.counters.forwarded += 1,
            Err(why) => self.counters.refused[why.slot().0] += 1,
        }
        result
    }

    fn decide(
        &mut self,
        from: NodeId,
        bytes: &[u8],
        now_ms: u64,
        view: &View<'_>,
    ) -> Result<Accepted, Refusal> {
        let msg: ControlMsg = postcard::from_bytes(bytes).map_err(|_| Refusal::Undecodable)?;
        if !view.members.contains(&from) {
            return Err(Refusal::NotMember);
        }
        match msg {
            ControlMsg::Report(report) => {
                let report = NodeReport::decode(&report).map_err(|_| Refusal::BadReport)?;
                self.reports.insert(from, report, now_ms)?;
                Ok(Accepted::Report)
            }
            ControlMsg::Forward(command) => {
                if !view.is_leader {
                    return Err(Refusal::NotLeader);
                }
                let decoded = Command::decode(&command).map_err(|_| Refusal::BadCommand)?;
                validate_operator_command(&decoded, view.desired)?;
                Ok(Accepted::Propose(command))
            }
        }
    }

    /// The counters.
    pub fn counters(&self) -> &InboundCounters {
        &self.counters
    }

    /// (reason, count) for every refusal reason.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        const ALL: [Refusal; REFUSALS] = [
            Refusal::Undecodable,
            Refusal::NotMember,
            Refusal::BadReport,
            Refusal::ReportSenderMismatch,
            Refusal::StaleReport,
            Refusal::NotLeader,
            Refusal::BadCommand,
            Refusal::NotAnOperatorCommand,
            Refusal::Invalid(ApplyError::UnknownService),
        ];
        ALL.into_iter().map(|r| {
            let (i, name) = r.slot();
            (name, self.counters.refused[i])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{PayloadCatalog, ServiceSpec};
    use alloc::string::ToString;
    use alloc::vec;

    fn desired() -> DesiredState {
        let mut ds = DesiredState::new(PayloadCatalog::new(&["hello"]));
        ds.apply(
            1,
            &Command::ApplyService(ServiceSpec::new("web", "hello", 2)),
        )
        .unwrap();
        ds
    }

    fn forward(command: &Command) -> Vec<u8> {
        postcard::to_allocvec(&ControlMsg::Forward(command.encode().unwrap())).unwrap()
    }

    fn report(node: NodeId, seq: u64) -> Vec<u8> {
        let r = NodeReport::new(node, seq, 10, 100, Vec::new());
        postcard::to_allocvec(&ControlMsg::Report(r.encode().unwrap())).unwrap()
    }

    /// The story: a forged `Forward(Assign epoch u64::MAX)` from anyone.
    #[test]
    fn forwarded_assign_is_never_proposed() {
        let ds = desired();
        let view = View {
            members: &[1, 2, 3],
            is_leader: true,
            desired: &ds,
        };
        let mut inbound = Inbound::default();
        let evil = Command::Assign {
            service: "web".to_string(),
            slot: 0,
            node: 1,
            epoch: u64::MAX,
        };
        for from in [1, 2, 9] {
            let result = inbound.on_message(from, &forward(&evil), 0, &view);
            assert!(matches!(
                result,
                Err(Refusal::NotAnOperatorCommand | Refusal::NotMember)
            ));
        }
        let unassign = Command::Unassign {
            service: "web".to_string(),
            slot: 0,
            epoch: 1,
        };
        assert_eq!(
            inbound.on_message(2, &forward(&unassign), 0, &view),
            Err(Refusal::NotAnOperatorCommand)
        );
        assert_eq!(inbound.counters().refused_total(), 4);
    }

    #[test]
    fn forwarded_operator_commands_get_the_local_validation() {
        let ds = desired();
        let leader = View {
            members: &[1, 2, 3],
            is_leader: true,
            desired: &ds,
        };
        let mut inbound = Inbound::default();
        let scale = Command::Scale {
            name: "web".to_string(),
            replicas: 3,
        };
        assert!(matches!(
            inbound.on_message(2, &forward(&scale), 0, &leader),
            Ok(Accepted::Propose(_))
        ));
        let bad = Command::Scale {
            name: "nope".to_string(),
            replicas: 3,
        };
        assert_eq!(
            inbound.on_message(2, &forward(&bad), 0, &leader),
            Err(Refusal::Invalid(ApplyError::UnknownService))
        );
        let mut spec = ServiceSpec::new("db", "missing-payload", 1);
        spec.args = vec!["x".to_string()];
        assert!(matches!(
            inbound.on_message(2, &forward(&Command::ApplyService(spec)), 0, &leader),
            Err(Refusal::Invalid(ApplyError::InvalidSpec(_)))
        ));
        let follower = View {
            is_leader: false,
            ..leader
        };
        assert_eq!(
            inbound.on_message(2, &forward(&scale), 0, &follower),
            Err(Refusal::NotLeader)
        );
        assert_eq!(
            inbound.on_message(2, &[0xff, 0xff, 0xff], 0, &leader),
            Err(Refusal::Undecodable)
        );
    }

    #[test]
    fn reports_are_checked_and_bounded() {
        let ds = desired();
        let members: Vec<NodeId> = (1..=200).collect();
        let view = View {
            members: &members,
            is_leader: false,
            desired: &ds,
        };
        let mut inbound = Inbound::default();
        assert_eq!(
            inbound.on_message(2, &report(2, 5), 0, &view),
            Ok(Accepted::Report)
        );
        assert_eq!(
            inbound.on_message(2, &report(2, 5), 1, &view),
            Err(Refusal::StaleReport)
        );
        assert_eq!(
            inbound.on_message(3, &report(2, 9), 1, &view),
            Err(Refusal::ReportSenderMismatch)
        );
        let outsider = View {
            members: &[1, 2],
            ..view
        };
        assert_eq!(
            inbound.on_message(7, &report(7, 1), 1, &outsider),
            Err(Refusal::NotMember)
        );
        for node in 1..=200u64 {
            let _ = inbound.on_message(node, &report(node, 100), node, &view);
        }
        assert_eq!(inbound.reports.len(), REPORTS_MAX);
        // The most recent ones stay.
        assert!(inbound.reports.get(200).is_some());
        assert!(inbound.reports.get(2).is_none());
    }
}
