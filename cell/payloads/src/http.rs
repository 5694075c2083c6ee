//! The `http` payload's protocol logic, without I/O: one [`Conn`] per client connection
//! takes received bytes, parses requests with `httparse` (never by hand), and produces the
//! answers to send. Host-tested (`cargo test --lib` in `cell/payloads`).
//!
//! Rules:
//! - `GET /` → 200 `node=<node> cell=<cell> requests=<n>` (then ` greeting=<g>` when the
//!   payload was given one: a version a rolling update can tell apart); `GET /healthz` → 200
//!   `ok`;
//!   `HEAD` of either → the same head without a body.
//! - Another path → 404; another method → 405 (with `Allow: GET, HEAD`).
//! - Malformed request → 400 and close; a head longer than [`HEAD_BYTES_MAX`] or a declared
//!   body longer than [`BODY_BYTES_MAX`] → 413 and close; more than [`HEADERS_MAX`] headers
//!   → 431 and close; `Transfer-Encoding` (chunked bodies) → 501 and close.
//! - A body within the limit (`Content-Length`) is read and ignored.
//! - Keep-alive: HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 closes
//!   unless `Connection: keep-alive`. Pipelined requests are answered in order.
//! - The input buffer never holds more than one request's head and body.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Longest request head (request line and headers) accepted.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Longest request body accepted.
pub const BODY_BYTES_MAX: usize = 16 * 1024;
/// Most headers in one request.
pub const HEADERS_MAX: usize = 32;

/// Who answers: the node's name, the cell's cluster-wide name and its greeting, if any.
#[derive(Clone, Debug)]
pub struct Identity {
    pub node: String,
    pub cell: String,
    pub greeting: Option<String>,
}

/// What [`Conn::next_request`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A request was answered (its answer is in the output).
    Answered,
    /// No complete request is buffered.
    NeedMore,
    /// The connection is closing: nothing more will be answered.
    Close,
}

/// One client connection's protocol state.
#[derive(Debug, Default)]
pub struct Conn {
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
    close: bool,
    peer_closed: bool,
}

struct Answer<'a> {
    status: u16,
    reason: &'a str,
    body: &'a str,
    head_only: bool,
    close: bool,
    allow: bool,
}

impl Conn {
    /// A fresh connection.
    pub fn new() -> Conn {
        Conn::default()
    }

    /// Bytes the peer sent.
    pub fn received(&mut self, bytes: &[u8]) {
        if !self.close {
            self.input.extend_from_slice(bytes);
        }
    }

    /// The peer closed its side: what is buffered is all there will be.
    pub fn peer_closed(&mut self) {
        self.peer_closed = true;
    }

    /// Whether answers wait to be sent.
    pub fn has_output(&self) -> bool {
        self.sent < self.output.len()
    }

    /// The bytes still to send.
    pub fn output(&self) -> &[u8] {
        &self.output[self.sent..]
    }

    /// `n` bytes of [`Conn::output`] were sent.
    pub fn consumed(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.output.len());
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
        }
    }

    /// Whether the connection should close once its output is sent.
    pub fn wants_close(&self) -> bool {
        self.close || (self.peer_closed && self.input.is_empty())
    }

    /// Parses and answers the next buffered request; `count` is the request number to
    /// report in `GET /`.
    pub fn next_request(&mut self, identity: &Identity, count: u64) -> Outcome {
        if self.close {
            return Outcome::Close;
        }
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(&self.input) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if self.input.len() > HEAD_BYTES_MAX {
                    return self.fail(413, "Payload Too Large");
                }
                if self.peer_closed {
                    // A partial request at the end of the stream is dropped.
                    self.close = true;
                    return Outcome::Close;
                }
                return Outcome::NeedMore;
            }
            Err(httparse::Error::TooManyHeaders) => {
                return self.fail(431, "Request Header Fields Too Large")
            }
            Err(_) => return self.fail(400, "Bad Request"),
        };
        if head_len > HEAD_BYTES_MAX {
            return self.fail(413, "Payload Too Large");
        }
        let version = request.version.unwrap_or(1);
        let mut body_len = 0usize;
        let mut keep_alive = version >= 1;
        for header in request.headers.iter() {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                let Some(len) = core::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                else {
                    return self.fail(400, "Bad Request");
                };
                body_len = len;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return self.fail(501, "Not Implemented");
            } else if name.eq_ignore_ascii_case("connection") {
                let value = header.value;
                if value.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if value.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
        if body_len > BODY_BYTES_MAX {
            return self.fail(413, "Payload Too Large");
        }
        if self.input.len() < head_len + body_len {
            if self.peer_closed {
                self.close = true;
                return Outcome::Close;
            }
            return Outcome::NeedMore;
        }
        let method = request.method.unwrap_or("");
        let path = request.path.unwrap_or("");
        let head_only = method == "HEAD";
        let mut body = String::new();
        let (status, reason) = match (method, path) {
            ("GET" | "HEAD", "/") => {
                let _ = write!(
                    body,
                    "node={} cell={} requests={count}",
                    identity.node, identity.cell
                );
                if let Some(greeting) = &identity.greeting {
                    let _ = write!(body, " greeting={greeting}");
                }
                body.push('\n');
                (200, "OK")
            }
            ("GET" | "HEAD", "/healthz") => {
                body.push_str("ok\n");
                (200, "OK")
            }
            ("GET" | "HEAD", _) => {
                body.push_str("not found\n");
                (404, "Not Found")
            }
            _ => {
                body.push_str("method not allowed\n");
                (405, "Method Not Allowed")
            }
        };
        self.input.drain(..head_len + body_len);
        self.answer(&Answer {
            status,
            reason,
            body: &body,
            head_only,
            close: !keep_alive,
            allow: status == 405,
        });
        if !keep_alive {
            self.close = true;
        }
        Outcome::Answered
    }

    /// Answers an error and closes.
    fn fail(&mut self, status: u16, reason: &str) -> Outcome {
        let mut body = String::from(reason);
        body.push('\n');
        self.answer(&Answer {
            status,
            reason,
            body: &body,
            head_only: false,
            close: true,
            allow: false,
        });
        self.input.clear();
        self.close = true;
        Outcome::Answered
    }

    fn answer(&mut self, answer: &Answer<'_>) {
        let mut head = String::new();
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nServer: xylem-http\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n",
            answer.status,
            answer.reason,
            answer.body.len(),
            if answer.close { "close" } else { "keep-alive" }
        );
        if answer.allow {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        self.output.extend_from_slice(head.as_bytes());
        if !answer.head_only {
            self.output.extend_from_slice(answer.body.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    fn identity() -> Identity {
        Identity {
            node: "worker-1".to_string(),
            cell: "web/1@7".to_string(),
            greeting: None,
        }
    }

    #[test]
    fn a_greeting_follows_the_counter() {
        let mut conn = Conn::new();
        conn.received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let who = Identity {
            greeting: Some("hello-v2".to_string()),
            ..identity()
        };
        assert_eq!(conn.next_request(&who, 4), Outcome::Answered);
        let out = text(&mut conn);
        assert!(
            out.ends_with("\r\n\r\nnode=worker-1 cell=web/1@7 requests=4 greeting=hello-v2\n"),
            "{out}"
        );
    }

    fn run(conn: &mut Conn, input: &[u8]) -> std::vec::Vec<Outcome> {
        conn.received(input);
        let mut outcomes = std::vec::Vec::new();
        let mut count = 0;
        loop {
            let outcome = conn.next_request(&identity(), count + 1);
            outcomes.push(outcome);
            match outcome {
                Outcome::Answered => count += 1,
                _ => return outcomes,
            }
        }
    }

    fn text(conn: &mut Conn) -> std::string::String {
        let out = std::string::String::from_utf8(conn.output().to_vec()).unwrap();
        let n = conn.output().len();
        conn.consumed(n);
        out
    }

    #[test]
    fn get_root_names_node_cell_and_counter() {
        let mut conn = Conn::new();
        run(&mut conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let out = text(&mut conn);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.ends_with("\r\n\r\nnode=worker-1 cell=web/1@7 requests=1\n"),
            "{out}"
        );
        assert!(out.contains("Content-Length: 38\r\n") && out.contains("Connection: keep-alive"));
        assert!(!conn.wants_close());
    }

    #[test]
    fn healthz_404_405_and_head() {
        for (request, status) in [
            (&b"GET /healthz HTTP/1.1\r\n\r\n"[..], "200 OK"),
            (b"GET /nope HTTP/1.1\r\n\r\n", "404 Not Found"),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                "405 Method Not Allowed",
            ),
        ] {
            let mut conn = Conn::new();
            assert_eq!(run(&mut conn, request)[0], Outcome::Answered);
            let out = text(&mut conn);
            assert!(
                out.starts_with(&std::format!("HTTP/1.1 {status}\r\n")),
                "{out}"
            );
            assert!(
                !conn.wants_close(),
                "errors that are not the client's fault keep it"
            );
        }
        let mut conn = Conn::new();
        run(&mut conn, b"HEAD /healthz HTTP/1.1\r\n\r\n");
        let out = text(&mut conn);
        assert!(
            out.ends_with("\r\n\r\n") && out.contains("Content-Length: 3"),
            "{out}"
        );
    }

    #[test]
    fn malformed_requests_get_400_and_close() {
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            let mut conn = Conn::new();
            assert_eq!(
                run(&mut conn, bad)[..2],
                [Outcome::Answered, Outcome::Close]
            );
            assert!(text(&mut conn).starts_with("HTTP/1.1 400 Bad Request"));
            assert!(conn.wants_close());
        }
        let mut conn = Conn::new();
        run(&mut conn, b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n");
        assert!(text(&mut conn).starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn oversized_heads_and_bodies_get_413() {
        let mut conn = Conn::new();
        let mut long = std::vec::Vec::from(&b"GET / HTTP/1.1\r\nX: "[..]);
        long.resize(HEAD_BYTES_MAX + 10, b'a');
        assert_eq!(run(&mut conn, &long)[0], Outcome::Answered);
        assert!(text(&mut conn).starts_with("HTTP/1.1 413"));
        assert!(conn.wants_close());
        let mut conn = Conn::new();
        let big = std::format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        run(&mut conn, big.as_bytes());
        assert!(text(&mut conn).starts_with("HTTP/1.1 413"));
        let mut conn = Conn::new();
        let mut many = std::string::String::from("GET / HTTP/1.1\r\n");
        for i in 0..HEADERS_MAX + 1 {
            many.push_str(&std::format!("H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        run(&mut conn, many.as_bytes());
        assert!(text(&mut conn).starts_with("HTTP/1.1 431"));
        let mut conn = Conn::new();
        run(
            &mut conn,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(text(&mut conn).starts_with("HTTP/1.1 501"));
    }

    #[test]
    fn keep_alive_pipelining_and_partial_input() {
        let mut conn = Conn::new();
        let outcomes = run(
            &mut conn,
            b"GET / HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\nGET / HT",
        );
        assert_eq!(
            outcomes,
            [Outcome::Answered, Outcome::Answered, Outcome::NeedMore]
        );
        let out = text(&mut conn);
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2);
        assert!(out.contains("requests=1") && !out.contains("requests=2"));
        assert_eq!(
            run(&mut conn, b"TP/1.1\r\nConnection: close\r\n\r\n")[0],
            Outcome::Answered
        );
        let out = text(&mut conn);
        assert!(out.contains("Connection: close") && conn.wants_close());
        assert_eq!(conn.next_request(&identity(), 9), Outcome::Close);
    }

    #[test]
    fn http10_closes_unless_asked_and_bodies_are_skipped() {
        let mut conn = Conn::new();
        run(&mut conn, b"GET / HTTP/1.0\r\n\r\n");
        assert!(conn.wants_close());
        let mut conn = Conn::new();
        run(
            &mut conn,
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        );
        assert!(!conn.wants_close());
        let mut conn = Conn::new();
        // The body arrives in two pieces and is not taken for the next request.
        assert_eq!(
            run(&mut conn, b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")[0],
            Outcome::NeedMore
        );
        assert_eq!(
            run(&mut conn, b"cdeGET /healthz HTTP/1.1\r\n\r\n")[..2],
            [Outcome::Answered, Outcome::Answered]
        );
        let out = text(&mut conn);
        assert!(
            out.starts_with("HTTP/1.1 405") && out.contains("HTTP/1.1 200 OK"),
            "{out}"
        );
    }

    #[test]
    fn end_of_stream_mid_request_closes_without_answer() {
        let mut conn = Conn::new();
        conn.received(b"GET / HT");
        conn.peer_closed();
        assert_eq!(conn.next_request(&identity(), 1), Outcome::Close);
        assert!(!conn.has_output() && conn.wants_close());
        let mut conn = Conn::new();
        conn.peer_closed();
        assert!(
            conn.wants_close(),
            "an idle connection the peer closed goes"
        );
    }

    #[test]
    fn partial_writes_keep_the_rest() {
        let mut conn = Conn::new();
        run(&mut conn, b"GET /healthz HTTP/1.1\r\n\r\n");
        let total = conn.output().len();
        conn.consumed(10);
        assert_eq!(conn.output().len(), total - 10);
        conn.consumed(1000);
        assert!(!conn.has_output());
    }

    #[test]
    fn random_bytes_never_panic_and_always_end() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut conn = Conn::new();
            let mut input = std::vec::Vec::new();
            let len = (state % 300) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                input.push(if state % 4 == 0 {
                    b"\r\n: /GET"[(state % 8) as usize]
                } else {
                    state as u8
                });
            }
            let outcomes = run(&mut conn, &input);
            assert!(outcomes.len() <= input.len() / 16 + 2);
        }
    }
}
