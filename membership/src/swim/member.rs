//! The member table entry, its four states and the incarnation precedence rule.
//!
//! SWIM §4.2 orders facts about one member by incarnation; for equal incarnations we rank
//! Alive < Suspect < Down < Left (memberlist's order, with graceful leave final). A fact
//! overrides the table entry iff its (incarnation, rank) is strictly greater, which gives:
//! an Alive needs a strictly higher incarnation (that is how a live node refutes), a
//! Suspect or Down at the same incarnation wins over Alive, and nothing but a newer
//! incarnation brings a Down or Left member back.

use alloc::vec::Vec;

use super::message::{Incarnation, Update};
use crate::NodeId;

/// Where a member stands in this node's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Answering probes (or not yet found silent).
    Alive,
    /// Missed a probe; declared Down when the suspicion timeout expires unless it refutes.
    Suspect,
    /// Declared failed (by us on timeout, or by another node's report).
    Down,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// Lowercase name for `members` and the event log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Left => "left",
        }
    }

    /// Rank used to break ties between facts with equal incarnations.
    pub fn rank(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Down => 2,
            MemberState::Left => 3,
        }
    }

    /// Probed and gossiped to: Alive and Suspect (SWIM probes suspects too).
    pub fn is_active(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// The state an update asserts.
pub fn update_state(update: &Update) -> MemberState {
    match update {
        Update::Alive { .. } => MemberState::Alive,
        Update::Suspect { .. } => MemberState::Suspect,
        Update::Dead { .. } => MemberState::Down,
        Update::Left { .. } => MemberState::Left,
    }
}

/// True iff a fact (incarnation, state) overrides the current (incarnation, state).
pub fn overrides(new: (Incarnation, MemberState), current: (Incarnation, MemberState)) -> bool {
    (new.0, new.1.rank()) > (current.0, current.1.rank())
}

/// One known member (never this node itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: NodeId,
    /// Current state in our view.
    pub state: MemberState,
    /// Incarnation of the fact that put it in `state`.
    pub incarnation: Incarnation,
    /// Who reported it Suspect or Down (ourselves included); meaningless when Alive.
    pub reporter: NodeId,
    /// Opaque metadata from its latest Alive.
    pub meta: Vec<u8>,
    /// Last time any message from it arrived (0 if never).
    pub last_heard_ms: u64,
    /// When `state` last changed.
    pub state_changed_ms: u64,
}

impl Member {
    /// The fact this entry stands for, ready to gossip or page out.
    pub fn to_update(&self) -> Update {
        let (id, incarnation) = (self.id, self.incarnation);
        match self.state {
            MemberState::Alive => Update::Alive {
                id,
                incarnation,
                meta: self.meta.clone(),
            },
            MemberState::Suspect => Update::Suspect {
                id,
                incarnation,
                from: self.reporter,
            },
            MemberState::Down => Update::Dead {
                id,
                incarnation,
                from: self.reporter,
            },
            MemberState::Left => Update::Left { id, incarnation },
        }
    }
}

/// A read-only row for the `members` shell command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView<'a> {
    /// Node id.
    pub id: NodeId,
    /// State in this node's view (this node itself is always Alive unless leaving).
    pub state: MemberState,
    /// Incarnation of that state.
    pub incarnation: Incarnation,
    /// Last time a message from it arrived (for self: the last call).
    pub last_heard_ms: u64,
    /// Its metadata blob.
    pub meta: &'a [u8],
    /// True for this node's own row.
    pub is_self: bool,
}
