//! The HTTP/1.1 framing of the engine↔function protocol ([`crate::invoke`]), written once for
//! the engine (async), the function server (blocking), the tests and the socket benchmark.
//!
//! Only what the protocol uses: `content-length` bodies (no chunking), `connection: close`,
//! a few named headers. Heads are read line by line within [`MAX_HEAD`] bytes and bodies
//! within a caller's bound, never into a buffer sized by what the peer announces. Parsing is
//! [`Head::parse`] over bytes; [`HeadReader`] gathers a head from lines, so a blocking reader
//! ([`read_head`]) and an async one (the engine's) share everything but the read itself.

use std::io::{self, BufRead, Read};

/// Longest head accepted.
pub const MAX_HEAD: usize = 16 << 10;

/// A request's or a response's head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    /// A request's method and path (empty in a response).
    pub method: String,
    pub path: String,
    /// A response's status (0 in a request).
    pub status: u16,
    pub content_length: usize,
    /// The peer closes the connection after this message (`connection: close`, HTTP/1.0).
    pub close: bool,
    /// The head as it came, header names lowercased: one allocation for every header.
    bytes: Vec<u8>,
    /// Where each header's name and value are in `bytes` (values trimmed).
    fields: [Field; MAX_HEADERS],
    count: usize,
}

/// Most headers in a head.
const MAX_HEADERS: usize = 32;

/// A header's name and value: their spans in [`Head`]'s bytes (a head is within
/// [`MAX_HEAD`], so `u16` offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Field {
    name: (u16, u16),
    value: (u16, u16),
}

/// Which head a [`HeadReader`] expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Head {
    /// Parses a whole head (through its empty line).
    pub fn parse(kind: Kind, bytes: &[u8]) -> io::Result<Head> {
        if bytes.len() > MAX_HEAD + 1 {
            return Err(invalid("head too large"));
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        // The parsed headers stay in `slots` (the first `count`): no copy of the list.
        let (mut head, count, version) = match kind {
            Kind::Request => {
                let mut req = httparse::Request::new(&mut slots);
                match req.parse(bytes) {
                    Ok(httparse::Status::Complete(_)) => {}
                    Ok(httparse::Status::Partial) => return Err(invalid("incomplete head")),
                    Err(e) => return Err(invalid(format!("malformed request: {e}"))),
                }
                let head = Head {
                    method: req.method.unwrap_or_default().to_string(),
                    path: req.path.unwrap_or_default().to_string(),
                    ..Head::default()
                };
                (head, req.headers.len(), req.version)
            }
            Kind::Response => {
                let mut resp = httparse::Response::new(&mut slots);
                match resp.parse(bytes) {
                    Ok(httparse::Status::Complete(_)) => {}
                    Ok(httparse::Status::Partial) => return Err(invalid("incomplete head")),
                    Err(e) => return Err(invalid(format!("malformed response: {e}"))),
                }
                let head = Head {
                    status: resp.code.unwrap_or(0),
                    ..Head::default()
                };
                (head, resp.headers.len(), resp.version)
            }
        };
        head.close = version == Some(0);
        head.bytes = bytes.to_vec();
        // httparse's slices point into `bytes`: their offsets are the same in the copy.
        let span = |part: &[u8]| {
            let start = part.as_ptr() as usize - bytes.as_ptr() as usize;
            (start as u16, (start + part.len()) as u16)
        };
        for h in &slots[..count] {
            let field = Field {
                name: span(h.name.as_bytes()),
                value: span(h.value.trim_ascii()),
            };
            let (start, end) = field.name;
            head.bytes[start as usize..end as usize].make_ascii_lowercase();
            let value = h.value.trim_ascii();
            match &head.bytes[start as usize..end as usize] {
                b"content-length" => {
                    head.content_length = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| {
                            let v = String::from_utf8_lossy(value);
                            invalid(format!("bad content-length {v:?}"))
                        })?
                }
                b"connection" => head.close = value.eq_ignore_ascii_case(b"close"),
                b"transfer-encoding" => return Err(invalid("transfer-encoding is not supported")),
                _ => {}
            }
            head.fields[head.count] = field;
            head.count += 1;
        }
        Ok(head)
    }

    /// A header's value (`name` in lowercase); none for a value that is not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let text = |(start, end): (u16, u16)| &self.bytes[start as usize..end as usize];
        self.fields[..self.count]
            .iter()
            .find(|f| text(f.name) == name.as_bytes())
            .and_then(|f| std::str::from_utf8(text(f.value)).ok())
    }
}

/// The length of the head at the start of `buffered` when it is all there (its empty line
/// included, within [`MAX_HEAD`]): it is then parsed in place, the common case. `None` sends
/// the reader line by line (a head still arriving, a bare empty line before it, or too long).
pub fn whole_head(buffered: &[u8]) -> Option<usize> {
    if buffered.starts_with(b"\r\n") {
        return None;
    }
    let window = &buffered[..buffered.len().min(MAX_HEAD)];
    window
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Gathers a head line by line, within [`MAX_HEAD`].
#[derive(Default)]
pub struct HeadReader {
    bytes: Vec<u8>,
}

impl HeadReader {
    /// The buffer the next line is appended to.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// How many more bytes a line may bring (one over the bound, to tell it was passed).
    pub fn room(&self) -> u64 {
        (MAX_HEAD + 1).saturating_sub(self.bytes.len()) as u64
    }

    /// After a line was read (`n` bytes): `Ok(true)` once the head is whole, `Ok(false)` for
    /// more; an error for an end of stream mid-head (`n` 0) or a head over the bound.
    pub fn line_read(&mut self, n: usize) -> io::Result<bool> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-head",
            ));
        }
        // A bare empty line before a request is tolerated (RFC 9112 §2.2).
        if self.bytes == b"\r\n" {
            self.bytes.clear();
            return Ok(false);
        }
        if self.bytes.ends_with(b"\r\n\r\n") {
            return Ok(true);
        }
        if self.bytes.len() > MAX_HEAD {
            return Err(invalid(format!("head over {MAX_HEAD} bytes")));
        }
        Ok(false)
    }

    /// Whether nothing was read yet (an end of stream here is a clean close).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn finish(self, kind: Kind) -> io::Result<Head> {
        Head::parse(kind, &self.bytes)
    }
}

/// Reads a head from a blocking reader; `None` when the peer closed the connection before
/// sending anything.
pub fn read_head(reader: &mut impl BufRead, kind: Kind) -> io::Result<Option<Head>> {
    let buffered = reader.fill_buf()?;
    if let Some(length) = whole_head(buffered) {
        let head = Head::parse(kind, &buffered[..length]);
        reader.consume(length);
        return head.map(Some);
    }
    let mut head = HeadReader::default();
    loop {
        let room = head.room();
        let n = reader.take(room).read_until(b'\n', head.buffer())?;
        if n == 0 && head.is_empty() {
            return Ok(None);
        }
        if head.line_read(n)? {
            return head.finish(kind).map(Some);
        }
    }
}

/// Reads a body of `length` bytes, refused if over `max`, as it comes.
pub fn read_body(reader: &mut impl Read, length: usize, max: usize) -> io::Result<Vec<u8>> {
    check_length(length, max)?;
    let mut body = Vec::with_capacity(length.min(64 << 10));
    reader.take(length as u64).read_to_end(&mut body)?;
    if body.len() != length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-body",
        ));
    }
    Ok(body)
}

/// Refuses a body length over `max` before anything is read or allocated.
pub fn check_length(length: usize, max: usize) -> io::Result<()> {
    if length > max {
        return Err(invalid(format!(
            "a {length}-byte body, over the {max}-byte bound"
        )));
    }
    Ok(())
}

/// A message being written: its head line by line, then [`Message::finish`] with the body.
/// Built without `format!`: a call writes one on each hop, on the hot path.
pub struct Message(Vec<u8>);

impl Message {
    /// A request's head up to its headers. `room` is a hint: the bytes to come after the head.
    pub fn request(method: &str, path: &str, room: usize) -> Message {
        let mut out = Vec::with_capacity(method.len() + path.len() + 96 + room);
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: function\r\n");
        Message(out)
    }

    /// A response's head up to its headers; `room` as in [`Message::request`].
    pub fn response(status: u16, room: usize) -> Message {
        let mut out = Vec::with_capacity(96 + room);
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut out, status.into());
        out.push(b' ');
        out.extend_from_slice(reason(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        Message(out)
    }

    /// One header line.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Message {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value.as_bytes());
        self.0.extend_from_slice(b"\r\n");
        self
    }

    /// One header line with a number for its value.
    pub fn header_number(&mut self, name: &str, value: u64) -> &mut Message {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        push_decimal(&mut self.0, value);
        self.0.extend_from_slice(b"\r\n");
        self
    }

    /// Header lines already written out (`name: value\r\n` each).
    pub fn lines(&mut self, lines: &str) -> &mut Message {
        self.0.extend_from_slice(lines.as_bytes());
        self
    }

    /// The length, the connection's end if asked, the head's end and `body`: the whole
    /// message, for one write.
    pub fn finish(mut self, body: &[u8], close: bool) -> Vec<u8> {
        self.header_number("content-length", body.len() as u64);
        if close {
            self.0.extend_from_slice(b"connection: close\r\n");
        }
        self.0.extend_from_slice(b"\r\n");
        self.0.extend_from_slice(body);
        self.0
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A request: head and body in one buffer (one write). `headers` are whole lines
/// (`name: value\r\n`).
pub fn request(method: &str, path: &str, headers: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut m = Message::request(method, path, headers.len() + body.len());
    m.lines(headers);
    m.finish(body, close)
}

/// A response: head and body in one buffer. `headers` as in [`request`].
pub fn response(status: u16, headers: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut m = Message::response(status, headers.len() + body.len());
    m.lines(headers);
    m.finish(body, close)
}

/// The reason phrase of the statuses the protocol uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        102 => "Call",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        508 => "Loop Detected",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_a_response_round_trip() {
        let wire = request("POST", "/invoke", "x-a: 1\r\n", b"[1,2]", false);
        let mut r = io::BufReader::new(&wire[..]);
        let head = read_head(&mut r, Kind::Request).unwrap().unwrap();
        assert_eq!(
            (head.method.as_str(), head.path.as_str()),
            ("POST", "/invoke")
        );
        assert_eq!(head.header("x-a"), Some("1"));
        assert!(!head.close);
        assert_eq!(
            read_body(&mut r, head.content_length, 100).unwrap(),
            b"[1,2]"
        );
        assert_eq!(read_head(&mut r, Kind::Request).unwrap(), None);

        let wire = response(504, "", b"late", true);
        let mut r = io::BufReader::new(&wire[..]);
        let head = read_head(&mut r, Kind::Response).unwrap().unwrap();
        assert_eq!(
            (head.status, head.content_length, head.close),
            (504, 4, true)
        );
    }

    #[test]
    fn a_built_message_reads_back_byte_for_byte() {
        let mut m = Message::request("POST", "/invoke", 3);
        m.header_number("x-stream", 0)
            .header_number("x-big", u64::MAX)
            .header("x-id", "a-1")
            .lines("x-raw: 7\r\n");
        let wire = m.finish(b"[1]", true);
        assert_eq!(
            wire,
            b"POST /invoke HTTP/1.1\r\nhost: function\r\nx-stream: 0\r\n\
              x-big: 18446744073709551615\r\nx-id: a-1\r\nx-raw: 7\r\n\
              content-length: 3\r\nconnection: close\r\n\r\n[1]"
        );
        let wire = response(200, "", b"", false);
        assert_eq!(wire, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn a_head_parsed_in_place_is_the_head_read_line_by_line() {
        let wire = request("POST", "/invoke", "x-a: 1\r\n", b"[1,2]", false);
        let end = whole_head(&wire).unwrap();
        assert_eq!(&wire[end..], b"[1,2]");
        let in_place = Head::parse(Kind::Request, &wire[..end]).unwrap();
        let mut by_line = HeadReader::default();
        let mut r = io::BufReader::with_capacity(1, &wire[..]);
        loop {
            let n = r.read_until(b'\n', by_line.buffer()).unwrap();
            if by_line.line_read(n).unwrap() {
                break;
            }
        }
        assert_eq!(by_line.finish(Kind::Request).unwrap(), in_place);
        // Not whole yet, led by an empty line, or past the bound: line by line.
        assert_eq!(whole_head(&wire[..end - 1]), None);
        assert_eq!(whole_head(b"\r\nGET / HTTP/1.1\r\n\r\n"), None);
        let mut long = b"GET / HTTP/1.1\r\nx: ".to_vec();
        long.resize(MAX_HEAD, b'a');
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(whole_head(&long), None);
        // Through read_head, from a reader that holds it whole.
        let mut r = io::BufReader::new(&wire[..]);
        assert_eq!(read_head(&mut r, Kind::Request).unwrap().unwrap(), in_place);
        assert_eq!(read_body(&mut r, 5, 5).unwrap(), b"[1,2]");
    }

    #[test]
    fn bounds_hold() {
        let mut wire = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_HEAD * 2));
        let err = read_head(&mut io::BufReader::new(&wire[..]), Kind::Response).unwrap_err();
        assert!(err.to_string().contains("over"), "{err}");
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n";
        let head = read_head(&mut io::BufReader::new(&wire[..]), Kind::Response)
            .unwrap()
            .unwrap();
        assert!(read_body(&mut &b""[..], head.content_length, 1 << 20).is_err());
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(read_head(&mut io::BufReader::new(&chunked[..]), Kind::Response).is_err());
    }

    #[test]
    fn headers_are_found_by_lowercase_name_with_their_values_trimmed() {
        let wire = b"HTTP/1.1 200 OK\r\nX-Stream:  7 \r\nContent-Length: 2\r\nX-Bin: \xff\r\nConnection: Close\r\n\r\n";
        let head = Head::parse(Kind::Response, wire).unwrap();
        assert_eq!(head.header("x-stream"), Some("7"));
        assert_eq!(
            head.header("X-Stream"),
            None,
            "names are looked up in lowercase"
        );
        assert_eq!(head.header("x-missing"), None);
        assert_eq!(head.header("x-bin"), None, "a value that is not UTF-8");
        assert_eq!((head.content_length, head.close), (2, true));
        let bad = b"HTTP/1.1 200 OK\r\ncontent-length: two\r\n\r\n";
        assert!(Head::parse(Kind::Response, bad).is_err());
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(Head::parse(Kind::Request, &many).is_err());
        many.truncate(many.len() - 2 - "x-32: 32\r\n".len());
        many.extend_from_slice(b"\r\n");
        let head = Head::parse(Kind::Request, &many).unwrap();
        assert_eq!(head.header("x-31"), Some("31"));
    }
}
