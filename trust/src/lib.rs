//! Node identity and mutual TLS 1.3 between kernels (issue #15.1–3), sans-IO.
//!
//! Modules:
//! - [`provider`]: the rustls crypto provider (ChaCha20-Poly1305/SHA-256, X25519, Ed25519 over
//!   RustCrypto, soft arithmetic only).
//! - [`identity`]: what a node's certificate must say (its id and name as DNS names under
//!   `node.xylem`), the boot-time self-check, and the check of a peer's certificate.
//! - [`session`]: one TLS handshake over a byte stream as a state machine — feed received
//!   bytes, take bytes to send, learn when it is established — and the datagram keys derived
//!   from it for `net::seal`.
//!
//! The kernel owns the TCP sockets, the clock (CMOS RTC for certificate validity) and the
//! random source (RDRAND/RDSEED) and drives this crate the way it drives smoltcp; the host
//! tests drive the same code over in-memory pipes. Nothing here reads a device, a clock or a
//! global. Design and trust model: `docs/security.md`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod identity;
pub mod provider;
pub mod session;

pub use identity::{Identity, IdentityError, PeerName};
pub use session::{Established, Session, SessionError, TlsConfigs};
