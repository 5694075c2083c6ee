//! The front door's DNS responder logic: one query datagram in, one reply datagram (or
//! nothing) out. Host-tested; the kernel's `netstack::frontdoor::dns` only moves datagrams.
//!
//! Wire format through `simple-dns` (no_std + alloc), so parsing untrusted bytes is a
//! well-kept crate's job. Answers, authoritative for the zone `xylem`:
//! - `A <service>.xylem` (class IN or ANY, type A or ANY) → the service's address, TTL
//!   [`TTL_S`] (an address never changes for the life of a service; only its owner moves);
//! - another type for an existing name → NOERROR without answers (NODATA);
//! - any other name → NXDOMAIN;
//! - more or fewer than one question → FORMERR; an opcode other than QUERY → NOTIMP;
//! - bytes that do not parse but carry a query header → FORMERR with the query's id;
//! - a response, or fewer than 12 bytes → no reply at all (never answer a response: two
//!   responders could otherwise bounce datagrams forever).

use alloc::string::String;
use alloc::vec::Vec;
use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, OPCODE, QCLASS, QTYPE, RCODE, TYPE};

/// The UDP port.
pub const PORT: u16 = 53;
/// Largest query considered (classic DNS over UDP).
pub const QUERY_BYTES_MAX: usize = 512;
/// TTL of an answer, seconds.
pub const TTL_S: u32 = 60;
/// The zone.
pub const ZONE: &str = "xylem";

/// Why no reply was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silent {
    /// Shorter than a DNS header.
    TooShort,
    /// Longer than [`QUERY_BYTES_MAX`].
    TooLong,
    /// A response, not a query.
    NotAQuery,
    /// The reply could not be encoded (never expected).
    Encode,
}

/// What kind of reply went out (for counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replied {
    Answer,
    NoData,
    NxDomain,
    FormErr,
    NotImp,
}

/// The service name a query name asks for (`web.xylem`, any case, optional trailing dot).
pub fn service_of(qname: &str) -> Option<String> {
    let name = qname
        .strip_suffix('.')
        .unwrap_or(qname)
        .to_ascii_lowercase();
    let service = name.strip_suffix(ZONE)?.strip_suffix('.')?;
    (!service.is_empty() && !service.contains('.')).then(|| String::from(service))
}

/// Answers `query`; `lookup(service)` gives a service's address.
pub fn respond(
    query: &[u8],
    lookup: impl Fn(&str) -> Option<[u8; 4]>,
) -> Result<(Vec<u8>, Replied), Silent> {
    if query.len() < 12 {
        return Err(Silent::TooShort);
    }
    if query.len() > QUERY_BYTES_MAX {
        return Err(Silent::TooLong);
    }
    if query[2] & 0x80 != 0 {
        return Err(Silent::NotAQuery);
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let Ok(packet) = Packet::parse(query) else {
        return Ok((bare_reply(query, 1), Replied::FormErr));
    };
    if packet.opcode() != OPCODE::StandardQuery {
        return Ok((bare_reply(query, 4), Replied::NotImp));
    }
    if packet.questions.len() != 1 {
        return Ok((bare_reply(query, 1), Replied::FormErr));
    }
    let question = packet.questions[0].clone();
    let mut reply = Packet::new_reply(id);
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    let address = service_of(&alloc::format!("{}", question.qname)).and_then(|s| lookup(&s));
    let class_ok = matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
    let type_ok = matches!(question.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY);
    let replied = match address {
        None => {
            *reply.rcode_mut() = RCODE::NameError;
            Replied::NxDomain
        }
        Some(ip) if class_ok && type_ok => {
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                TTL_S,
                RData::A(A {
                    address: u32::from_be_bytes(ip),
                }),
            ));
            Replied::Answer
        }
        Some(_) => Replied::NoData,
    };
    reply.questions.push(question);
    let bytes = reply.build_bytes_vec().map_err(|_| Silent::Encode)?;
    Ok((bytes, replied))
}

/// A query for `A <name>` with `id` (for clients: the gateway, tests).
pub fn query(id: u16, name: &str) -> Option<Vec<u8>> {
    let mut q = Packet::new_query(id);
    q.questions.push(simple_dns::Question::new(
        simple_dns::Name::new(name).ok()?,
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    q.build_bytes_vec().ok()
}

/// What a reply to [`query`] said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Address([u8; 4]),
    NxDomain,
    /// Another rcode, or no A record.
    Other,
}

/// Reads the reply to query `id`; `None` if it is not one (wrong id, not a response,
/// malformed).
pub fn parse_reply(bytes: &[u8], id: u16) -> Option<Answer> {
    let p = Packet::parse(bytes).ok()?;
    if p.id() != id || !p.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    if p.rcode() == RCODE::NameError {
        return Some(Answer::NxDomain);
    }
    let a = p.answers.iter().find_map(|rr| match &rr.rdata {
        RData::A(a) => Some(a.address.to_be_bytes()),
        _ => None,
    });
    Some(a.map_or(Answer::Other, Answer::Address))
}

/// A header-only reply with `rcode`, for queries that cannot be answered properly.
fn bare_reply(query: &[u8], rcode: u8) -> Vec<u8> {
    let mut r = Vec::from(&query[..12]);
    // QR = 1, keep the opcode and RD, AA = 1; RA = 0, Z = 0, the rcode.
    r[2] = 0x80 | (query[2] & 0x79) | 0x04;
    r[3] = rcode & 0x0f;
    r[4..12].fill(0);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::Name;
    use simple_dns::Question;

    fn query(name: &str, qtype: QTYPE) -> Vec<u8> {
        let mut q = Packet::new_query(0x1234);
        q.set_flags(PacketFlag::RECURSION_DESIRED);
        q.questions.push(Question::new(
            Name::new_unchecked(name),
            qtype,
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        q.build_bytes_vec().unwrap()
    }

    fn lookup(s: &str) -> Option<[u8; 4]> {
        (s == "web").then_some([169, 254, 77, 200])
    }

    #[test]
    fn a_client_query_round_trips() {
        let q = super::query(7, "web.xylem").unwrap();
        let (reply, _) = respond(&q, lookup).unwrap();
        assert_eq!(
            parse_reply(&reply, 7),
            Some(Answer::Address([169, 254, 77, 200]))
        );
        assert_eq!(parse_reply(&reply, 8), None, "another query's reply");
        let q = super::query(9, "nope.xylem").unwrap();
        let (reply, _) = respond(&q, lookup).unwrap();
        assert_eq!(parse_reply(&reply, 9), Some(Answer::NxDomain));
        assert_eq!(parse_reply(&q, 9), None, "a query is not a reply");
    }

    #[test]
    fn names_in_the_zone() {
        assert_eq!(service_of("web.xylem").as_deref(), Some("web"));
        assert_eq!(service_of("WEB.Xylem.").as_deref(), Some("web"));
        assert_eq!(service_of("xylem"), None);
        assert_eq!(service_of(".xylem"), None);
        assert_eq!(service_of("a.b.xylem"), None);
        assert_eq!(service_of("web.xylem.com"), None);
        assert_eq!(service_of("webxylem"), None);
    }

    #[test]
    fn answers_a_for_a_service() {
        let (bytes, kind) = respond(&query("web.xylem", QTYPE::TYPE(TYPE::A)), lookup).unwrap();
        assert_eq!(kind, Replied::Answer);
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert!(p.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
        assert!(p.has_flags(PacketFlag::RECURSION_DESIRED));
        assert_eq!(p.rcode(), RCODE::NoError);
        assert_eq!(p.questions.len(), 1);
        assert_eq!(p.answers.len(), 1);
        match &p.answers[0].rdata {
            RData::A(a) => assert_eq!(a.address.to_be_bytes(), [169, 254, 77, 200]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_names_are_nxdomain_and_other_types_nodata() {
        let (bytes, kind) = respond(&query("db.xylem", QTYPE::TYPE(TYPE::A)), lookup).unwrap();
        assert_eq!(kind, Replied::NxDomain);
        assert_eq!(Packet::parse(&bytes).unwrap().rcode(), RCODE::NameError);
        let (_, kind) = respond(&query("example.org", QTYPE::TYPE(TYPE::A)), lookup).unwrap();
        assert_eq!(kind, Replied::NxDomain);
        let (bytes, kind) = respond(&query("web.xylem", QTYPE::TYPE(TYPE::AAAA)), lookup).unwrap();
        assert_eq!(kind, Replied::NoData);
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!((p.rcode(), p.answers.len()), (RCODE::NoError, 0));
    }

    #[test]
    fn malformed_queries_get_formerr_or_silence() {
        assert_eq!(respond(&[0; 11], lookup), Err(Silent::TooShort));
        assert_eq!(respond(&[0; 513], lookup), Err(Silent::TooLong));
        let mut response = query("web.xylem", QTYPE::TYPE(TYPE::A));
        response[2] |= 0x80;
        assert_eq!(respond(&response, lookup), Err(Silent::NotAQuery));
        // A header claiming a question that is not there.
        let mut cut = query("web.xylem", QTYPE::TYPE(TYPE::A));
        cut.truncate(15);
        let (bytes, kind) = respond(&cut, lookup).unwrap();
        assert_eq!(kind, Replied::FormErr);
        assert_eq!(&bytes[..2], &[0x12, 0x34]);
        assert_eq!(bytes[3] & 0x0f, 1);
        // Opcode STATUS: not implemented.
        let mut status = query("web.xylem", QTYPE::TYPE(TYPE::A));
        status[2] = (status[2] & 0x87) | (2 << 3);
        assert_eq!(respond(&status, lookup).unwrap().1, Replied::NotImp);
    }

    /// Random bytes (seeded) never panic, and every reply is a response.
    #[test]
    fn garbage_never_panics() {
        let mut seed: u64 = 0xd15ea5e;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let good = query("web.xylem", QTYPE::TYPE(TYPE::A));
        for round in 0..20_000 {
            let len = (next() % 600) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // Mutations of a good query reach deeper into the parser.
                bytes = good.clone();
                for _ in 0..(1 + next() % 4) {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
                bytes.truncate(bytes.len() - (next() % 4) as usize);
            }
            if let Ok((reply, _)) = respond(&bytes, lookup) {
                assert!(reply.len() >= 12);
                assert!(reply[2] & 0x80 != 0);
            }
        }
    }
}
