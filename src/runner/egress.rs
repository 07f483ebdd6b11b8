//! The egress proxy: a plugin's only way out of its network namespace.
//!
//! The runner binds this proxy on `127.0.0.1:3128` *inside* the plugin's namespace (see
//! [`super::netns`]) and gives the plugin `HTTP_PROXY`/`HTTPS_PROXY` pointing at it; the proxy
//! itself resolves names and dials from the runner's (host) namespace. It is an HTTP/1.1
//! forward proxy that understands two request shapes:
//!
//! - `CONNECT host:port` (RFC 9110 §9.3.6): the upstream is dialled first, then the client
//!   gets `200 Connection Established` and bytes are relayed both ways until either side
//!   closes. This is how HTTPS leaves; the proxy never sees inside the TLS.
//! - absolute-form requests such as `GET http://host:port/path HTTP/1.1` (RFC 9112 §3.2.2):
//!   forwarded in origin-form with `Host` set from the target URI, hop-by-hop and `Proxy-*`
//!   header fields removed (RFC 9110 §7.6.1), bodies and responses streamed. One request per
//!   connection: every response carries `Connection: close`.
//!
//! Every destination is checked with [`allows`] against the plugin's allowed outbound hosts
//! before anything is dialled; a refused one gets `403` and is reported through [`OnRefusal`]
//! (the runner writes it to the audit trail). This module does not decide the allowed list —
//! the policy does — and does not speak TLS or HTTP/2.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long dialling one upstream address may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`serve`] waits after a failed accept so that a persistent error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The allowed-list entry that admits every destination.
const ANY: &str = "*";

/// One outbound destination the proxy refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub host: String,
    pub port: u16,
    pub method: String,
    pub reason: String,
}

/// Called once for every refused destination (before the `403` is sent).
pub type OnRefusal = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// One outbound destination the proxy let through (before the upstream is dialled).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Passed {
    pub host: String,
    pub port: u16,
    pub method: String,
}

/// Called once for every allowed destination.
pub type OnPassed = Arc<dyn Fn(&Passed) + Send + Sync>;

/// Why a proxied request did not reach its upstream; each maps to one response status.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// Not a request a forward proxy can serve (`400`).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The destination is not allowed (`403`).
    #[error("{}:{} is not in this plugin's allowed outbound hosts", .0.host, .0.port)]
    Refused(Refusal),
    /// The host name did not resolve (`502`).
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    /// No address of the host accepted a connection (`502`).
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect { host: String, port: u16, source: io::Error },
    /// The upstream broke the HTTP exchange (`502`).
    #[error("upstream {host}:{port} failed: {source}")]
    Upstream { host: String, port: u16, source: hyper::Error },
}

impl EgressError {
    fn status(&self) -> StatusCode {
        match self {
            EgressError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EgressError::Refused(_) => StatusCode::FORBIDDEN,
            EgressError::Resolve { .. } | EgressError::Connect { .. } | EgressError::Upstream { .. } => {
                StatusCode::BAD_GATEWAY
            }
        }
    }
}

/// Whether `host:port` is allowed by `allowed` entries: `host` (ports 80 and 443 only),
/// `host:port` (exactly that port) or `*` (anything). Host names compare case-insensitively
/// with a trailing dot ignored. IP literals in a request are refused unless an entry is `*`:
/// entries name hosts, and an address would side-step that.
pub fn allows(allowed: &[String], host: &str, port: u16) -> bool {
    if allowed.iter().any(|entry| entry.trim() == ANY) {
        return true;
    }
    if host.is_empty() || is_ip_literal(host) {
        return false;
    }
    let host = without_root_dot(host);
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        let (name, ports_ok) = match entry.rsplit_once(':') {
            Some((name, p)) => (name, p.parse::<u16>().is_ok_and(|p| p == port)),
            None => (entry, port == 80 || port == 443),
        };
        ports_ok && !name.is_empty() && without_root_dot(name).eq_ignore_ascii_case(host)
    })
}

fn without_root_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// `host` as it appears in a URI, IPv6 brackets included.
fn is_ip_literal(host: &str) -> bool {
    unbracket(host).parse::<IpAddr>().is_ok()
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Serves an HTTP/1.1 forward proxy on `listener` until the future is dropped (abort the
/// task running it); dropping it also ends every connection and tunnel it is serving.
pub async fn serve(listener: TcpListener, allowed: Vec<String>, on_refusal: OnRefusal) {
    serve_audited(listener, allowed, on_refusal, Arc::new(|_: &Passed| {})).await
}

/// [`serve`], also reporting every destination let through (the runner audits both).
pub async fn serve_audited(listener: TcpListener, allowed: Vec<String>, on_refusal: OnRefusal, on_passed: OnPassed) {
    serve_redirected(listener, allowed, on_refusal, on_passed, None).await
}

/// [`serve_audited`], dialling every allowed destination at `redirect` instead of resolving
/// it, when given. The verifier's conformance run uses it to point a plugin's declared
/// hosts at a stub upstream; the allow list is enforced exactly as in production.
pub async fn serve_redirected(
    listener: TcpListener,
    allowed: Vec<String>,
    on_refusal: OnRefusal,
    on_passed: OnPassed,
    redirect: Option<SocketAddr>,
) {
    let proxy = Arc::new(Proxy { allowed, on_refusal, on_passed, redirect });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(proxy.clone(), stream, peer));
                }
                Err(error) => {
                    tracing::warn!(%error, "egress: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

struct Proxy {
    allowed: Vec<String>,
    on_refusal: OnRefusal,
    on_passed: OnPassed,
    redirect: Option<SocketAddr>,
}

/// Where a request goes.
struct Target {
    /// As written in the request (IPv6 in brackets).
    host: String,
    port: u16,
}

/// A CONNECT accepted on a client connection: once hyper hands the connection over, its
/// bytes are relayed to `upstream`.
struct Tunnel {
    client: hyper::upgrade::OnUpgrade,
    upstream: TcpStream,
    target: Target,
}

type TunnelSlot = Arc<Mutex<Option<Tunnel>>>;

/// Serves one client connection, then relays its tunnel if it asked for one; the relay runs
/// in this same task so that aborting [`serve`] ends it.
async fn connection(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr) {
    let slot = TunnelSlot::default();
    let service = {
        let slot = slot.clone();
        service_fn(move |req| {
            let (proxy, slot) = (proxy.clone(), slot.clone());
            async move { Ok::<_, Infallible>(proxy.handle(req, &slot).await) }
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, %peer, "egress: client connection ended with an error");
    }
    let tunnel = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    let Some(Tunnel { client, mut upstream, target }) = tunnel else { return };
    let (host, port) = (&target.host, target.port);
    match client.await {
        Ok(upgraded) => match tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await {
            Ok((up, down)) => tracing::debug!(%peer, host, port, up, down, "egress: tunnel closed"),
            Err(error) => tracing::debug!(%error, %peer, host, port, "egress: tunnel ended with an error"),
        },
        Err(error) => tracing::debug!(%error, %peer, host, port, "egress: CONNECT was not upgraded"),
    }
}

impl Proxy {
    async fn handle(&self, req: Request<Incoming>, slot: &TunnelSlot) -> Response<Body> {
        let result =
            if req.method() == Method::CONNECT { self.tunnel(req, slot).await } else { self.forward(req).await };
        result.unwrap_or_else(|error| error_response(&error))
    }

    /// CONNECT (RFC 9110 §9.3.6): dial first so that a failure can still be a `502`.
    async fn tunnel(&self, mut req: Request<Incoming>, slot: &TunnelSlot) -> Result<Response<Body>, EgressError> {
        let target = connect_target(req.uri())?;
        self.check(&target, req.method())?;
        let upstream = dial(&target, self.redirect).await?;
        let client = hyper::upgrade::on(&mut req);
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Tunnel { client, upstream, target });
        let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        response.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"Connection Established"));
        Ok(response)
    }

    /// An absolute-form request (RFC 9112 §3.2.2), forwarded in origin-form.
    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Body>, EgressError> {
        let target = absolute_target(req.uri())?;
        self.check(&target, req.method())?;
        let (mut parts, body) = req.into_parts();

        let origin_form = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let origin_form = if origin_form.is_empty() { "/" } else { origin_form };
        let uri = origin_form.parse::<Uri>().map_err(|e| EgressError::BadRequest(format!("request target: {e}")))?;
        // A proxy replaces Host with the target URI's authority (RFC 9112 §3.2.2).
        let host = match parts.uri.port_u16() {
            Some(port) => format!("{}:{port}", target.host),
            None => target.host.clone(),
        };
        let host = HeaderValue::from_str(&host).map_err(|e| EgressError::BadRequest(format!("host: {e}")))?;
        strip_hop_by_hop(&mut parts.headers);
        // hyper already answered any `Expect: 100-continue` when the body was first read.
        parts.headers.remove(header::EXPECT);
        parts.headers.insert(header::HOST, host);
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        parts.uri = uri;
        parts.version = Version::HTTP_11;

        let upstream = dial(&target, self.redirect).await?;
        let upstream_error = |source| EgressError::Upstream { host: target.host.clone(), port: target.port, source };
        let (mut sender, exchange) =
            hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await.map_err(upstream_error)?;
        // Drives the upstream connection while the response body streams back; it ends when
        // the body is done or the client side drops it.
        tokio::spawn(async move {
            if let Err(error) = exchange.await {
                tracing::debug!(%error, "egress: upstream connection ended with an error");
            }
        });
        let response = sender.send_request(Request::from_parts(parts, body)).await.map_err(upstream_error)?;

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// Refuses (and reports) a destination not in the allowed list.
    fn check(&self, target: &Target, method: &Method) -> Result<(), EgressError> {
        if allows(&self.allowed, &target.host, target.port) {
            (self.on_passed)(&Passed { host: target.host.clone(), port: target.port, method: method.to_string() });
            return Ok(());
        }
        let reason = if is_ip_literal(&target.host) {
            "IP address literals are refused; only allowed host names may be reached"
        } else {
            "not in this plugin's allowed outbound hosts"
        };
        let refusal =
            Refusal { host: target.host.clone(), port: target.port, method: method.to_string(), reason: reason.into() };
        tracing::info!(host = %refusal.host, port = refusal.port, method = %refusal.method, reason, "egress: refused");
        (self.on_refusal)(&refusal);
        Err(EgressError::Refused(refusal))
    }
}

/// The authority-form target of a CONNECT: `host:port`, port required (RFC 9110 §9.3.6).
fn connect_target(uri: &Uri) -> Result<Target, EgressError> {
    let bad = |why: &str| EgressError::BadRequest(format!("CONNECT target {uri}: {why}"));
    if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| !p.as_str().is_empty()) {
        return Err(bad("expected host:port"));
    }
    let authority = uri.authority().ok_or_else(|| bad("expected host:port"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information is not allowed"));
    }
    let port = authority.port_u16().filter(|p| *p != 0).ok_or_else(|| bad("a port is required"))?;
    if authority.host().is_empty() {
        return Err(bad("a host is required"));
    }
    Ok(Target { host: authority.host().to_string(), port })
}

/// The target of an absolute-form `http://` request; port 80 unless given.
fn absolute_target(uri: &Uri) -> Result<Target, EgressError> {
    let bad = |why: &str| EgressError::BadRequest(format!("request target {uri}: {why}"));
    match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
        Some(_) => return Err(bad("only http:// is forwarded; use CONNECT for anything else")),
        None => return Err(bad("a proxy needs an absolute URI such as http://host/path")),
    }
    let authority = uri.authority().ok_or_else(|| bad("a host is required"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information is not allowed"));
    }
    if authority.host().is_empty() {
        return Err(bad("a host is required"));
    }
    let port = match authority.port() {
        None => 80,
        Some(port) => port.as_u16(),
    };
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok(Target { host: authority.host().to_string(), port })
}

/// Resolves in the runner's namespace and connects to the first address that answers.
async fn dial(target: &Target, redirect: Option<SocketAddr>) -> Result<TcpStream, EgressError> {
    if let Some(address) = redirect {
        return match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(EgressError::Connect { host: target.host.clone(), port: target.port, source }),
            Err(_) => Err(EgressError::Connect {
                host: target.host.clone(),
                port: target.port,
                source: io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {address} timed out")),
            }),
        };
    }
    let name = unbracket(&target.host);
    let addresses = tokio::net::lookup_host((name, target.port))
        .await
        .map_err(|source| EgressError::Resolve { host: target.host.clone(), source })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no addresses");
    for address in addresses {
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => last = error,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {address} timed out")),
        }
    }
    Err(EgressError::Connect { host: target.host.clone(), port: target.port, source: last })
}

/// Removes the fields that describe one connection rather than the message (RFC 9110
/// §7.6.1): `Connection` and every field it names, the classic hop-by-hop set, and all
/// `Proxy-*` fields (credentials meant for this proxy must not travel on).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [header::CONNECTION, header::TE, header::TRAILER, header::TRANSFER_ENCODING, header::UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    let proxy: Vec<HeaderName> = headers.keys().filter(|name| name.as_str().starts_with("proxy-")).cloned().collect();
    for name in proxy {
        headers.remove(name);
    }
}

fn error_response(error: &EgressError) -> Response<Body> {
    let text = match error {
        EgressError::Refused(_) | EgressError::BadRequest(_) => format!("berth egress: {error}\n"),
        EgressError::Resolve { host, .. } => {
            tracing::warn!(%error, "egress: upstream unreachable");
            format!("berth egress: cannot resolve {host}\n")
        }
        EgressError::Connect { host, port, .. } | EgressError::Upstream { host, port, .. } => {
            tracing::warn!(%error, "egress: upstream unreachable");
            format!("berth egress: cannot reach {host}:{port}\n")
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed());
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn allows_follows_port_case_dot_and_wildcard_rules() {
        let allowed = list(&["api.example.com", "Hooks.Example.org:8443", "dotted.example.net."]);
        let cases = [
            ("api.example.com", 443, true),
            ("api.example.com", 80, true),
            ("api.example.com", 8080, false),
            ("API.Example.COM", 443, true),
            ("api.example.com.", 443, true),
            ("dotted.example.net", 80, true),
            ("hooks.example.org", 8443, true),
            ("hooks.example.org.", 8443, true),
            ("hooks.example.org", 443, false),
            ("hooks.example.org", 80, false),
            ("example.com", 443, false),
            ("evil-api.example.com", 443, false),
            ("api.example.com.evil", 443, false),
            ("", 443, false),
            ("93.184.216.34", 443, false),
            ("[::1]", 443, false),
        ];
        for (host, port, expected) in cases {
            assert_eq!(allows(&allowed, host, port), expected, "{host}:{port}");
        }
        let any = list(&["api.example.com", "*"]);
        for (host, port) in [("anything.example", 1), ("10.0.0.1", 22), ("[::1]", 8080)] {
            assert!(allows(&any, host, port), "{host}:{port}");
        }
        assert!(!allows(&[], "api.example.com", 443));
        // An IP literal is refused even when it is itself an entry.
        assert!(!allows(&list(&["127.0.0.1:8080", "127.0.0.1"]), "127.0.0.1", 8080));
        // A malformed entry admits nothing.
        assert!(!allows(&list(&["api.example.com:https", ":443"]), "api.example.com", 443));
    }

    /// What the test upstream saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        method: Method,
        uri: String,
        headers: HeaderMap,
    }

    /// A tiny HTTP server on 127.0.0.1: "hello" for GET, the body echoed for anything else.
    struct Upstream {
        port: u16,
        connections: Arc<AtomicUsize>,
        seen: Arc<Mutex<Vec<Seen>>>,
        task: JoinHandle<()>,
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn upstream() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (connections, seen) = (connections.clone(), seen.clone());
            async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    connections.fetch_add(1, Ordering::SeqCst);
                    let seen = seen.clone();
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            seen.lock().unwrap().push(Seen {
                                method: req.method().clone(),
                                uri: req.uri().to_string(),
                                headers: req.headers().clone(),
                            });
                            let body = if req.method() == Method::GET {
                                Bytes::from_static(b"hello")
                            } else {
                                req.into_body().collect().await?.to_bytes()
                            };
                            Ok::<_, hyper::Error>(Response::new(Full::new(body)))
                        }
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                    );
                }
            }
        });
        Upstream { port, connections, seen, task }
    }

    /// A raw TCP echo server on 127.0.0.1, for tunnels.
    async fn echo() -> (u16, Arc<AtomicUsize>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                });
            }
        });
        (port, connections, task)
    }

    struct Running {
        addr: SocketAddr,
        refusals: Arc<Mutex<Vec<Refusal>>>,
        task: JoinHandle<()>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn proxy(allowed: Vec<String>) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let recorded = refusals.clone();
        let on_refusal: OnRefusal = Arc::new(move |r: &Refusal| recorded.lock().unwrap().push(r.clone()));
        let task = tokio::spawn(serve(listener, allowed, on_refusal));
        Running { addr, refusals, task }
    }

    fn client(proxy: &Running) -> reqwest::Client {
        let via = reqwest::Proxy::http(format!("http://{}", proxy.addr)).unwrap();
        reqwest::Client::builder().proxy(via).build().unwrap()
    }

    /// Sends raw bytes to the proxy and reads until it closes.
    async fn raw(proxy: &Running, request: &str) -> String {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    }

    /// Reads a response head (through the blank line) and nothing more.
    async fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = stream.read_u8().await.unwrap();
            head.push(byte);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn forwards_an_allowed_request() {
        let up = upstream().await;
        let proxy = proxy(list(&[&format!("localhost:{}", up.port)])).await;
        let response = client(&proxy).get(format!("http://localhost:{}/greet?x=1", up.port)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["connection"], "close");
        assert_eq!(response.text().await.unwrap(), "hello");
        let seen = up.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, Method::GET);
        assert_eq!(seen[0].uri, "/greet?x=1");
        assert_eq!(seen[0].headers["host"], format!("localhost:{}", up.port));
        assert!(proxy.refusals.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn forwards_in_origin_form_without_hop_by_hop_fields() {
        let up = upstream().await;
        let proxy = proxy(list(&[&format!("LOCALHOST.:{}", up.port)])).await;
        let response = raw(
            &proxy,
            &format!(
                "GET http://localhost:{}/a/b?c=d HTTP/1.1\r\nHost: elsewhere.example\r\n\
                 Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\
                 Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
                 X-Kept: 2\r\n\r\n",
                up.port
            ),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("hello"), "{response}");
        let seen = up.seen.lock().unwrap().clone();
        let headers = &seen[0].headers;
        assert_eq!(seen[0].uri, "/a/b?c=d");
        assert_eq!(headers["host"], format!("localhost:{}", up.port));
        assert_eq!(headers["x-kept"], "2");
        for gone in ["proxy-authorization", "proxy-connection", "x-hop", "keep-alive", "te"] {
            assert!(!headers.contains_key(gone), "{gone} was forwarded: {headers:?}");
        }
    }

    #[tokio::test]
    async fn refuses_a_host_not_allowed_without_contacting_it() {
        let up = upstream().await;
        let proxy = proxy(list(&["localhost:1", "localhost"])).await;
        let response = client(&proxy).get(format!("http://localhost:{}/", up.port)).send().await.unwrap();
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.text().await.unwrap(),
            format!("berth egress: localhost:{} is not in this plugin's allowed outbound hosts\n", up.port)
        );
        let refusals = proxy.refusals.lock().unwrap().clone();
        assert_eq!(refusals.len(), 1);
        assert_eq!(
            (refusals[0].host.as_str(), refusals[0].port, refusals[0].method.as_str()),
            ("localhost", up.port, "GET")
        );
        assert_eq!(up.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn refuses_ip_literals_unless_everything_is_allowed() {
        let up = upstream().await;
        let named = proxy(list(&[&format!("localhost:{}", up.port)])).await;
        let request = format!("GET http://127.0.0.1:{}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", up.port);
        let response = raw(&named, &request).await;
        assert!(response.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{response}");
        let refusals = named.refusals.lock().unwrap().clone();
        assert_eq!(refusals.len(), 1);
        assert!(refusals[0].reason.contains("IP address"), "{refusals:?}");
        assert_eq!(up.connections.load(Ordering::SeqCst), 0);

        let any = proxy(list(&["*"])).await;
        let response = raw(&any, &request).await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("hello"), "{response}");
    }

    #[tokio::test]
    async fn connect_tunnels_bytes_both_ways() {
        let (port, _, echo_task) = echo().await;
        let proxy = proxy(list(&[&format!("localhost:{port}")])).await;
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let connect = format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
        stream.write_all(connect.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200 Connection Established\r\n"), "{head}");
        for message in [&b"ping"[..], b"\x00\x01 binary \xff"] {
            stream.write_all(message).await.unwrap();
            let mut back = vec![0; message.len()];
            stream.read_exact(&mut back).await.unwrap();
            assert_eq!(back, message);
        }
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        echo_task.abort();
    }

    #[tokio::test]
    async fn connect_to_a_host_not_allowed_is_refused() {
        let (port, connections, echo_task) = echo().await;
        let proxy = proxy(list(&["localhost"])).await;
        let response =
            raw(&proxy, &format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")).await;
        assert!(response.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{response}");
        assert!(
            response
                .ends_with(&format!("berth egress: localhost:{port} is not in this plugin's allowed outbound hosts\n")),
            "{response}"
        );
        let refusals = proxy.refusals.lock().unwrap().clone();
        assert_eq!(refusals.len(), 1);
        assert_eq!(
            (refusals[0].host.as_str(), refusals[0].port, refusals[0].method.as_str()),
            ("localhost", port, "CONNECT")
        );
        assert_eq!(connections.load(Ordering::SeqCst), 0);
        echo_task.abort();
    }

    #[tokio::test]
    async fn forwards_request_bodies_intact() {
        let up = upstream().await;
        let proxy = proxy(list(&[&format!("localhost:{}", up.port)])).await;
        let client = client(&proxy);
        let url = format!("http://localhost:{}/upload", up.port);
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

        // Content-Length framing.
        let response = client.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap(), body);

        // Chunked framing.
        let chunks: Vec<Result<Vec<u8>, io::Error>> = body.chunks(7_000).map(|c| Ok(c.to_vec())).collect();
        let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let response = client.put(&url).body(streamed).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap(), body);

        let seen = up.seen.lock().unwrap().clone();
        assert_eq!(seen[0].headers["content-length"], body.len().to_string());
        assert_eq!(seen[1].method, Method::PUT);
        assert_eq!(seen[1].headers["transfer-encoding"], "chunked");
    }

    #[tokio::test]
    async fn malformed_requests_get_400() {
        let up = upstream().await;
        let proxy = proxy(list(&["*"])).await;
        let requests = [
            "garbage\r\n\r\n".to_string(),
            "GET /origin-form HTTP/1.1\r\nHost: localhost\r\n\r\n".to_string(),
            format!("GET https://localhost:{}/ HTTP/1.1\r\nHost: localhost\r\n\r\n", up.port),
            "CONNECT localhost HTTP/1.1\r\nHost: localhost\r\n\r\n".to_string(),
            "CONNECT localhost:0 HTTP/1.1\r\nHost: localhost\r\n\r\n".to_string(),
        ];
        for request in requests {
            let response = raw(&proxy, &request).await;
            assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{request:?} → {response}");
        }
        assert_eq!(up.connections.load(Ordering::SeqCst), 0);
        assert!(proxy.refusals.lock().unwrap().is_empty());
    }

    /// The deployment shape: the proxy listens inside a loopback-only namespace and dials
    /// from the host namespace, where the upstream lives.
    #[tokio::test]
    async fn proxy_inside_a_namespace_reaches_the_host_upstream() {
        let Some(ns) = crate::runner::netns::tests::fresh_namespace() else { return };
        let netns = crate::runner::netns::Netns::open(&ns.path).unwrap();
        let up = upstream().await;
        let proxy_addr = SocketAddr::from(([127, 0, 0, 1], 3128));
        let listener = TcpListener::from_std(netns.bind(proxy_addr).unwrap()).unwrap();
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let recorded = refusals.clone();
        let on_refusal: OnRefusal = Arc::new(move |r: &Refusal| recorded.lock().unwrap().push(r.clone()));
        let task = tokio::spawn(serve(listener, list(&[&format!("localhost:{}", up.port)]), on_refusal));

        // Inside the namespace the upstream's port is closed: only the proxy leads out.
        let direct = netns.connect_tokio(SocketAddr::from(([127, 0, 0, 1], up.port))).await.unwrap_err();
        assert!(matches!(direct, crate::runner::netns::NetnsError::Connect { .. }), "{direct}");

        let mut plugin = netns.connect_tokio(proxy_addr).await.unwrap();
        let request = format!("GET http://localhost:{}/from-plugin HTTP/1.1\r\nHost: x\r\n\r\n", up.port);
        plugin.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        plugin.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("hello"), "{response}");
        assert_eq!(up.seen.lock().unwrap()[0].uri, "/from-plugin");
        assert!(refusals.lock().unwrap().is_empty());
        task.abort();
    }

    #[tokio::test]
    async fn unreachable_upstream_gets_502_not_a_refusal() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let proxy = proxy(list(&[&format!("localhost:{port}")])).await;
        let response = raw(&proxy, &format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(response.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{response}");
        let response = raw(&proxy, &format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(response.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{response}");
        assert!(proxy.refusals.lock().unwrap().is_empty());
    }
}
