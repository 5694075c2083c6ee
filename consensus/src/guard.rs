//! The gate every peer message passes before the Raft state machine sees it.
//!
//! Raft's safety argument assumes peers follow the protocol; a message that could only come
//! from a buggy or forged peer (or from a datagram the transport should not have accepted)
//! must not be able to panic the kernel or corrupt the log. So, before dispatch,
//! [`check`] rejects — and the node counts, per [`Rejection`] — messages that:
//!
//! 1. are not addressed to us, come from ourselves, or from a node that is not a voter;
//! 2. claim a sender other than the one the transport authenticated
//!    ([`crate::RawNode::step_from`]);
//! 3. carry implausible numbers: a term or index at or above [`PLAUSIBLE_MAX`] (2^62; a
//!    real cluster never gets near it, and keeping every value below it means `+ 1` on a term
//!    or index can never overflow), a snapshot chunk beyond its own total;
//! 4. are internally inconsistent: an append batch that is not contiguous after
//!    `prev_index`, whose entry terms decrease or exceed the message's term, a vote whose
//!    last log term exceeds its term, a snapshot whose term exceeds the sender's term.
//!
//! What a well-formed message would do to the log is checked where it happens
//! (`RaftLog::maybe_append` refuses to truncate committed entries, counted as
//! [`Rejection::TruncatesCommitted`]; a leader ignores acknowledgements beyond its own log,
//! [`Rejection::AckBeyondLog`]). Neighbours: `node.rs` calls [`check`] from `Raft::step`.

use crate::node::Raft;
use crate::types::{Message, MessageBody};

/// Terms, indexes and sizes at or above this are implausible and rejected (2^62).
pub const PLAUSIBLE_MAX: u64 = 1 << 62;

/// Why a peer message was dropped before (or instead of) changing any state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `to` is not this node, or `from` is this node.
    Misrouted,
    /// The sender is not a voter of this group.
    NotMember,
    /// The message names a sender other than the authenticated one.
    SenderMismatch,
    /// A term, index or size at or above [`PLAUSIBLE_MAX`], or a chunk beyond its total.
    Implausible,
    /// Append entries not contiguous after `prev_index`, or their terms decrease or exceed
    /// the message's term; a vote or snapshot whose log term exceeds the message's term.
    Inconsistent,
    /// An append that would overwrite committed entries (a second leader in a committed
    /// term: only a broken or forged peer sends it).
    TruncatesCommitted,
    /// An acknowledgement of entries beyond the leader's own log.
    AckBeyondLog,
    /// A leader message of our own term while we lead it (election safety broken by a peer).
    SecondLeader,
}

impl Rejection {
    /// Every reason, in counter order.
    pub const ALL: [Rejection; 8] = [
        Rejection::Misrouted,
        Rejection::NotMember,
        Rejection::SenderMismatch,
        Rejection::Implausible,
        Rejection::Inconsistent,
        Rejection::TruncatesCommitted,
        Rejection::AckBeyondLog,
        Rejection::SecondLeader,
    ];

    /// Dense index for [`RejectCounters`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name for the shell.
    pub const fn name(self) -> &'static str {
        match self {
            Rejection::Misrouted => "misrouted",
            Rejection::NotMember => "not_member",
            Rejection::SenderMismatch => "sender_mismatch",
            Rejection::Implausible => "implausible",
            Rejection::Inconsistent => "inconsistent",
            Rejection::TruncatesCommitted => "truncates_committed",
            Rejection::AckBeyondLog => "ack_beyond_log",
            Rejection::SecondLeader => "second_leader",
        }
    }
}

/// Rejected messages per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounters {
    counts: [u64; Rejection::ALL.len()],
}

impl RejectCounters {
    /// Counts one rejection.
    pub fn record(&mut self, why: Rejection) {
        let slot = &mut self.counts[why.index()];
        *slot = slot.saturating_add(1);
    }

    /// The count for one reason.
    pub fn get(&self, why: Rejection) -> u64 {
        self.counts[why.index()]
    }

    /// Every rejection.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// (name, count) for every reason, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Rejection::ALL.iter().map(|r| (r.name(), self.get(*r)))
    }
}

fn plausible(values: &[u64]) -> Result<(), Rejection> {
    if values.iter().all(|&v| v < PLAUSIBLE_MAX) {
        Ok(())
    } else {
        Err(Rejection::Implausible)
    }
}

/// Checks routing, membership, plausibility and internal consistency (module docs, 1–4
/// except 2, which `RawNode::step_from` checks).
pub(crate) fn check(raft: &Raft, msg: &Message) -> Result<(), Rejection> {
    if msg.to != raft.cfg.id || msg.from == raft.cfg.id {
        return Err(Rejection::Misrouted);
    }
    if !raft.cfg.voters.contains(&msg.from) {
        return Err(Rejection::NotMember);
    }
    plausible(&[msg.term])?;
    check_body(msg.term, &msg.body)
}

fn check_body(term: u64, body: &MessageBody) -> Result<(), Rejection> {
    match body {
        MessageBody::Vote {
            last_index,
            last_term,
            ..
        } => {
            plausible(&[*last_index, *last_term])?;
            consistent(*last_term <= term)
        }
        MessageBody::VoteResponse { .. } | MessageBody::HeartbeatResponse { .. } => Ok(()),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => check_append(term, *prev_index, *prev_term, entries, *commit),
        MessageBody::AppendResponse {
            index,
            hint_index,
            hint_term,
            ..
        } => plausible(&[*index, *hint_index, *hint_term]),
        MessageBody::Heartbeat { commit, .. } => plausible(&[*commit]),
        MessageBody::Snapshot {
            meta,
            total_bytes,
            offset,
            data,
            ..
        } => {
            plausible(&[meta.index, meta.term, *total_bytes, *offset])?;
            let end = offset.saturating_add(data.len() as u64);
            if end > *total_bytes {
                return Err(Rejection::Implausible);
            }
            consistent(meta.term <= term)
        }
        MessageBody::SnapshotResponse {
            index, next_offset, ..
        } => plausible(&[*index, *next_offset]),
    }
}

fn check_append(
    term: u64,
    prev_index: u64,
    prev_term: u64,
    entries: &[crate::types::Entry],
    commit: u64,
) -> Result<(), Rejection> {
    plausible(&[prev_index, prev_term, commit])?;
    consistent(prev_term <= term)?;
    let mut last_term = prev_term;
    for (offset, entry) in entries.iter().enumerate() {
        plausible(&[entry.index, entry.term])?;
        // Both sides are below 2^62 + 2^62 here: no overflow.
        let expected = prev_index + 1 + offset as u64;
        consistent(entry.index == expected && entry.term >= last_term && entry.term <= term)?;
        last_term = entry.term;
    }
    Ok(())
}

fn consistent(holds: bool) -> Result<(), Rejection> {
    if holds {
        Ok(())
    } else {
        Err(Rejection::Inconsistent)
    }
}
