//! Deterministic simulator for raft (lands with its issue).
