//! Deterministic simulator for swim (lands with its issue).
