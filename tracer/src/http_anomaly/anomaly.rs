//! Header anomalies that make strict HTTP/1.1 proxies reset connections, found with
//! `httparse` (message and chunk-size parsing) on the first bytes of a message.
//!
//! The second incident: an upstream answered with `Transfer-Encoding: Chunked` and
//! `Transfer-Encoding: chunked`. Transfer codings are case-insensitive (RFC 9112 7), and
//! two header lines are one list (RFC 9110 5.3): "chunked, chunked", which is not a
//! valid framing, so Envoy reset the stream (`upstream_reset_before_response_started
//! {protocol_error}`). The same family: Transfer-Encoding with Content-Length (RFC 9112
//! 6.3, request smuggling), invalid chunk sizes, obs-fold (RFC 9112 5.2), header
//! sections beyond a proxy's limits.

use httparse::{EMPTY_HEADER, Header, ParserConfig, Status};

/// Header fields parsed per message; more is reported as oversized.
const MAX_HEADERS: usize = 64;
/// Chunks followed after the header section, within the kept bytes.
const MAX_CHUNKS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    /// A transfer coding listed twice across Transfer-Encoding fields, in any case.
    DuplicateTransferEncoding,
    TransferEncodingWithContentLength,
    /// The body is declared chunked but a chunk size (or the CRLF after a chunk) is bad.
    InvalidChunkedCoding,
    /// A header value continued on the next line (obsolete line folding).
    ObsFold,
    /// More header fields, or a longer header section, than the peek could hold.
    OversizedHeaders,
    /// httparse rejected the message head.
    InvalidMessage,
}

impl AnomalyKind {
    /// The JSON `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateTransferEncoding => "duplicate_transfer_encoding",
            Self::TransferEncodingWithContentLength => "transfer_encoding_with_content_length",
            Self::InvalidChunkedCoding => "invalid_chunked_coding",
            Self::ObsFold => "obs_fold",
            Self::OversizedHeaders => "oversized_headers",
            Self::InvalidMessage => "invalid_message",
        }
    }

    /// How the text line names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::DuplicateTransferEncoding => "duplicate Transfer-Encoding",
            Self::TransferEncodingWithContentLength => "Transfer-Encoding with Content-Length",
            Self::InvalidChunkedCoding => "invalid chunked coding",
            Self::ObsFold => "obs-fold",
            Self::OversizedHeaders => "oversized headers",
            Self::InvalidMessage => "invalid message",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Request,
    Response,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// The header values (or bytes) that show it, in message order.
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analysis {
    pub message: MessageKind,
    pub anomalies: Vec<Anomaly>,
}

/// What the first `kept` bytes of a message (of `total` sent or received) show; `None`
/// when they do not start an HTTP/1.x message.
pub fn analyze(kept: &[u8], total: u64) -> Option<Analysis> {
    let (message, head_len) = message_kind(kept)?;
    let mut anomalies = Vec::new();
    // httparse accepts obs-fold only in responses: a request's header section is parsed
    // behind a status line in place of its request line. httparse's own verdict on the
    // request is reported when the header checks found nothing to explain it.
    let request_error = match message {
        MessageKind::Request => request_line_error(kept),
        MessageKind::Response => None,
    };
    let shaped;
    let (as_response, shift) = match message {
        MessageKind::Response => (kept, 0),
        MessageKind::Request => {
            shaped = [STATUS_LINE, &kept[head_len..]].concat();
            (&shaped[..], head_len as isize - STATUS_LINE.len() as isize)
        }
    };
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    match parse_response(as_response, &mut headers) {
        Ok(Status::Complete(body_at)) => {
            let headers = header_list(&headers);
            check_headers(headers, &mut anomalies);
            let body_at = (body_at as isize + shift) as usize;
            if is_chunked(headers) && body_at <= kept.len() {
                check_chunks(&kept[body_at..], &mut anomalies);
            }
        }
        Ok(Status::Partial) => {
            // The kept bytes end inside the header section: look at its complete lines.
            if let Some(last) = as_response.windows(2).rposition(|w| w == b"\r\n") {
                let lines = [&as_response[..last + 2], b"\r\n"].concat();
                let mut headers = [EMPTY_HEADER; MAX_HEADERS];
                if let Ok(Status::Complete(_)) = parse_response(&lines, &mut headers) {
                    check_headers(header_list(&headers), &mut anomalies);
                }
            }
            if total > kept.len() as u64 {
                anomalies.push(Anomaly {
                    kind: AnomalyKind::OversizedHeaders,
                    values: vec![format!("no end of headers in the first {} of {total} bytes", kept.len())],
                });
            }
        }
        Err(httparse::Error::TooManyHeaders) => anomalies.push(Anomaly {
            kind: AnomalyKind::OversizedHeaders,
            values: vec![format!("more than {MAX_HEADERS} header fields")],
        }),
        Err(error) => {
            anomalies.push(Anomaly { kind: AnomalyKind::InvalidMessage, values: vec![error.to_string()] })
        }
    }
    if let Some(error) = request_error
        && anomalies.is_empty()
    {
        anomalies.push(Anomaly { kind: AnomalyKind::InvalidMessage, values: vec![error.to_string()] });
    }
    Some(Analysis { message, anomalies })
}

const STATUS_LINE: &[u8] = b"HTTP/1.1 200 OK\r\n";

/// A response starts with its version; a request line ends with one (RFC 9112 3, 4).
/// Also returns the length of the first line with its CRLF (0 for responses).
fn message_kind(bytes: &[u8]) -> Option<(MessageKind, usize)> {
    if bytes.starts_with(b"HTTP/1.") {
        return Some((MessageKind::Response, 0));
    }
    let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let line = &bytes[..line_end];
    (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
        .then_some((MessageKind::Request, line_end + 2))
}

/// httparse's verdict on a request; fields beyond `MAX_HEADERS` are left to the header
/// checks, which report them as oversized.
fn request_line_error(bytes: &[u8]) -> Option<httparse::Error> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => None,
        Err(error) => Some(error),
    }
}

fn parse_response<'b>(bytes: &'b [u8], headers: &mut [Header<'b>]) -> httparse::Result<usize> {
    let mut config = ParserConfig::default();
    // Parsed, so that it can be reported rather than only refused.
    config.allow_obsolete_multiline_headers_in_responses(true);
    let mut response = httparse::Response::new(headers);
    config.parse_response(&mut response, bytes)
}

/// The filled part of a header array httparse parsed into.
fn header_list<'h, 'b>(headers: &'h [Header<'b>]) -> &'h [Header<'b>] {
    let count = headers.iter().take_while(|h| !h.name.is_empty()).count();
    &headers[..count]
}

fn check_headers(headers: &[Header<'_>], anomalies: &mut Vec<Anomaly>) {
    let values = |name: &str| -> Vec<String> {
        headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| text(h.value)).collect()
    };
    let transfer_encoding = values("transfer-encoding");
    let codings: Vec<String> = transfer_encoding
        .iter()
        .flat_map(|value| value.split(','))
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| !coding.is_empty())
        .collect();
    let repeated = codings.iter().enumerate().any(|(i, coding)| codings[..i].contains(coding));
    if repeated {
        anomalies.push(Anomaly {
            kind: AnomalyKind::DuplicateTransferEncoding,
            values: transfer_encoding.clone(),
        });
    }
    let content_length = values("content-length");
    if !transfer_encoding.is_empty() && !content_length.is_empty() {
        let values = transfer_encoding.iter().chain(&content_length).cloned().collect();
        anomalies.push(Anomaly { kind: AnomalyKind::TransferEncodingWithContentLength, values });
    }
    for header in headers {
        if header.value.iter().any(|&b| b == b'\r' || b == b'\n') {
            anomalies.push(Anomaly { kind: AnomalyKind::ObsFold, values: vec![header.name.to_string()] });
        }
    }
}

/// Whether the last transfer coding is chunked (RFC 9112 6.3).
fn is_chunked(headers: &[Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .filter_map(|h| text(h.value).rsplit(',').next().map(|c| c.trim().eq_ignore_ascii_case("chunked")))
        .next_back()
        .unwrap_or(false)
}

fn check_chunks(mut body: &[u8], anomalies: &mut Vec<Anomaly>) {
    for _ in 0..MAX_CHUNKS {
        if body.is_empty() {
            return;
        }
        let (consumed, size) = match httparse::parse_chunk_size(body) {
            Ok(Status::Complete(found)) => found,
            Ok(Status::Partial) => return,
            Err(_) => {
                anomalies.push(Anomaly {
                    kind: AnomalyKind::InvalidChunkedCoding,
                    values: vec![first_line(body)],
                });
                return;
            }
        };
        if size == 0 {
            return;
        }
        // A size beyond the kept bytes (up to 2^64-1 on the wire) means the peek cut the
        // chunk off: nothing more to check, and no sum of it may overflow.
        let Some(end) =
            usize::try_from(size).ok().and_then(|size| consumed.checked_add(size)?.checked_add(2))
        else {
            return;
        };
        let after = end - 2;
        if body.len() < end {
            return;
        }
        if &body[after..after + 2] != b"\r\n" {
            let value = format!("chunk of {size} bytes not followed by CRLF");
            anomalies.push(Anomaly { kind: AnomalyKind::InvalidChunkedCoding, values: vec![value] });
            return;
        }
        body = &body[after + 2..];
    }
}

fn first_line(bytes: &[u8]) -> String {
    let end = bytes.windows(2).position(|w| w == b"\r\n").unwrap_or(bytes.len()).min(40);
    text(&bytes[..end])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomalies(bytes: &[u8]) -> Vec<Anomaly> {
        analyze(bytes, bytes.len() as u64).expect("an HTTP message").anomalies
    }

    fn one(kind: AnomalyKind, values: &[&str]) -> Anomaly {
        Anomaly { kind, values: values.iter().map(|v| v.to_string()).collect() }
    }

    /// The response of the incident (mjasion/istio-upstream-reset, `/wrong`).
    const INCIDENT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: Chunked\r\n\
Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    #[test]
    fn duplicate_transfer_encoding_in_any_case() {
        let analysis = analyze(INCIDENT, INCIDENT.len() as u64).unwrap();
        assert_eq!(analysis.message, MessageKind::Response);
        assert_eq!(
            analysis.anomalies,
            [one(AnomalyKind::DuplicateTransferEncoding, &["Chunked", "chunked"])]
        );
        let one_field = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, CHUNKED\r\n\r\n0\r\n\r\n";
        assert_eq!(
            anomalies(one_field),
            [one(AnomalyKind::DuplicateTransferEncoding, &["chunked, CHUNKED"])]
        );
    }

    #[test]
    fn distinct_codings_in_two_fields_are_fine() {
        let gzip_then_chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(anomalies(gzip_then_chunked), []);
        let correct = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(anomalies(correct), []);
    }

    #[test]
    fn transfer_encoding_with_content_length() {
        let smuggling =
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG";
        let analysis = analyze(smuggling, smuggling.len() as u64).unwrap();
        assert_eq!(analysis.message, MessageKind::Request);
        assert_eq!(
            analysis.anomalies,
            [one(AnomalyKind::TransferEncodingWithContentLength, &["chunked", "6"])]
        );
    }

    #[test]
    fn invalid_chunk_size_and_missing_crlf() {
        let bad_size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n";
        assert_eq!(anomalies(bad_size), [one(AnomalyKind::InvalidChunkedCoding, &["zz"])]);
        let long_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n";
        assert_eq!(
            anomalies(long_chunk),
            [one(AnomalyKind::InvalidChunkedCoding, &["chunk of 3 bytes not followed by CRLF"])]
        );
        // A body cut off by the peek is not an error.
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\nabc";
        assert_eq!(anomalies(cut), []);
    }

    /// Found writing the fuzz targets (`ring_record` crashed on it, in a reset's peeked
    /// response): a chunk size near 2^64 overflowed the end of the chunk.
    #[test]
    fn a_chunk_size_near_the_limit_is_a_cut_off_chunk() {
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFEC\r\nhello";
        assert_eq!(anomalies(huge), []);
        let largest = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nhello";
        assert_eq!(anomalies(largest), []);
    }

    #[test]
    fn obs_fold_in_responses_and_requests() {
        let response = b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(anomalies(response), [one(AnomalyKind::ObsFold, &["X-Folded"])]);
        let request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n\tb\r\n\r\n";
        assert_eq!(anomalies(request), [one(AnomalyKind::ObsFold, &["X-Folded"])]);
    }

    #[test]
    fn oversized_headers() {
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..70 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(anomalies(&many)[0].kind, AnomalyKind::OversizedHeaders);
        let mut long = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: ".to_vec();
        long.resize(1024, b'c');
        let found = analyze(&long, 9000).unwrap().anomalies;
        assert_eq!(
            found,
            [one(AnomalyKind::OversizedHeaders, &["no end of headers in the first 1024 of 9000 bytes"])]
        );
        // The same bytes with nothing beyond them: the message is merely incomplete.
        assert_eq!(analyze(&long, 1024).unwrap().anomalies, []);
    }

    #[test]
    fn not_http_is_none() {
        assert_eq!(analyze(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11), None);
        assert_eq!(analyze(b"SSH-2.0-OpenSSH_9.2\r\n", 21), None);
        assert_eq!(analyze(b"", 0), None);
    }

    #[test]
    fn invalid_head_is_reported() {
        let bad = b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n";
        assert_eq!(anomalies(bad)[0].kind, AnomalyKind::InvalidMessage);
    }
}
