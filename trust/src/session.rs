//! One mutual-TLS 1.3 handshake between two nodes as a sans-IO state machine, and the datagram
//! keys it yields.
//!
//! Driving it (the kernel does this over a smoltcp TCP socket; the tests over two `Vec`s):
//!
//! 1. [`TlsConfigs::set_time`] with the wall-clock time (RTC), for certificate validity.
//! 2. [`Session::receive`] every byte that arrived on the stream (bounded: a peer that sends
//!    more than [`INCOMING_BYTES_MAX`] before the handshake ends is refused).
//! 3. [`Session::advance`]: runs rustls' unbuffered state machine as far as it can go.
//! 4. Send [`Session::outgoing`] on the stream, then [`Session::consume_outgoing`] what was
//!    sent. Repeat from 2 when bytes arrive.
//! 5. When `advance` returns [`Established`], the handshake is complete *and* the peer's
//!    certificate names the expected node: install [`Established::keys`] with `net::seal`.
//!    The session then holds no TLS state any more; the kernel keeps the TCP connection open
//!    as the session's carrier (its loss makes the dialler reconnect and re-key).
//!
//! Roles: the node with the lower id dials (client); the higher id accepts (server). The
//! server learns who the client claims to be from the stream's source address and checks the
//! client certificate names exactly that node; the client checks the server's names the node
//! it dialled. Both certificates must chain to the cluster CA (rustls' webpki verifiers).
//!
//! Keys (docs/decisions/0002-tls-provider.md): rustls 0.23's unbuffered (no_std) connection
//! does not expose the RFC 8446 §7.5 exporter, so the session converts into rustls' "kernel
//! connection" (the kTLS path: rustls does the handshake, someone else protects the data),
//! takes the two application traffic keys, and derives the datagram keys from them with
//! HKDF-SHA256 under Xylem's own labels. No TLS record is ever protected with those traffic
//! keys after that, so each key has exactly one use.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use hkdf::Hkdf;
use pki_types::UnixTime;
use rustls::client::{Resumption, UnbufferedClientConnection, WebPkiServerVerifier};
use rustls::crypto::SecureRandom;
use rustls::server::{UnbufferedServerConnection, WebPkiClientVerifier};
use rustls::time_provider::TimeProvider;
use rustls::unbuffered::{ConnectionState, EncodeError};
use rustls::{ClientConfig, ConnectionTrafficSecrets, RootCertStore, ServerConfig};
use sha2::Sha256;
use zeroize::Zeroize;

use net::seal::{SessionKeys, KEY_BYTES};

use crate::identity::{check_peer, Identity, IdentityError, PeerName};
use crate::provider;

/// Most bytes buffered from a peer before the handshake completes (a handshake with Ed25519
/// certificates is about 2 KiB).
pub const INCOMING_BYTES_MAX: usize = 16 * 1024;
/// HKDF salt of the datagram keys.
const KEY_SALT: &[u8] = b"xylem datagram keys v1";

/// Wall-clock time for certificate checks, set by the driver (sans-IO: never read here).
#[derive(Debug, Default)]
pub struct Clock {
    unix_s: AtomicU64,
}

impl TimeProvider for Clock {
    fn current_time(&self) -> Option<UnixTime> {
        match self.unix_s.load(Ordering::Relaxed) {
            0 => None,
            s => Some(UnixTime::since_unix_epoch(Duration::from_secs(s))),
        }
    }
}

/// Why a session failed. The TCP connection must be closed; nothing was installed.
#[derive(Debug)]
pub enum SessionError {
    /// rustls refused (a bad certificate, a protocol error, an alert from the peer…).
    Tls(rustls::Error),
    /// The handshake completed but the peer's certificate names another node.
    PeerIdentity(IdentityError),
    /// The peer sent more than [`INCOMING_BYTES_MAX`] during the handshake.
    TooMuchInput,
    /// The peer closed the TLS session before it was established.
    Closed,
    /// `advance` after the session was established or failed.
    Finished,
    /// Bytes arrived after this side was established: the peer never sends any then, unless
    /// it refused us (a TLS 1.3 client finishes before the server has checked its
    /// certificate, so the server's alert comes late). Forget the keys.
    RefusedByPeer,
    /// Building the configuration failed (a CA or key rustls does not accept).
    Config(rustls::Error),
}

impl core::fmt::Display for SessionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SessionError::Tls(e) => write!(f, "tls: {e}"),
            SessionError::PeerIdentity(e) => write!(f, "peer identity: {e}"),
            SessionError::TooMuchInput => f.write_str("peer sent too much during the handshake"),
            SessionError::Closed => f.write_str("peer closed the handshake"),
            SessionError::Finished => f.write_str("session already finished"),
            SessionError::RefusedByPeer => f.write_str("peer refused the session after it ended"),
            SessionError::Config(e) => write!(f, "configuration: {e}"),
        }
    }
}

/// The client and server configurations of one node, built once from its [`Identity`].
pub struct TlsConfigs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    clock: Arc<Clock>,
}

impl TlsConfigs {
    /// Builds both configurations: TLS 1.3 only, our provider, the cluster CA as the only
    /// root, mandatory client certificates, no resumption and no tickets (every session is a
    /// full handshake), secret extraction on (see the module docs).
    pub fn new(
        identity: &Identity,
        random: &'static dyn SecureRandom,
    ) -> Result<TlsConfigs, SessionError> {
        let provider = Arc::new(provider::provider(random));
        let clock = Arc::new(Clock::default());
        let mut roots = RootCertStore::empty();
        roots
            .add(identity.ca.clone())
            .map_err(SessionError::Config)?;
        let roots = Arc::new(roots);
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| SessionError::Config(rustls::Error::General(alloc::format!("{e}"))))?;
        let mut client = ClientConfig::builder_with_details(provider.clone(), clock.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(SessionError::Config)?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())
            .map_err(SessionError::Config)?;
        client.enable_secret_extraction = true;
        client.resumption = Resumption::disabled();
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| SessionError::Config(rustls::Error::General(alloc::format!("{e}"))))?;
        let mut server = ServerConfig::builder_with_details(provider, clock.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(SessionError::Config)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
            .map_err(SessionError::Config)?;
        server.enable_secret_extraction = true;
        server.send_tls13_tickets = 0;
        Ok(TlsConfigs {
            client: Arc::new(client),
            server: Arc::new(server),
            clock,
        })
    }

    /// Sets the wall-clock time certificates are checked against.
    pub fn set_time(&self, now_unix_s: u64) {
        self.clock.unix_s.store(now_unix_s, Ordering::Relaxed);
    }
}

enum Conn {
    Client(Box<UnbufferedClientConnection>),
    Server(Box<UnbufferedServerConnection>),
    Over,
}

/// What an established session yields.
#[derive(Debug)]
pub struct Established {
    /// The authenticated peer.
    pub peer: PeerName,
    /// This side's datagram keys for `net::seal`.
    pub keys: SessionKeys,
}

/// One handshake in progress (module docs).
pub struct Session {
    conn: Conn,
    peer: PeerName,
    incoming: Vec<u8>,
    outgoing: Vec<u8>,
}

/// What one step of the rustls state machine asked for.
enum Step {
    /// Call again.
    Continue,
    /// Needs bytes from the peer.
    Blocked,
    /// The handshake is complete.
    Done,
}

macro_rules! step {
    ($conn:expr, $incoming:expr, $outgoing:expr) => {{
        let status = $conn.process_tls_records(&mut $incoming[..]);
        let discard = status.discard;
        let step = match status.state.map_err(SessionError::Tls)? {
            ConnectionState::EncodeTlsData(mut state) => {
                let used = $outgoing.len();
                $outgoing.resize(used + 4096, 0);
                match state.encode(&mut $outgoing[used..]) {
                    Ok(written) => $outgoing.truncate(used + written),
                    Err(EncodeError::InsufficientSize(need)) => {
                        $outgoing.resize(used + need.required_size, 0);
                        let written = state
                            .encode(&mut $outgoing[used..])
                            .map_err(|_| SessionError::Tls(rustls::Error::EncryptError))?;
                        $outgoing.truncate(used + written);
                    }
                    Err(EncodeError::AlreadyEncoded) => $outgoing.truncate(used),
                }
                Step::Continue
            }
            // The bytes are in `outgoing`; the driver sends them in order on the stream.
            ConnectionState::TransmitTlsData(state) => {
                state.done();
                Step::Continue
            }
            ConnectionState::BlockedHandshake => Step::Blocked,
            ConnectionState::WriteTraffic(_) => Step::Done,
            ConnectionState::ReadTraffic(_) | ConnectionState::ReadEarlyData(_) => {
                // No application data is exchanged over the stream before keys are taken.
                return Err(SessionError::Tls(rustls::Error::General(
                    "unexpected application data".into(),
                )));
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(SessionError::Closed)
            }
            _ => Step::Blocked,
        };
        $incoming.drain(..discard);
        // A server may write 0.5-RTT data before the client's Finished: not done until the
        // client is authenticated.
        match step {
            Step::Done if $conn.is_handshaking() => Step::Blocked,
            other => other,
        }
    }};
}

impl Session {
    /// Dials `peer` (this node has the lower id).
    pub fn client(configs: &TlsConfigs, peer: PeerName) -> Result<Session, SessionError> {
        let name = peer.server_name().map_err(SessionError::PeerIdentity)?;
        let conn = UnbufferedClientConnection::new(configs.client.clone(), name)
            .map_err(SessionError::Tls)?;
        Ok(Session {
            conn: Conn::Client(Box::new(conn)),
            peer,
            incoming: Vec::new(),
            outgoing: Vec::new(),
        })
    }

    /// Accepts a stream from the address of `expected` (this node has the higher id).
    pub fn server(configs: &TlsConfigs, expected: PeerName) -> Result<Session, SessionError> {
        let conn =
            UnbufferedServerConnection::new(configs.server.clone()).map_err(SessionError::Tls)?;
        Ok(Session {
            conn: Conn::Server(Box::new(conn)),
            peer: expected,
            incoming: Vec::new(),
            outgoing: Vec::new(),
        })
    }

    /// The node this session is with (or expected to be with).
    pub fn peer(&self) -> &PeerName {
        &self.peer
    }

    /// Appends bytes received on the stream.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        if matches!(self.conn, Conn::Over) && !bytes.is_empty() {
            return Err(SessionError::RefusedByPeer);
        }
        if self.incoming.len() + bytes.len() > INCOMING_BYTES_MAX {
            return Err(SessionError::TooMuchInput);
        }
        self.incoming.extend_from_slice(bytes);
        Ok(())
    }

    /// Bytes waiting to be sent on the stream.
    pub fn outgoing(&self) -> &[u8] {
        &self.outgoing
    }

    /// Drops the first `n` outgoing bytes (they were sent).
    pub fn consume_outgoing(&mut self, n: usize) {
        self.outgoing.drain(..n.min(self.outgoing.len()));
    }

    /// Runs the handshake as far as the received bytes allow. `Ok(Some(..))` once: the
    /// session is established and authenticated; send what is still in
    /// [`Session::outgoing`] (the client's Finished) before closing anything.
    pub fn advance(&mut self) -> Result<Option<Established>, SessionError> {
        loop {
            let step = match &mut self.conn {
                Conn::Client(conn) => step!(conn, self.incoming, self.outgoing),
                Conn::Server(conn) => step!(conn, self.incoming, self.outgoing),
                Conn::Over => return Err(SessionError::Finished),
            };
            match step {
                Step::Continue => continue,
                Step::Blocked => return Ok(None),
                Step::Done => return self.establish().map(Some),
            }
        }
    }

    fn establish(&mut self) -> Result<Established, SessionError> {
        let conn = core::mem::replace(&mut self.conn, Conn::Over);
        let (is_client, certs, secrets) = match conn {
            Conn::Client(conn) => {
                let certs = conn.peer_certificates().map(<[_]>::to_vec);
                let secrets = conn
                    .dangerous_into_kernel_connection()
                    .map_err(SessionError::Tls)?
                    .0;
                (true, certs, secrets)
            }
            Conn::Server(conn) => {
                let certs = conn.peer_certificates().map(<[_]>::to_vec);
                let secrets = conn
                    .dangerous_into_kernel_connection()
                    .map_err(SessionError::Tls)?
                    .0;
                (false, certs, secrets)
            }
            Conn::Over => return Err(SessionError::Finished),
        };
        let certs = certs.ok_or(SessionError::PeerIdentity(IdentityError::NoCertificate))?;
        let leaf = certs
            .first()
            .ok_or(SessionError::PeerIdentity(IdentityError::NoCertificate))?;
        check_peer(leaf, &self.peer).map_err(SessionError::PeerIdentity)?;
        let tx = traffic_secret(&secrets.tx.1)?;
        let rx = traffic_secret(&secrets.rx.1)?;
        let keys = derive_keys(is_client, &tx, &rx);
        Ok(Established {
            peer: self.peer.clone(),
            keys,
        })
    }
}

/// One direction's traffic key and IV, concatenated (zeroized on drop).
struct TrafficSecret([u8; 44]);

impl Drop for TrafficSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

fn traffic_secret(secret: &ConnectionTrafficSecrets) -> Result<TrafficSecret, SessionError> {
    match secret {
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            let mut bytes = [0u8; 44];
            bytes[..32].copy_from_slice(key.as_ref());
            bytes[32..].copy_from_slice(iv.as_ref());
            Ok(TrafficSecret(bytes))
        }
        _ => Err(SessionError::Tls(rustls::Error::General(
            "unexpected cipher suite".into(),
        ))),
    }
}

fn expand(ikm: &[u8], label: &[u8], out: &mut [u8]) {
    Hkdf::<Sha256>::new(Some(KEY_SALT), ikm)
        .expand(label, out)
        .expect("HKDF-SHA256 output of at most 255 blocks");
}

/// Datagram keys from the two traffic secrets (module docs). Both ends compute the same
/// client→server and server→client keys and the same key id.
fn derive_keys(is_client: bool, tx: &TrafficSecret, rx: &TrafficSecret) -> SessionKeys {
    let (c2s, s2c) = if is_client { (tx, rx) } else { (rx, tx) };
    let mut c2s_key = [0u8; KEY_BYTES];
    let mut s2c_key = [0u8; KEY_BYTES];
    expand(&c2s.0, b"seal client to server", &mut c2s_key);
    expand(&s2c.0, b"seal server to client", &mut s2c_key);
    let mut both = [0u8; 88];
    both[..44].copy_from_slice(&c2s.0);
    both[44..].copy_from_slice(&s2c.0);
    let mut id = [0u8; 4];
    expand(&both, b"key id", &mut id);
    both.zeroize();
    let keys = if is_client {
        SessionKeys {
            key_id: u32::from_be_bytes(id),
            send: c2s_key,
            receive: s2c_key,
        }
    } else {
        SessionKeys {
            key_id: u32::from_be_bytes(id),
            send: s2c_key,
            receive: c2s_key,
        }
    };
    c2s_key.zeroize();
    s2c_key.zeroize();
    keys
}
