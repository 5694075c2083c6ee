//! Leader election (Raft paper §5.2, §5.4.1) with PreVote (thesis §9.6).
//!
//! A node whose election timeout fires first runs a pre-election at `term + 1` without
//! changing its state; only when a quorum would vote for it does it bump the term and run the
//! real election. Votes are granted to candidates whose log is at least as up-to-date (§5.4.1).

use crate::node::Raft;
use crate::types::{MessageBody, Role};
use crate::NodeId;

impl Raft {
    /// Starts a pre-election (`pre_vote`) or a real election.
    pub(crate) fn campaign(&mut self, pre_vote: bool) {
        let vote_term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        let me = self.id();
        self.votes.insert(me, true);
        if self.tally_votes(pre_vote) {
            return; // Single-voter group: already won.
        }
        let last_index = self.log.last_index();
        let last_term = self.log.last_term();
        let peers: alloc::vec::Vec<NodeId> = self.peers().collect();
        for peer in peers {
            self.send_with_term(
                peer,
                vote_term,
                MessageBody::Vote {
                    pre_vote,
                    last_index,
                    last_term,
                },
            );
        }
    }

    /// Counts the answers; acts on a decided election. Returns true when decided.
    fn tally_votes(&mut self, pre_vote: bool) -> bool {
        let granted = self.votes.values().filter(|&&g| g).count();
        let rejected = self.votes.len() - granted;
        let quorum = self.cfg.quorum();
        if granted >= quorum {
            if pre_vote {
                self.campaign(false);
            } else {
                self.become_leader();
            }
            return true;
        }
        if rejected >= quorum {
            let term = self.term;
            self.become_follower(term, None);
            return true;
        }
        false
    }

    /// RequestVote / PreVote (§5.2, §5.4.1, §9.6).
    pub(crate) fn on_vote(
        &mut self,
        from: NodeId,
        term: u64,
        pre_vote: bool,
        last_index: u64,
        last_term: u64,
    ) {
        let free = self.vote.is_none() && self.leader.is_none();
        let can_vote = self.vote == Some(from) || free || (pre_vote && term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if granted {
            // A granted pre-vote answers in the candidate's future term so it counts it.
            self.send_with_term(
                from,
                term,
                MessageBody::VoteResponse {
                    pre_vote,
                    granted: true,
                },
            );
            if !pre_vote {
                debug_assert_eq!(term, self.term);
                self.vote = Some(from);
                self.election_elapsed = 0;
            }
        } else {
            self.send(
                from,
                MessageBody::VoteResponse {
                    pre_vote,
                    granted: false,
                },
            );
        }
    }

    /// An answer to our (pre-)vote request.
    pub(crate) fn on_vote_response(
        &mut self,
        from: NodeId,
        term: u64,
        pre_vote: bool,
        granted: bool,
    ) {
        let expected = match (self.role, pre_vote) {
            (Role::PreCandidate, true) => {
                granted && term == self.term + 1 || !granted && term == self.term
            }
            (Role::Candidate, false) => term == self.term,
            _ => false,
        };
        if !expected {
            return; // Stale answer from an earlier campaign.
        }
        self.votes.entry(from).or_insert(granted);
        self.tally_votes(pre_vote);
    }
}
