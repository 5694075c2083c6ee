//! Host tests of identity checks, the mutual-TLS handshake and the datagram keys, over
//! in-memory pipes with certificates made by rcgen (as `cargo xtask` makes them).

use std::sync::Mutex;

use net::seal::{Keyring, KeyringConfig};
use net::{Header, Kind, LocalIdentity, MAX_DATAGRAM_LEN};
use pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ED25519,
};
use rustls::crypto::{GetRandomFailed, SecureRandom};
use trust::identity::{check_certificate, Identity, IdentityError, PeerName};
use trust::session::{Established, Session, SessionError, TlsConfigs};

/// 2026-06-01, inside every test certificate's validity.
const NOW: u64 = 1_780_272_000;

#[derive(Debug)]
struct TestRandom(Mutex<u64>);

impl SecureRandom for TestRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        // SplitMix64: deterministic and good enough to make distinct test keys.
        let mut state = self.0.lock().unwrap();
        for chunk in buf.chunks_mut(8) {
            *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

fn random() -> &'static TestRandom {
    static SEED: Mutex<u64> = Mutex::new(1);
    let mut seed = SEED.lock().unwrap();
    *seed += 1;
    Box::leak(Box::new(TestRandom(Mutex::new(*seed * 0x1234_5678))))
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn node_cert(ca: &Ca, id: u64, name: &str, years: (i32, i32)) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let who = PeerName::new(id, name);
    let mut params = CertificateParams::new(vec![who.dns_name(), who.id_dns_name()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} (id {id})"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

fn identity(ca: &Ca, id: u64, name: &str) -> Identity {
    let (cert, key) = node_cert(ca, id, name, (2025, 2030));
    identity_from(ca, id, name, cert, key)
}

fn identity_from(ca: &Ca, id: u64, name: &str, cert: Vec<u8>, key: Vec<u8>) -> Identity {
    Identity {
        me: PeerName::new(id, name),
        cert: CertificateDer::from(cert),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        ca: CertificateDer::from(ca.cert.der().to_vec()),
    }
}

fn configs(identity: &Identity) -> TlsConfigs {
    let configs = TlsConfigs::new(identity, random()).unwrap();
    configs.set_time(NOW);
    configs
}

type Outcome = Result<Established, SessionError>;

/// Runs a handshake between a dialler and an acceptor until both finish (or one fails).
fn handshake(client: &mut Session, server: &mut Session) -> (Outcome, Outcome) {
    let (mut c, mut s) = (None, None);
    for _ in 0..20 {
        if c.is_none() {
            match client.advance() {
                Ok(Some(done)) => c = Some(Ok(done)),
                Ok(None) => {}
                Err(e) => c = Some(Err(e)),
            }
        }
        let bytes = client.outgoing().to_vec();
        client.consume_outgoing(bytes.len());
        if s.is_none() && !bytes.is_empty() {
            if let Err(e) = server.receive(&bytes) {
                s = Some(Err(e));
            }
        }
        if s.is_none() {
            match server.advance() {
                Ok(Some(done)) => s = Some(Ok(done)),
                Ok(None) => {}
                Err(e) => s = Some(Err(e)),
            }
        }
        let bytes = server.outgoing().to_vec();
        server.consume_outgoing(bytes.len());
        if c.is_none() && !bytes.is_empty() {
            if let Err(e) = client.receive(&bytes) {
                c = Some(Err(e));
            }
        }
        if c.is_some() && s.is_some() {
            break;
        }
        // A side that failed stops talking; the other sees no more bytes.
        if c.as_ref().is_some_and(|r| r.is_err()) || s.as_ref().is_some_and(|r| r.is_err()) {
            break;
        }
    }
    (
        c.unwrap_or(Err(SessionError::Closed)),
        s.unwrap_or(Err(SessionError::Closed)),
    )
}

fn pair(client: &Identity, server: &Identity, expected_client: PeerName) -> (Outcome, Outcome) {
    let (cc, sc) = (configs(client), configs(server));
    let mut c = Session::client(&cc, server.me.clone()).unwrap();
    let mut s = Session::server(&sc, expected_client).unwrap();
    handshake(&mut c, &mut s)
}

#[test]
fn mutual_handshake_yields_mirrored_keys_that_seal() {
    let ca = ca("cluster");
    let (one, two) = (identity(&ca, 1, "worker-1"), identity(&ca, 2, "worker-2"));
    let (c, s) = pair(&one, &two, one.me.clone());
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(c.peer, two.me);
    assert_eq!(s.peer, one.me);
    assert_eq!(c.keys.key_id, s.keys.key_id);
    assert_eq!(c.keys.send, s.keys.receive);
    assert_eq!(c.keys.receive, s.keys.send);
    assert_ne!(c.keys.send, c.keys.receive);
    // The keys work with net::seal both ways.
    let mut r1 = Keyring::new(1, KeyringConfig::default());
    let mut r2 = Keyring::new(2, KeyringConfig::default());
    r1.install(2, &c.keys, 0).unwrap();
    r2.install(1, &s.keys, 0).unwrap();
    let header = Header {
        kind: Kind::Raft,
        cluster_id: 1,
        sender: 1,
        receiver: 2,
        seq: 0,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let mut out = vec![0u8; MAX_DATAGRAM_LEN];
    let n = r1.seal(&header, b"vote for me", &mut buf).unwrap();
    let local = LocalIdentity {
        cluster_id: 1,
        node_id: 2,
    };
    let opened = r2.open(&buf[..n], &local, 0, &mut out).unwrap();
    assert_eq!(opened.payload, b"vote for me");
}

#[test]
fn every_session_has_fresh_keys() {
    let ca = ca("cluster");
    let (one, two) = (identity(&ca, 1, "worker-1"), identity(&ca, 2, "worker-2"));
    let (a, _) = pair(&one, &two, one.me.clone());
    let (b, _) = pair(&one, &two, one.me.clone());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.keys.send, b.keys.send);
    assert_ne!(a.keys.key_id, b.keys.key_id);
}

#[test]
fn a_server_from_another_ca_is_refused_by_the_client() {
    let (ca1, ca2) = (ca("cluster"), ca("rogue"));
    let one = identity(&ca1, 1, "worker-1");
    // The rogue claims worker-2's name, with a certificate from its own CA.
    let (cert, key) = node_cert(&ca2, 2, "worker-2", (2025, 2030));
    let mut rogue = identity_from(&ca2, 2, "worker-2", cert, key);
    rogue.ca = CertificateDer::from(ca1.cert.der().to_vec()); // it even trusts our CA
    let (c, s) = pair(&one, &rogue, one.me.clone());
    assert!(matches!(c, Err(SessionError::Tls(_))), "{c:?}");
    assert!(s.is_err());
}

#[test]
fn a_client_from_another_ca_is_refused_by_the_server() {
    let (ca1, ca2) = (ca("cluster"), ca("rogue"));
    let two = identity(&ca1, 2, "worker-2");
    let (cert, key) = node_cert(&ca2, 1, "worker-1", (2025, 2030));
    let mut rogue = identity_from(&ca2, 1, "worker-1", cert, key);
    rogue.ca = CertificateDer::from(ca1.cert.der().to_vec());
    let (cc, sc) = (configs(&rogue), configs(&two));
    let mut c = Session::client(&cc, two.me.clone()).unwrap();
    let mut s = Session::server(&sc, PeerName::new(1, "worker-1")).unwrap();
    let (c_result, s_result) = handshake(&mut c, &mut s);
    assert!(
        matches!(s_result, Err(SessionError::Tls(_))),
        "{s_result:?}"
    );
    // In TLS 1.3 the client finishes before the server has checked its certificate, so it
    // may believe it is established; the server then closes the stream (the kernel forgets
    // a session's keys when its stream closes), and any late byte is a refusal too.
    if c_result.is_ok() {
        assert!(matches!(
            c.receive(&[21, 3, 3]),
            Err(SessionError::RefusedByPeer)
        ));
    }
}

#[test]
fn a_member_cannot_speak_from_another_members_address() {
    let ca = ca("cluster");
    let (one, two, three) = (
        identity(&ca, 1, "worker-1"),
        identity(&ca, 2, "worker-2"),
        identity(&ca, 3, "witness"),
    );
    // Node 3 connects from node 1's address: the server expects worker-1.
    let (_, s) = pair(&three, &two, one.me.clone());
    assert!(
        matches!(
            s,
            Err(SessionError::PeerIdentity(
                IdentityError::NameMismatch { .. }
            ))
        ),
        "{s:?}"
    );
    // A client dialling worker-2 gets witness's certificate: refused by name.
    let (cc, sc) = (configs(&one), configs(&three));
    let mut c = Session::client(&cc, two.me.clone()).unwrap();
    let mut s = Session::server(&sc, one.me.clone()).unwrap();
    let (c, _) = handshake(&mut c, &mut s);
    assert!(matches!(c, Err(SessionError::Tls(_))), "{c:?}");
}

#[test]
fn an_expired_peer_certificate_is_refused() {
    let ca = ca("cluster");
    let one = identity(&ca, 1, "worker-1");
    let (cert, key) = node_cert(&ca, 2, "worker-2", (2025, 2026));
    let two = identity_from(&ca, 2, "worker-2", cert, key);
    let (c, _) = pair(&one, &two, one.me.clone());
    assert!(matches!(c, Err(SessionError::Tls(_))), "{c:?}");
}

#[test]
fn self_check_names_the_failing_check() {
    let (ca1, ca2) = (ca("cluster"), ca("other"));
    let good = identity(&ca1, 2, "worker-2");
    assert_eq!(good.self_check(NOW), Ok(()));
    // Configured as another node than the certificate names.
    let mut wrong_name = identity(&ca1, 2, "worker-2");
    wrong_name.me = PeerName::new(2, "worker-3");
    assert_eq!(
        wrong_name.self_check(NOW),
        Err(IdentityError::NameMismatch {
            expected: "worker-3.node.xylem".into()
        })
    );
    let mut wrong_id = identity(&ca1, 2, "worker-2");
    wrong_id.me = PeerName::new(5, "worker-2");
    assert_eq!(
        wrong_id.self_check(NOW),
        Err(IdentityError::NameMismatch {
            expected: "id-5.node.xylem".into()
        })
    );
    // From another CA.
    let (cert, key) = node_cert(&ca2, 2, "worker-2", (2025, 2030));
    let foreign = identity_from(&ca1, 2, "worker-2", cert, key);
    assert_eq!(
        foreign.self_check(NOW),
        Err(IdentityError::NotFromClusterCa)
    );
    // Someone else's key.
    let mut stolen_cert = identity(&ca1, 2, "worker-2");
    stolen_cert.key = identity(&ca1, 2, "worker-2").key;
    assert_eq!(stolen_cert.self_check(NOW), Err(IdentityError::KeyMismatch));
    // Outside validity (RTC in 2031).
    assert!(matches!(
        good.self_check(1_924_992_000),
        Err(IdentityError::OutsideValidity { .. })
    ));
    // Garbage in every slot.
    let mut junk = identity(&ca1, 2, "worker-2");
    junk.cert = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(matches!(
        junk.self_check(NOW),
        Err(IdentityError::Malformed(_))
    ));
    let mut junk = identity(&ca1, 2, "worker-2");
    junk.key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![1, 2, 3]));
    assert_eq!(junk.self_check(NOW), Err(IdentityError::BadKey));
    let mut junk = identity(&ca1, 2, "worker-2");
    junk.ca = CertificateDer::from(vec![9; 40]);
    assert!(matches!(junk.self_check(NOW), Err(IdentityError::BadCa(_))));
    assert!(check_certificate(&good.cert, &good.ca, &good.me, NOW).is_ok());
}

#[test]
fn garbage_on_the_stream_fails_the_session_without_panicking() {
    let ca = ca("cluster");
    let (one, two) = (identity(&ca, 1, "worker-1"), identity(&ca, 2, "worker-2"));
    let sc = configs(&two);
    let mut state = 7u64;
    for round in 0..300 {
        let mut s = Session::server(&sc, one.me.clone()).unwrap();
        let len = 3 + (round * 37) % 600;
        let mut bytes = vec![0u8; len];
        for b in bytes.iter_mut() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (state >> 56) as u8;
        }
        if round % 3 == 0 {
            bytes[0] = 22; // handshake record type
            bytes[1] = 3;
            bytes[2] = 1;
        }
        let _ = s.receive(&bytes);
        let result = s.advance();
        assert!(
            !matches!(result, Ok(Some(_))),
            "garbage established a session"
        );
    }
    let mut s = Session::server(&sc, one.me.clone()).unwrap();
    assert!(matches!(
        s.receive(&vec![0u8; trust::session::INCOMING_BYTES_MAX + 1]),
        Err(SessionError::TooMuchInput)
    ));
}
