//! A fake Elasticsearch for the integration tests: no real cluster can run here, so this
//! in-repo server speaks the parts of the wire protocol the agent uses, exactly, and injects
//! the failures real clusters produce.
//!
//! It is a plain HTTP/1.1 server on tokio (keep-alive, `Content-Length` and chunked bodies,
//! `Content-Encoding: gzip`), written by hand rather than with a framework so that it can do
//! what a framework hides: drop a connection in the middle of a request, or after indexing
//! but before answering. `GET /` answers the version document of Elasticsearch 7/8 or
//! OpenSearch 2; `POST [/<index>]/_bulk` parses the NDJSON body as action/document pairs
//! (`index`, `create`, `delete`), keeps an index of documents by `_index`/`_id`, answers 409
//! `version_conflict_engine_exception` to `create` on an existing `_id`, and answers each item
//! the way Elasticsearch does. Basic and API-key authentication are checked when configured.
//!
//! Failure switches (see [`Faults`]): per-item 429 `es_rejected_execution_exception`, 400
//! `mapper_parsing_exception` for documents holding a marker, whole-request 503, 413 over a
//! body limit, connections dropped mid-request or after indexing, slow answers, and "down"
//! (every connection closed at once).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which server the fake claims to be on `GET /`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Es7,
    Es8,
    OpenSearch2,
}

/// Failure injection; counters count down as they fire.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// The next N `index`/`create` items are answered 429.
    pub item_429: usize,
    /// Documents whose source contains this text are answered 400 mapper_parsing_exception.
    pub reject_containing: Option<String>,
    /// The next N bulk requests are answered 503 as a whole (nothing indexed).
    pub fail_503: usize,
    /// Bulk bodies larger than this (decompressed) are answered 413 (nothing indexed).
    pub body_limit: Option<usize>,
    /// The next N bulk requests: read half the body, then close the connection.
    pub drop_mid_request: usize,
    /// The next N bulk requests: index the documents, then close without answering.
    pub drop_after_index: usize,
    /// The next N bulk requests: index, then wait this long before answering.
    pub slow: usize,
    pub slow_for: Duration,
}

/// One stored document.
#[derive(Debug, Clone)]
pub struct Doc {
    pub index: String,
    pub id: String,
    pub source: Value,
}

#[derive(Default)]
struct Index {
    docs: HashMap<(String, String), Value>,
    order: Vec<(String, String)>,
    next_id: u64,
}

/// What the server saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub bulk_requests: usize,
    pub gzip_requests: usize,
    pub conflicts: usize,
    pub items_429: usize,
    pub rejected: usize,
    pub whole_503: usize,
    pub too_large: usize,
    pub dropped: usize,
    pub slow: usize,
    pub unauthorized: usize,
    /// Connections closed at once while down.
    pub refused: usize,
    pub bulk_paths: Vec<String>,
}

struct State {
    flavor: Flavor,
    auth: Option<String>,
    index: Mutex<Index>,
    faults: Mutex<Faults>,
    seen: Mutex<Seen>,
    down: AtomicBool,
    connections: AtomicUsize,
}

/// A running fake cluster on 127.0.0.1; stops when dropped.
pub struct FakeEs {
    pub addr: SocketAddr,
    state: Arc<State>,
    rt: Option<tokio::runtime::Runtime>,
}

impl FakeEs {
    pub fn start(flavor: Flavor) -> FakeEs {
        FakeEs::start_with(flavor, None, None)
    }

    /// `auth`: the exact `Authorization` header required; `port`: a fixed port (restarts).
    pub fn start_with(flavor: Flavor, auth: Option<String>, port: Option<u16>) -> FakeEs {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let state = Arc::new(State {
            flavor,
            auth,
            index: Mutex::new(Index::default()),
            faults: Mutex::new(Faults::default()),
            seen: Mutex::new(Seen::default()),
            down: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let listener = rt
            .block_on(TcpListener::bind(("127.0.0.1", port.unwrap_or(0))))
            .expect("bind fake es");
        let addr = listener.local_addr().expect("addr");
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                if st.down.load(Ordering::SeqCst) {
                    st.seen.lock().unwrap().refused += 1;
                    drop(sock);
                    continue;
                }
                st.connections.fetch_add(1, Ordering::Relaxed);
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, st).await;
                });
            }
        });
        FakeEs {
            addr,
            state,
            rt: Some(rt),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_faults(&self, f: Faults) {
        *self.state.faults.lock().unwrap() = f;
    }

    pub fn faults(&self) -> Faults {
        self.state.faults.lock().unwrap().clone()
    }

    /// While down, every connection is closed as soon as it is accepted (or its next request
    /// arrives): the agent sees connection errors.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Seen {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    pub fn doc_count(&self) -> usize {
        self.state.index.lock().unwrap().docs.len()
    }

    /// Every stored document, in the order first indexed.
    pub fn docs(&self) -> Vec<Doc> {
        let idx = self.state.index.lock().unwrap();
        idx.order
            .iter()
            .filter_map(|k| {
                idx.docs.get(k).map(|v| Doc {
                    index: k.0.clone(),
                    id: k.1.clone(),
                    source: v.clone(),
                })
            })
            .collect()
    }

    /// The `message` of every stored document, as a multiset.
    pub fn message_counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for d in self.docs() {
            *m.entry(d.source["message"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        m
    }
}

impl Drop for FakeEs {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Read2 {
    Request(Request),
    Closed,
}

/// Serves one connection: requests in turn, keep-alive.
async fn serve(mut sock: TcpStream, st: Arc<State>) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let req = match read_request(&mut sock, &mut buf, &st).await? {
            Read2::Request(r) => r,
            Read2::Closed => return Ok(()),
        };
        if st.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let Some((status, body)) = handle(&req, &st).await else {
            // Drop without answering.
            return Ok(());
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            406 => "Not Acceptable",
            413 => "Request Entity Too Large",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-elastic-product: Elasticsearch\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(&body).await?;
        if close {
            return Ok(());
        }
    }
}

/// Reads one request (headers, then a `Content-Length` or chunked body). A bulk request
/// chosen for `drop_mid_request` is cut after half its body.
async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    st: &State,
) -> std::io::Result<Read2> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if !fill(sock, buf).await? {
            return Ok(Read2::Closed);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let is_bulk = method == "POST" && path.split('?').next().unwrap_or("").ends_with("/_bulk");
    let mut body = Vec::new();
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if is_bulk && take(&st.faults, |f| &mut f.drop_mid_request) {
            while buf.len() < len / 2 {
                if !fill(sock, buf).await? {
                    break;
                }
            }
            st.seen.lock().unwrap().dropped += 1;
            return Ok(Read2::Closed);
        }
        while buf.len() < len {
            if !fill(sock, buf).await? {
                return Ok(Read2::Closed);
            }
        }
        body = buf.drain(..len).collect();
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                if !fill(sock, buf).await? {
                    return Ok(Read2::Closed);
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !fill(sock, buf).await? {
                    return Ok(Read2::Closed);
                }
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break;
            }
        }
    }
    Ok(Read2::Request(Request {
        method,
        path,
        headers,
        body,
    }))
}

async fn fill(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 64 * 1024];
    let n = sock.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Takes one shot of a counting fault.
fn take(faults: &Mutex<Faults>, field: impl FnOnce(&mut Faults) -> &mut usize) -> bool {
    let mut f = faults.lock().unwrap();
    let slot = field(&mut f);
    if *slot > 0 {
        *slot -= 1;
        true
    } else {
        false
    }
}

fn to_body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn es_error(status: u16, kind: &str, reason: &str) -> (u16, Vec<u8>) {
    (
        status,
        to_body(json!({
            "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
            "status": status
        })),
    )
}

/// Answers one request; `None` drops the connection without an answer.
async fn handle(req: &Request, st: &State) -> Option<(u16, Vec<u8>)> {
    if let Some(want) = &st.auth
        && req.header("authorization") != Some(want.as_str())
    {
        st.seen.lock().unwrap().unauthorized += 1;
        return Some(es_error(
            401,
            "security_exception",
            "missing authentication credentials for REST request",
        ));
    }
    let path = req.path.split('?').next().unwrap_or("").to_owned();
    if req.method == "GET" && path == "/" {
        return Some((200, to_body(root_document(st.flavor))));
    }
    if req.method == "POST" && path.ends_with("/_bulk") {
        return bulk(req, st, &path).await;
    }
    Some(es_error(
        404,
        "resource_not_found_exception",
        "no handler found",
    ))
}

fn root_document(flavor: Flavor) -> Value {
    match flavor {
        Flavor::Es7 => {
            json!({"name": "fake", "cluster_name": "fake", "version": {"number": "7.17.22", "build_flavor": "default"}, "tagline": "You Know, for Search"})
        }
        Flavor::Es8 => {
            json!({"name": "fake", "cluster_name": "fake", "version": {"number": "8.15.0", "build_flavor": "default"}, "tagline": "You Know, for Search"})
        }
        Flavor::OpenSearch2 => {
            json!({"name": "fake", "cluster_name": "fake", "version": {"distribution": "opensearch", "number": "2.11.1"}, "tagline": "The OpenSearch Project: https://opensearch.org/"})
        }
    }
}

async fn bulk(req: &Request, st: &State, path: &str) -> Option<(u16, Vec<u8>)> {
    let gz = req
        .header("content-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = if gz {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&req.body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return Some(es_error(400, "parse_exception", "invalid gzip body"));
        }
        out
    } else {
        req.body.clone()
    };
    {
        let mut seen = st.seen.lock().unwrap();
        seen.bulk_requests += 1;
        if gz {
            seen.gzip_requests += 1;
        }
        seen.bulk_paths.push(req.path.clone());
    }
    let ct = req.header("content-type").unwrap_or("");
    if !(ct.starts_with("application/x-ndjson") || ct.starts_with("application/json")) {
        return Some(es_error(
            406,
            "media_type_header_exception",
            "Content-Type header is not supported",
        ));
    }
    if take(&st.faults, |f| &mut f.fail_503) {
        st.seen.lock().unwrap().whole_503 += 1;
        return Some(es_error(
            503,
            "cluster_block_exception",
            "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];",
        ));
    }
    let limit = st.faults.lock().unwrap().body_limit;
    if let Some(limit) = limit
        && body.len() > limit
    {
        st.seen.lock().unwrap().too_large += 1;
        return Some((413, Vec::new()));
    }
    if !body.is_empty() && !body.ends_with(b"\n") {
        return Some(es_error(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        ));
    }
    let default_index = path
        .trim_end_matches("/_bulk")
        .trim_start_matches('/')
        .to_owned();
    let mut items = Vec::new();
    let mut errors = false;
    let mut lines = body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    while let Some(action_line) = lines.next() {
        let Ok(Value::Object(action)) = serde_json::from_slice::<Value>(action_line) else {
            return Some(es_error(
                400,
                "x_content_parse_exception",
                "Malformed action/metadata line",
            ));
        };
        let Some((op, meta)) = action.into_iter().next() else {
            return Some(es_error(
                400,
                "illegal_argument_exception",
                "Malformed action/metadata line, expected an action",
            ));
        };
        let index = meta["_index"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| default_index.clone());
        if index.is_empty() {
            return Some(es_error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index is missing;",
            ));
        }
        let id = meta["_id"].as_str().map(str::to_owned);
        // Data streams (named `<type>-<dataset>-<namespace>` here) take `create` only.
        if index.starts_with("logs-")
            && !index.contains('.')
            && index.matches('-').count() == 2
            && op == "index"
        {
            lines.next();
            errors = true;
            st.seen.lock().unwrap().rejected += 1;
            items.push(json!({"index": {"_index": index, "status": 400, "error": {
                "type": "illegal_argument_exception",
                "reason": format!("only write ops with an op_type of create are allowed in data streams")}}}));
            continue;
        }
        let (status, result, err) = match op.as_str() {
            "index" | "create" => {
                let Some(doc_line) = lines.next() else {
                    return Some(es_error(
                        400,
                        "illegal_argument_exception",
                        "The bulk request must be terminated by a newline [\\n]",
                    ));
                };
                item_index(st, &op, &index, id.clone(), doc_line)
            }
            "delete" => {
                let mut idx = st.index.lock().unwrap();
                match id
                    .clone()
                    .and_then(|id| idx.docs.remove(&(index.clone(), id)))
                {
                    Some(_) => (200, "deleted", None),
                    None => (404, "not_found", None),
                }
            }
            other => {
                return Some(es_error(
                    400,
                    "illegal_argument_exception",
                    &format!("Malformed action/metadata line, unknown action [{other}]"),
                ));
            }
        };
        let mut item = json!({"_index": index, "_id": id.unwrap_or_default(), "status": status});
        if let Some((kind, reason, cause)) = err {
            errors = true;
            let mut e = json!({"type": kind, "reason": reason, "index": index});
            if let Some((ck, cr)) = cause {
                e["caused_by"] = json!({"type": ck, "reason": cr});
            }
            item["error"] = e;
        } else {
            item["result"] = json!(result);
            item["_version"] = json!(1);
            item["_shards"] = json!({"total": 2, "successful": 1, "failed": 0});
            item["_seq_no"] = json!(0);
            item["_primary_term"] = json!(1);
        }
        items.push(json!({ op: item }));
    }
    let answer = to_body(json!({"took": 1, "errors": errors, "items": items}));
    if take(&st.faults, |f| &mut f.drop_after_index) {
        st.seen.lock().unwrap().dropped += 1;
        return None;
    }
    if take(&st.faults, |f| &mut f.slow) {
        st.seen.lock().unwrap().slow += 1;
        let d = st.faults.lock().unwrap().slow_for;
        tokio::time::sleep(d).await;
    }
    Some((200, answer))
}

type ItemError = Option<(&'static str, String, Option<(&'static str, String)>)>;

fn item_index(
    st: &State,
    op: &str,
    index: &str,
    id: Option<String>,
    doc_line: &[u8],
) -> (u16, &'static str, ItemError) {
    let doc: Value = match serde_json::from_slice(doc_line) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            st.seen.lock().unwrap().rejected += 1;
            return (
                400,
                "",
                Some((
                    "mapper_parsing_exception",
                    "failed to parse".to_owned(),
                    Some((
                        "not_x_content_exception",
                        "Compressor detection can only be called on some xcontent bytes".to_owned(),
                    )),
                )),
            );
        }
    };
    let marker = st.faults.lock().unwrap().reject_containing.clone();
    if let Some(m) = marker
        && doc["message"].as_str().is_some_and(|s| s.contains(&m))
    {
        st.seen.lock().unwrap().rejected += 1;
        return (
            400,
            "",
            Some((
                "mapper_parsing_exception",
                "failed to parse field [message] of type [long] in document. Preview of field's value: 'x'".to_owned(),
                Some(("illegal_argument_exception", "For input string: \"x\"".to_owned())),
            )),
        );
    }
    if take(&st.faults, |f| &mut f.item_429) {
        st.seen.lock().unwrap().items_429 += 1;
        return (
            429,
            "",
            Some((
                "es_rejected_execution_exception",
                "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1, max_coordinating_and_primary_bytes=0]".to_owned(),
                None,
            )),
        );
    }
    let mut idx = st.index.lock().unwrap();
    let id = match id {
        Some(id) => id,
        None => {
            idx.next_id += 1;
            format!("auto-{}", idx.next_id)
        }
    };
    let key = (index.to_owned(), id.clone());
    if idx.docs.contains_key(&key) {
        if op == "create" {
            drop(idx);
            st.seen.lock().unwrap().conflicts += 1;
            return (
                409,
                "",
                Some((
                    "version_conflict_engine_exception",
                    format!(
                        "[{id}]: version conflict, document already exists (current version [1])"
                    ),
                    None,
                )),
            );
        }
        idx.docs.insert(key, doc);
        return (200, "updated", None);
    }
    idx.docs.insert(key.clone(), doc);
    idx.order.push(key);
    (201, "created", None)
}

/// A TLS front for a [`FakeEs`] (test certificates in `tests/data/tls`): terminates TLS with
/// rustls, optionally requiring a client certificate signed by the test CA, and forwards each
/// request to the plain fake over a fresh connection. Blocking threads; they live as long as
/// the test process.
pub struct TlsFront {
    pub port: u16,
}

impl TlsFront {
    pub fn start(backend: SocketAddr, require_client_cert: bool) -> TlsFront {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tls_dir();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(format!("{dir}/server.pem"))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/server.key")).unwrap();
        let builder = rustls::ServerConfig::builder();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_file(format!("{dir}/ca.pem")).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = Arc::new(builder.with_single_cert(certs, key).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = tls_connection(tcp, config, backend);
                });
            }
        });
        TlsFront { port }
    }
}

/// Where the test certificates are.
pub fn tls_dir() -> String {
    format!("{}/tests/data/tls", env!("CARGO_MANIFEST_DIR"))
}

fn tls_connection(
    tcp: std::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    backend: SocketAddr,
) -> std::io::Result<()> {
    use std::io::Write;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tls.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let len = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            let mut chunk = [0u8; 16 * 1024];
            let n = tls.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let request: Vec<u8> = buf.drain(..head_end + 4 + len).collect();
        // Forward with `connection: close`, so the answer ends at EOF.
        let first_line_end = find(&request, b"\r\n").unwrap_or(0);
        let mut up = std::net::TcpStream::connect(backend)?;
        up.write_all(&request[..first_line_end + 2])?;
        up.write_all(b"connection: close\r\n")?;
        up.write_all(&request[first_line_end + 2..])?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer)?;
        tls.write_all(&answer)?;
        tls.flush()?;
    }
}
