//! Hardware architecture support. Only x86_64 exists; the indirection keeps the tree honest
//! about what is architecture-specific.

pub mod x86_64;

pub use self::x86_64::*;
