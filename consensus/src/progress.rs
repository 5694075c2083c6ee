//! What the leader knows about each follower's log (Raft paper §5.3 `nextIndex`/`matchIndex`),
//! plus the flow-control state of raft-rs / etcd: probe one append at a time until the follower
//! matches, then replicate optimistically within a bounded in-flight window, or stream a
//! snapshot in chunks (§7, pipelined within the same window) when the follower is behind the
//! leader's compacted prefix.

use alloc::collections::VecDeque;

/// How the leader currently sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// At most one append outstanding, until the follower's match index is known.
    Probe,
    /// Pipelined appends, at most `max_inflight_appends` outstanding.
    Replicate,
    /// Streaming the snapshot at `index`: the follower holds bytes `..offset`, chunks up to
    /// byte `sent` are in flight (at most `max_inflight_appends` chunks beyond `offset`).
    Snapshot { index: u64, offset: u64, sent: u64 },
}

/// Per-follower replication state held by the leader.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated (and durable) on the follower.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    /// Flow-control state.
    pub state: ProgressState,
    /// In Probe: an append is outstanding, wait for its answer or a heartbeat answer.
    pub paused: bool,
    /// Last indexes of the appends in flight (Replicate), oldest first; bounded.
    inflight: VecDeque<u64>,
    inflight_max: usize,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
}

impl Progress {
    /// Fresh progress of a new leader whose log ends at `last_index`.
    pub fn new(last_index: u64, inflight_max: usize) -> Progress {
        assert!(inflight_max > 0);
        Progress {
            match_index: 0,
            next_index: last_index + 1,
            state: ProgressState::Probe,
            paused: false,
            inflight: VecDeque::with_capacity(inflight_max),
            inflight_max,
            recent_active: true,
        }
    }

    /// Whether no append may be sent now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.paused,
            ProgressState::Replicate => self.inflight.len() >= self.inflight_max,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Whether the in-flight window is full.
    pub fn inflight_full(&self) -> bool {
        self.inflight.len() >= self.inflight_max
    }

    /// Frees the oldest in-flight slot (a heartbeat answer shows the pipe drained).
    pub fn free_first(&mut self) {
        self.inflight.pop_front();
    }

    /// Bookkeeping after sending an append whose last entry is `last_sent` (None: empty).
    pub fn on_sent(&mut self, last_sent: Option<u64>) {
        match self.state {
            ProgressState::Probe => self.paused = true,
            ProgressState::Replicate => {
                if let Some(last) = last_sent {
                    assert!(!self.inflight_full(), "sending past the in-flight window");
                    self.next_index = last + 1;
                    self.inflight.push_back(last);
                }
            }
            ProgressState::Snapshot { .. } => unreachable!("append while streaming a snapshot"),
        }
    }

    /// A successful append answer up to `index`. Returns whether it taught us something new.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.paused = false;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        debug_assert!(self.next_index > self.match_index);
        updated
    }

    /// A rejected append of `rejected` (its prev index); `probe_hint` is where the logs may
    /// match. Returns false when the rejection is stale (answers an older send).
    pub fn maybe_decr_to(&mut self, rejected: u64, probe_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            // The pipe broke (a lost or rejected append): probe from the hint.
            self.state = ProgressState::Probe;
            self.inflight.clear();
            self.next_index = rejected.min(probe_hint + 1).max(self.match_index + 1);
            self.paused = false;
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = rejected.min(probe_hint + 1).max(self.match_index + 1);
        self.paused = false;
        debug_assert!(self.next_index > self.match_index);
        true
    }

    /// Back to probing from just after the match index (or after a delivered snapshot).
    pub fn become_probe(&mut self) {
        if let ProgressState::Snapshot { index, .. } = self.state {
            self.next_index = self.match_index.max(index) + 1;
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.paused = false;
        self.inflight.clear();
    }

    /// Start pipelining after the follower's log is known to match.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.paused = false;
        self.inflight.clear();
    }

    /// Start streaming the snapshot at `index` from byte 0.
    pub fn become_snapshot(&mut self, index: u64) {
        self.state = ProgressState::Snapshot {
            index,
            offset: 0,
            sent: 0,
        };
        self.paused = false;
        self.inflight.clear();
    }
}
