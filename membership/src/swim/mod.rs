//! SWIM failure detector (lands with issue F5).
