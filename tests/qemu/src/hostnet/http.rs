//! A minimal HTTP/1.1 client for tests and the benchmark: requests are written by hand,
//! responses parsed with `httparse` (heads) and `Content-Length` (bodies; the `http`
//! payload always sends one).

use std::time::{Duration, Instant};

use super::{HostStream, NetError};

/// Most headers a response may have.
const HEADERS_MAX: usize = 32;
/// Largest response accepted.
pub const RESPONSE_BYTES_MAX: usize = 1 << 20;

/// A parsed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a response did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not HTTP (httparse's complaint).
    Malformed(String),
    /// No or a bad `Content-Length`.
    NoLength,
    /// Longer than [`RESPONSE_BYTES_MAX`].
    TooLong,
}

/// Parses one response from the start of `bytes`: `Ok(None)` if incomplete, else the
/// response and how many bytes it took.
pub fn parse_response(bytes: &[u8]) -> Result<Option<(Response, usize)>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() > RESPONSE_BYTES_MAX => {
            return Err(ParseError::TooLong)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ParseError::Malformed(e.to_string())),
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let body_len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .ok_or(ParseError::NoLength)?;
    if head_len + body_len > RESPONSE_BYTES_MAX {
        return Err(ParseError::TooLong);
    }
    if bytes.len() < head_len + body_len {
        return Ok(None);
    }
    Ok(Some((
        Response {
            status: response.code.unwrap_or(0),
            headers,
            body: bytes[head_len..head_len + body_len].to_vec(),
        },
        head_len + body_len,
    )))
}

/// The bytes of `GET path` on a keep-alive connection.
pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: xylem\r\nUser-Agent: xylem-hostnet\r\n\r\n").into_bytes()
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    Net(NetError),
    Parse(ParseError),
    /// The server closed before a whole response arrived.
    Closed,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Net(e) => write!(f, "{e}"),
            RequestError::Parse(e) => write!(f, "bad response: {e:?}"),
            RequestError::Closed => write!(f, "closed before a whole response"),
        }
    }
}

/// Sends `request` (raw bytes) on `stream` and reads one response within `timeout`.
/// Bytes after the response (there should be none) are left unread.
pub fn exchange(
    stream: &mut HostStream,
    request: &[u8],
    timeout: Duration,
) -> Result<Response, RequestError> {
    let deadline = Instant::now() + timeout;
    stream
        .write_all(request, timeout)
        .map_err(RequestError::Net)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some((response, _)) = parse_response(&got).map_err(RequestError::Parse)? {
            return Ok(response);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match stream.read(&mut buf, left).map_err(RequestError::Net)? {
            0 => return Err(RequestError::Closed),
            n => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET path` on `stream` (keep-alive).
pub fn get(
    stream: &mut HostStream,
    path: &str,
    timeout: Duration,
) -> Result<Response, RequestError> {
    exchange(stream, &get_request(path), timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_their_bodies_and_lengths() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\nHTTP/1.1";
        let (response, used) = parse_response(raw).unwrap().unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "ok\n");
        assert_eq!(response.header("connection"), Some("keep-alive"));
        assert_eq!(used, raw.len() - "HTTP/1.1".len());
        assert_eq!(parse_response(&raw[..20]), Ok(None));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"),
            Ok(None)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ParseError::NoLength)
        );
        assert!(matches!(
            parse_response(b"NOPE\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn requests_are_keep_alive_gets() {
        let request = String::from_utf8(get_request("/healthz")).unwrap();
        assert!(request.starts_with("GET /healthz HTTP/1.1\r\n") && request.ends_with("\r\n\r\n"));
    }
}
