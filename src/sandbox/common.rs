//! What the simulated registers share: their state's lock, tokens and timestamps,
//! Visma Connect's credential parsing, the request log and its middleware, rate-limit
//! windows, paging, the `{"message": ...}` and OAuth2 error bodies, and small
//! validation rules.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SecondsFormat, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::faults::FaultMark;

/// Largest body a simulator buffers: a request's, for the request log, or an answer's,
/// for e-conomic's idempotency cache.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A poisoned lock only means a handler panicked; the data is still usable.
pub(crate) fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Now, as RFC 3339 UTC with milliseconds.
pub(crate) fn now_utc() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, as RFC 3339 UTC in whole seconds.
pub(crate) fn now_utc_secs() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `len` random ASCII letters and digits.
pub(crate) fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

// ---------- requests ----------

/// Whether header `name` is there and is exactly `want`.
pub(crate) fn header_is(headers: &HeaderMap, name: &str, want: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == want)
}

/// The `Host` the client addressed (`localhost` when it sent none), followed by the
/// path prefix the sandbox is served under, if any: where its own URLs start.
pub(crate) fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let prefix = headers
        .get(super::PREFIX_HEADER)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    format!("{host}{prefix}")
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// An application/x-www-form-urlencoded body (or query) by name; a repeated name keeps
/// its last value.
pub(crate) fn parse_form(raw: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// A request's query (`RawQuery`) by name, as [`parse_form`].
pub(crate) fn parse_query(raw: Option<&str>) -> HashMap<String, String> {
    parse_form(raw.unwrap_or_default().as_bytes())
}

/// Client credentials from HTTP Basic (what the `oauth2` crate sends by default) or
/// from `client_id`/`client_secret` form fields.
pub(crate) fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let (scheme, encoded) = value.to_str().ok()?.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        // RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
        return Some((form_decode(id), form_decode(secret)));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
    ))
}

/// Why a body is not a JSON object.
pub(crate) enum NotAnObject {
    /// Not JSON at all.
    Invalid(serde_json::Error),
    /// JSON, but not an object.
    Other,
}

/// The body as a JSON object.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, NotAnObject> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(NotAnObject::Other),
        Err(e) => Err(NotAnObject::Invalid(e)),
    }
}

// ---------- error bodies ----------

/// `{"message": text}`: the sandbox's own errors, and the shape some registers use.
pub(crate) fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "message": text.into() }))).into_response()
}

/// Visma Connect's (OAuth2) error body, with `error_description` when given.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    let mut body = json!({ "error": error });
    if let Some(d) = description {
        body["error_description"] = json!(d);
    }
    (status, Json(body)).into_response()
}

// ---------- the request log ----------

/// A register's request log: entries in arrival order, each with its `seq` from 1.
pub(crate) struct RequestLog {
    entries: Vec<Value>,
    next_seq: u64,
}

impl RequestLog {
    pub(crate) fn new() -> RequestLog {
        RequestLog {
            entries: Vec::new(),
            next_seq: 1,
        }
    }

    /// Appends `entry` (an object) with the next `seq`.
    pub(crate) fn push(&mut self, mut entry: Value) {
        entry["seq"] = json!(self.next_seq);
        self.next_seq += 1;
        self.entries.push(entry);
    }

    /// A copy of the entries, oldest first.
    pub(crate) fn entries(&self) -> Vec<Value> {
        self.entries.clone()
    }

    /// Forgets the entries; `seq` keeps counting.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// A simulated register's state whose requests [`record`] logs.
pub(crate) trait RecordSite: Send + 'static {
    /// Whether requests are recorded at all.
    fn recording(&self) -> bool;
    /// The register's request log.
    fn log(&mut self) -> &mut RequestLog;
    /// What the register answers a body over [`MAX_BODY_BYTES`].
    fn too_large() -> Response;
    /// The entry's fields read from the request before it is handled (`method`,
    /// `status`, `body` and `fault` are added to them): by default `path` and `query`.
    fn request_fields(req: &Request) -> Map<String, Value> {
        path_and_query(req)
    }
    /// The request body as logged; `path` is the request's path.
    fn logged_body(_path: &str, bytes: &[u8]) -> Value {
        body_for_log(bytes)
    }
    /// Adds to the entry what it records of the answer, besides its status.
    fn response_fields(_resp: &Response, _entry: &mut Map<String, Value>) {}
}

/// `path` without the query, and `query` (null when there is none).
pub(crate) fn path_and_query(req: &Request) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("path".into(), json!(req.uri().path()));
    fields.insert("query".into(), json!(req.uri().query()));
    fields
}

/// A body as logged: null when empty, the JSON when it parses, else the text.
pub(crate) fn body_for_log(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Middleware that records every request it wraps with its body, its status and
/// `"fault"` when a fault injected the status or dropped the answer.
pub(crate) async fn record<S: RecordSite>(
    State(state): State<Arc<Mutex<S>>>,
    req: Request,
    next: Next,
) -> Response {
    if !lock(&state).recording() {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let mut entry = S::request_fields(&req);
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return S::too_large();
    };
    let logged = S::logged_body(&path, &bytes);
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    entry.insert("method".into(), json!(method));
    entry.insert("status".into(), json!(resp.status().as_u16()));
    entry.insert("body".into(), logged);
    S::response_fields(&resp, &mut entry);
    if let Some(mark) = resp.extensions().get::<FaultMark>() {
        entry.insert("fault".into(), json!(mark.as_str()));
    }
    lock(&state).log().push(Value::Object(entry));
    resp
}

/// `GET /_sandbox/<register>/requests`.
pub(crate) async fn control_requests<S: RecordSite>(
    State(state): State<Arc<Mutex<S>>>,
) -> Response {
    Json(lock(&state).log().entries()).into_response()
}

/// `DELETE /_sandbox/<register>/requests`.
pub(crate) async fn control_clear_requests<S: RecordSite>(
    State(state): State<Arc<Mutex<S>>>,
) -> Response {
    lock(&state).log().clear();
    StatusCode::NO_CONTENT.into_response()
}

/// Expires every access token now: `{"expired": <how many>}`.
pub(crate) fn expire_tokens<'a>(
    expiries: impl ExactSizeIterator<Item = &'a mut Instant>,
) -> Response {
    let now = Instant::now();
    let count = expiries.len();
    for expires in expiries {
        *expires = now;
    }
    Json(json!({ "expired": count })).into_response()
}

// ---------- rate limits and paging ----------

struct Window {
    start: Instant,
    count: u32,
}

/// Fixed rate-limit windows, one per key (a client and an endpoint or tenant).
#[derive(Default)]
pub(crate) struct FixedWindows(HashMap<(String, String), Window>);

impl FixedWindows {
    /// Counts one call of `key` in windows of `length`: the calls counted in the current
    /// window, this one included, and the seconds until it resets (rounded up, and never
    /// 0: a client that waits this long is in the next window).
    pub(crate) fn count(&mut self, key: (&str, &str), length: Duration) -> (u32, u64) {
        let now = Instant::now();
        let w = self
            .0
            .entry((key.0.to_string(), key.1.to_string()))
            .or_insert(Window {
                start: now,
                count: 0,
            });
        if now.duration_since(w.start) >= length {
            w.start = now;
            w.count = 0;
        }
        w.count = w.count.saturating_add(1);
        let left = length.saturating_sub(now.duration_since(w.start));
        (w.count, (left.as_millis().div_ceil(1000) as u64).max(1))
    }

    /// Every window starts afresh.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// A whole-number query parameter: `default` when absent, `Err(the text)` when it is
/// not a number in `range`.
pub(crate) fn number_param(
    given: Option<&str>,
    default: u64,
    range: RangeInclusive<u64>,
) -> Result<u64, &str> {
    match given {
        None => Ok(default),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(s),
        },
    }
}

/// The page after `skip_pages` pages of `size` items.
pub(crate) fn page_of<T>(items: impl IntoIterator<Item = T>, skip_pages: u64, size: u64) -> Vec<T> {
    let skip = usize::try_from(skip_pages.saturating_mul(size)).unwrap_or(usize::MAX);
    items.into_iter().skip(skip).take(size as usize).collect()
}

// ---------- validation ----------

/// Something@domain.tld with no spaces: what a person would accept as an address.
pub(crate) fn looks_like_email(s: &str) -> bool {
    if s.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

// ---------- codecs ----------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64url without padding (RFC 4648 section 5).
pub(crate) fn base64url_nopad(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let c = B64[((n >> (18 - 6 * i)) & 63) as usize];
            out.push(match c {
                b'+' => '-',
                b'/' => '_',
                c => char::from(c),
            });
        }
    }
    out
}

/// Standard or URL-safe alphabet, padding optional.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'-' => 62,
            b'_' => 63,
            _ => B64.iter().position(|&x| x == c)? as u32,
        };
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Some(out)
}

/// application/x-www-form-urlencoded decoding of one value.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for input in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let enc = base64url_nopad(input.as_bytes());
            assert_eq!(base64_decode(&enc).unwrap(), input.as_bytes());
        }
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert!(base64_decode("Zm9v!").is_none());
    }

    #[test]
    fn client_credentials_from_basic_or_form() {
        use axum::http::HeaderValue;
        use base64::Engine as _;
        let basic = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode("a%2Bb:s+c%3A");
        let form = parse_form(b"client_id=id&client_secret=secret");
        // Basic wins over the form, and both of its parts are form-decoded.
        assert_eq!(
            client_credentials(&basic(&format!("Basic {encoded}")), &form),
            Some(("a+b".into(), "s c:".into()))
        );
        assert_eq!(
            client_credentials(&HeaderMap::new(), &form),
            Some(("id".into(), "secret".into()))
        );
        assert_eq!(client_credentials(&basic("Bearer x"), &form), None);
        assert_eq!(client_credentials(&HeaderMap::new(), &HashMap::new()), None);
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a%2Bb+c%3A"), "a+b c:");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%4"), "%4");
    }

    #[test]
    fn email_shape() {
        assert!(looks_like_email("ann@acme.se"));
        for bad in [
            "ann",
            "ann@",
            "@acme.se",
            "ann@acme",
            "a b@acme.se",
            "a@b@c.se",
        ] {
            assert!(!looks_like_email(bad), "{bad}");
        }
    }

    #[test]
    fn windows_count_per_key_and_reset() {
        let mut w = FixedWindows::default();
        let minute = Duration::from_secs(60);
        assert_eq!(w.count(("a", "x"), minute), (1, 60));
        assert_eq!(w.count(("a", "x"), minute).0, 2);
        assert_eq!(w.count(("b", "x"), minute).0, 1);
        assert_eq!(w.count(("a", "x"), Duration::ZERO), (1, 1));
    }

    #[test]
    fn number_params() {
        assert_eq!(number_param(None, 7, 1..=10), Ok(7));
        assert_eq!(number_param(Some("10"), 7, 1..=10), Ok(10));
        assert_eq!(number_param(Some("0"), 7, 1..=10), Err("0"));
        assert_eq!(number_param(Some("x"), 7, 1..=10), Err("x"));
        assert_eq!(page_of(1..=5, 1, 2), vec![3, 4]);
        assert_eq!(page_of(1..=5, u64::MAX, 2), Vec::<i32>::new());
    }
}
