//! Log replication (Raft paper §5.3, commitment rule §5.4.2) and InstallSnapshot (§7).
//!
//! Leader side: `send_append` batches entries (bounded by count and bytes so one encoded
//! message fits the kernel's network envelope) within the follower's in-flight window;
//! rejections carry a conflict hint so the leader skips a whole term per round trip.
//! An entry commits only when a majority stores it *and* it is from the leader's term.
//! Snapshots are streamed in `snapshot_chunk_bytes` chunks with offset/done, pipelined within
//! the in-flight window; the follower answers each chunk with how many bytes it holds, and a
//! heartbeat answer makes the leader resend from there (lost or reordered chunks).

use alloc::vec::Vec;

use crate::guard::Rejection;
use crate::node::{IncomingSnapshot, Raft};
use crate::progress::ProgressState;
use crate::types::{Entry, MessageBody, Role, Snapshot, SnapshotMeta};
use crate::NodeId;

impl Raft {
    /// Sends the next append (or snapshot chunk) to `to` if its window allows. Returns true
    /// when an append was sent. `allow_empty` sends a commit-carrying empty append.
    pub(crate) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_index;
        debug_assert!(next >= 1);
        let Some(prev_term) = self.log.term(next - 1) else {
            // The follower needs entries we compacted: stream the snapshot instead (§7).
            let index = self.log.snapshot().meta.index;
            self.progress
                .get_mut(&to)
                .expect("peer")
                .become_snapshot(index);
            self.send_snapshot_chunks(to);
            return false;
        };
        let entries = self
            .log
            .slice(next, self.cfg.max_append_entries, self.cfg.max_append_bytes);
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last_sent = entries.last().map(|e| e.index);
        let commit = self.log.committed();
        let body = MessageBody::Append {
            prev_index: next - 1,
            prev_term,
            entries,
            commit,
        };
        self.send(to, body);
        self.progress.get_mut(&to).expect("peer").on_sent(last_sent);
        true
    }

    /// Sends appends to every follower (carrying the new commit index even if empty).
    pub(crate) fn bcast_append(&mut self) {
        debug_assert_eq!(self.role, Role::Leader);
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            self.send_append(peer, true);
        }
    }

    /// Heartbeats every follower; `ctx` is the ReadIndex round they confirm.
    pub(crate) fn bcast_heartbeat(&mut self, ctx: u64) {
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            // Only commit what the follower is known to hold (its log may lag behind ours).
            let matched = self.progress.get(&peer).map_or(0, |p| p.match_index);
            let commit = matched.min(self.log.committed());
            self.send(peer, MessageBody::Heartbeat { commit, ctx });
        }
    }

    /// Advances the commit index to the highest index stored by a majority, but only for an
    /// entry of the current term (§5.4.2). The leader's own copy counts once it is durable.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        debug_assert_eq!(self.role, Role::Leader);
        let mut matched: Vec<u64> = self.progress.values().map(|p| p.match_index).collect();
        matched.push(self.log.persisted());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.cfg.quorum() - 1];
        if candidate > self.log.committed() && self.log.term(candidate) == Some(self.term) {
            self.log.commit_to(candidate);
            return true;
        }
        false
    }

    /// AppendEntries receiver (§5.3).
    pub(crate) fn on_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: &[Entry],
        commit: u64,
    ) {
        self.follow(from);
        if self.role == Role::Leader {
            return;
        }
        if prev_index < self.log.committed() {
            // Everything up to our commit index is known to match the leader.
            let index = self.log.committed();
            self.send(
                from,
                MessageBody::AppendResponse {
                    success: true,
                    index,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
            return;
        }
        match self.log.maybe_append(prev_index, prev_term, entries) {
            Err(why) => self.reject(why),
            Ok(Some(last_new)) => {
                self.log.commit_to(commit.min(last_new));
                let reply = MessageBody::AppendResponse {
                    success: true,
                    index: last_new,
                    hint_index: 0,
                    hint_term: 0,
                };
                self.send(from, reply);
            }
            Ok(None) => {
                let probe = prev_index.min(self.log.last_index());
                let hint_index = self.log.find_conflict_by_term(probe, prev_term);
                let hint_term = self.log.term(hint_index).unwrap_or(0);
                let reply = MessageBody::AppendResponse {
                    success: false,
                    index: prev_index,
                    hint_index,
                    hint_term,
                };
                self.send(from, reply);
            }
        }
    }

    /// Leader handles an append answer: advance or back off, then keep the pipe full.
    pub(crate) fn on_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    ) {
        if self.role != Role::Leader {
            return;
        }
        if success && index > self.log.last_index() {
            // A follower cannot hold what we never had: a broken or forged answer.
            self.reject(Rejection::AckBeyondLog);
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if !success {
            let probe_hint = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term)
            } else {
                hint_index
            };
            let pr = self.progress.get_mut(&from).expect("peer");
            if pr.maybe_decr_to(index, probe_hint) {
                self.send_append(from, true);
            }
            return;
        }
        let was_paused = pr.is_paused();
        if !pr.maybe_update(index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot {
                index: snap_index, ..
            } if pr.match_index >= snap_index => pr.become_probe(),
            _ => {}
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else if was_paused {
            // The follower just caught up: tell it the commit index now (an empty append if
            // need be) instead of leaving it to the next heartbeat.
            self.send_append(from, true);
        }
        while self.send_append(from, false) {}
    }

    /// Heartbeat receiver: follow the leader, learn the commit index, echo the read round.
    pub(crate) fn on_heartbeat(&mut self, from: NodeId, commit: u64, ctx: u64) {
        self.follow(from);
        if self.role == Role::Leader {
            return;
        }
        self.log.commit_to(commit.min(self.log.last_index()));
        self.send(from, MessageBody::HeartbeatResponse { ctx });
    }

    /// Leader: a heartbeat answer proves the follower is reachable; resume sending to it.
    pub(crate) fn on_heartbeat_response(&mut self, from: NodeId, ctx: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.paused = false;
        if pr.state == ProgressState::Replicate && pr.inflight_full() {
            pr.free_first();
        }
        let streaming = matches!(pr.state, ProgressState::Snapshot { .. });
        let behind = pr.match_index < last_index;
        if streaming {
            // Go back to what the follower holds and resend from there (covers lost chunks).
            let pr = self.progress.get_mut(&from).expect("peer");
            if let ProgressState::Snapshot { index, offset, .. } = pr.state {
                pr.state = ProgressState::Snapshot {
                    index,
                    offset,
                    sent: offset,
                };
            }
            self.send_snapshot_chunks(from);
        } else if behind {
            self.send_append(from, true);
        }
        self.on_read_ack(from, ctx);
    }

    /// Streams snapshot chunks to `to`, keeping at most `max_inflight_appends` chunks beyond
    /// the follower's acknowledged offset in flight (always at least one).
    pub(crate) fn send_snapshot_chunks(&mut self, to: NodeId) {
        let meta = self.log.snapshot().meta;
        let total = self.log.snapshot().data.len() as u64;
        let chunk = self.cfg.snapshot_chunk_bytes as u64;
        let window = chunk * self.cfg.max_inflight_appends as u64;
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        let ProgressState::Snapshot { index, .. } = pr.state else {
            return;
        };
        if index != meta.index {
            pr.become_snapshot(meta.index); // We compacted again: restart with the new one.
        }
        for _ in 0..=self.cfg.max_inflight_appends {
            let pr = self.progress.get_mut(&to).expect("peer");
            let ProgressState::Snapshot {
                index,
                offset,
                sent,
            } = pr.state
            else {
                unreachable!()
            };
            let idle = sent <= offset; // Nothing in flight: send even an empty final chunk.
            if !idle && (sent >= total || sent - offset >= window) {
                break;
            }
            let start = sent.min(total);
            let end = (start + chunk).min(total);
            pr.state = ProgressState::Snapshot {
                index,
                offset,
                sent: end,
            };
            let data = self.log.snapshot().data[start as usize..end as usize].to_vec();
            let body = MessageBody::Snapshot {
                meta,
                total_bytes: total,
                offset: start,
                data,
                done: end == total,
            };
            self.send(to, body);
            if end == total {
                break;
            }
        }
    }

    /// Leader: the follower holds `next_offset` bytes of the snapshot at `index`.
    pub(crate) fn on_snapshot_response(
        &mut self,
        from: NodeId,
        index: u64,
        next_offset: u64,
        done: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let ProgressState::Snapshot {
            index: sending,
            offset,
            sent,
        } = pr.state
        else {
            return;
        };
        if sending != index || done || next_offset == offset {
            // Stale, completion (arrives as an AppendResponse), or no progress: a lost chunk
            // is resent from `offset` on the next heartbeat answer, not once per duplicate.
            return;
        }
        // Forward: the follower holds more. Backward: it lost what it held (it restarted, or
        // started over): resend from what it says it has, never from what we assumed.
        let sent = if next_offset > offset {
            sent.max(next_offset)
        } else {
            next_offset
        };
        pr.state = ProgressState::Snapshot {
            index,
            offset: next_offset,
            sent,
        };
        self.send_snapshot_chunks(from);
    }

    /// InstallSnapshot receiver (§7): assemble chunks in order, install when complete.
    pub(crate) fn on_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        self.follow(from);
        if self.role == Role::Leader {
            return;
        }
        if meta.index <= self.log.committed() {
            let index = self.log.committed();
            self.send(
                from,
                MessageBody::AppendResponse {
                    success: true,
                    index,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
            return;
        }
        if total_bytes > self.cfg.max_snapshot_bytes as u64 {
            return; // Refuse rather than allocate without bound.
        }
        let held = self.accept_chunk(meta, total_bytes, offset, data);
        if !(done && held == total_bytes) {
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    index: meta.index,
                    next_offset: held,
                    done: false,
                },
            );
            return;
        }
        let incoming = self.incoming_snapshot.take().expect("complete snapshot");
        let snapshot = Snapshot {
            meta,
            data: incoming.data,
        };
        if self.log.restore(snapshot.clone()) {
            self.pending_snapshot = Some(snapshot);
        }
        debug_assert!(self.log.committed() >= meta.index);
        self.send(
            from,
            MessageBody::AppendResponse {
                success: true,
                index: meta.index,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    /// Adds a chunk to the snapshot being received; returns how many bytes are now held.
    fn accept_chunk(
        &mut self,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
    ) -> u64 {
        let term = self.term;
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.term == term && s.meta == meta && s.total_bytes == total_bytes);
        if !same {
            if offset != 0 {
                return 0; // Ask the leader to start over from byte 0.
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                term,
                meta,
                total_bytes,
                data: Vec::new(),
            });
        }
        let incoming = self.incoming_snapshot.as_mut().expect("incoming");
        let held = incoming.data.len() as u64;
        if offset == held && held + data.len() as u64 <= total_bytes {
            incoming.data.extend_from_slice(&data);
        }
        incoming.data.len() as u64
    }
}
