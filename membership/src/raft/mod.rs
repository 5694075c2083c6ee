//! Raft consensus core (lands with issue F6).
