//! The in-memory Raft log: a snapshot of the compacted prefix plus the entries after it.
//!
//! Key type: [`RaftLog`]. It tracks four cursors, always ordered
//! `snapshot.index <= applied <= committed` and `applied <= persisted <= last_index`:
//! `persisted` is how far the log is durable (entries after it are handed out in `Ready`),
//! `committed` how far a quorum has it (§5.3, §5.4), `applied` how far the application applied.
//! Conflict handling follows §5.3 (delete the conflicting suffix, append the new entries).

use alloc::vec::Vec;

use crate::guard::Rejection;
use crate::types::{Entry, Snapshot, SnapshotMeta};

/// The log of one node; see the module docs for its cursors.
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    /// The compacted prefix (index 0, term 0 before any compaction); data may be empty then.
    snapshot: Snapshot,
    /// Entries `snapshot.meta.index + 1 ..= last_index`, contiguous.
    entries: Vec<Entry>,
    committed: u64,
    applied: u64,
    persisted: u64,
}

impl RaftLog {
    /// A log restored from durable state (all of it counts as persisted).
    pub fn restored(snapshot: Snapshot, entries: Vec<Entry>, commit: u64) -> RaftLog {
        let mut log = RaftLog {
            snapshot,
            entries,
            committed: 0,
            applied: 0,
            persisted: 0,
        };
        log.persisted = log.last_index();
        log.applied = log.snapshot.meta.index;
        // A commit index beyond the durable log cannot be trusted (it was torn off); the
        // leader will tell us again. Never below the snapshot, which is committed by definition.
        log.committed = commit.min(log.last_index()).max(log.snapshot.meta.index);
        log.check();
        log
    }

    fn check(&self) {
        debug_assert!(self.applied <= self.committed && self.applied >= self.snapshot.meta.index);
        debug_assert!(self.persisted <= self.last_index() && self.applied <= self.persisted);
        debug_assert!(self
            .entries
            .first()
            .is_none_or(|e| e.index == self.snapshot.meta.index + 1));
    }

    /// First index still held as an entry.
    pub fn first_index(&self) -> u64 {
        self.snapshot.meta.index + 1
    }

    /// Index of the last entry (or of the snapshot when no entries follow it).
    pub fn last_index(&self) -> u64 {
        self.snapshot.meta.index + self.entries.len() as u64
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.meta.term, |e| e.term)
    }

    /// Term at `index`, or `None` when compacted away or beyond the end.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.meta.index {
            return Some(self.snapshot.meta.term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.snapshot.meta.index || index > self.last_index() {
            return None;
        }
        let entry = &self.entries[(index - self.first_index()) as usize];
        debug_assert_eq!(entry.index, index);
        Some(entry)
    }

    /// Whether the log holds an entry (or the snapshot end) at `index` with `term`.
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as ours.
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Largest index `<= index` whose term is `<= term` (or the first index we cannot see).
    /// Used by both sides of fast backtracking to skip a whole conflicting term at once.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> u64 {
        let mut probe = index.min(self.last_index());
        while probe > 0 {
            match self.term(probe) {
                Some(t) if t > term => probe -= 1,
                _ => break,
            }
        }
        probe
    }

    /// Bytes (`Entry::batch_cost_bytes`) of the entries after `index` (all held entries when
    /// `index` is at or below the snapshot).
    pub fn bytes_after(&self, index: u64) -> usize {
        let skip = index.saturating_sub(self.snapshot.meta.index) as usize;
        self.entries
            .iter()
            .skip(skip)
            .map(Entry::batch_cost_bytes)
            .sum()
    }

    /// The held snapshot (meta index 0 when none).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Commit index.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Applied index.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Durable index.
    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// Advances the commit index (never backwards, never beyond the log).
    pub fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Appends entries created by the leader at the end of the log.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1);
        assert!(entry.term >= self.last_term());
        self.entries.push(entry);
    }

    /// Follower side of AppendEntries (§5.3). Returns the index of the last new entry when
    /// `prev_index`/`prev_term` match, `Ok(None)` when they do not. Conflicting suffixes are
    /// truncated. A batch that is not contiguous, or that would overwrite a committed entry,
    /// is refused whole and changes nothing (only a broken or forged leader sends one).
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        entries: &[Entry],
    ) -> Result<Option<u64>, Rejection> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        let contiguous = entries
            .iter()
            .zip(prev_index.saturating_add(1)..)
            .all(|(entry, expected)| entry.index == expected);
        if !contiguous {
            return Err(Rejection::Inconsistent);
        }
        let last_new = prev_index.saturating_add(entries.len() as u64);
        // First pass, no change yet: find where the batch leaves our log.
        let mut conflict = None;
        for entry in entries {
            if entry.index <= self.snapshot.meta.index {
                continue; // Covered by our snapshot, hence committed and identical.
            }
            match self.term(entry.index) {
                Some(t) if t == entry.term => continue,
                Some(_) => conflict = Some(entry.index),
                None => {}
            }
            break;
        }
        if conflict.is_some_and(|index| index <= self.committed) {
            return Err(Rejection::TruncatesCommitted);
        }
        for entry in entries {
            if entry.index <= self.snapshot.meta.index {
                continue;
            }
            match self.term(entry.index) {
                Some(t) if t == entry.term => continue,
                Some(_) => self.truncate_from(entry.index),
                None => {}
            }
            self.entries.push(entry.clone());
        }
        self.check();
        Ok(Some(last_new))
    }

    fn truncate_from(&mut self, index: u64) {
        // Committed entries are never overwritten: that would break state-machine safety.
        assert!(
            index > self.committed,
            "truncating committed index {index} (commit {})",
            self.committed
        );
        self.entries.truncate((index - self.first_index()) as usize);
        self.persisted = self.persisted.min(index - 1);
    }

    /// Up to `max_entries` entries from `lo` whose total cost stays within `max_bytes`
    /// (at least one entry, if any, so progress is always possible).
    pub fn slice(&self, lo: u64, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        debug_assert!(lo >= self.first_index());
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = lo;
        while let Some(entry) = self.entry(index) {
            let cost = entry.batch_cost_bytes();
            if out.len() >= max_entries || (!out.is_empty() && bytes + cost > max_bytes) {
                break;
            }
            bytes += cost;
            out.push(entry.clone());
            index += 1;
        }
        out
    }

    /// Entries not yet durable, to hand out in `Ready`.
    pub fn unstable(&self) -> &[Entry] {
        let from = (self.persisted + 1).max(self.first_index());
        let skip = (from - self.first_index()) as usize;
        &self.entries[skip.min(self.entries.len())..]
    }

    /// Marks the log durable up to `index` if it still holds `term` there.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if index > self.persisted && self.match_term(index, term) {
            self.persisted = index;
        }
    }

    /// Committed, durable, unapplied entries (at most `max_entries`).
    pub fn to_apply(&self, max_entries: usize) -> Vec<Entry> {
        let hi = self.committed.min(self.persisted);
        let mut out = Vec::new();
        let mut index = self.applied + 1;
        while index <= hi && out.len() < max_entries {
            out.push(self.entry(index).expect("committed entry held").clone());
            index += 1;
        }
        out
    }

    /// Records that the application applied through `index`.
    pub fn applied_to(&mut self, index: u64) {
        assert!(
            index <= self.committed && index <= self.persisted,
            "applying uncommitted {index}"
        );
        if index > self.applied {
            self.applied = index;
        }
    }

    /// Installs a snapshot received from the leader (§7). Returns false when the log already
    /// holds the snapshot's last entry (then only the commit index moves).
    pub fn restore(&mut self, snapshot: Snapshot) -> bool {
        let meta = snapshot.meta;
        if meta.index <= self.committed {
            return false;
        }
        if self.match_term(meta.index, meta.term) {
            self.commit_to(meta.index);
            return false;
        }
        self.entries.clear();
        self.snapshot = snapshot;
        self.committed = meta.index;
        self.applied = meta.index;
        self.persisted = meta.index;
        self.check();
        true
    }

    /// Compacts the log through `index`, replacing the prefix with the application's `data`.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> &Snapshot {
        assert!(index <= self.applied && index > self.snapshot.meta.index);
        let term = self.term(index).expect("compaction index held");
        let drop = (index - self.snapshot.meta.index) as usize;
        self.entries.drain(..drop);
        self.snapshot = Snapshot {
            meta: SnapshotMeta { index, term },
            data,
        };
        self.check();
        &self.snapshot
    }
}
