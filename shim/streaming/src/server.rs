//! The HTTP side: accepting connections (plain or TLS), routing
//! `/{exec|attach|portforward}/<token>`, and the upgrade handshakes that turn
//! a request into a SPDY or WebSocket session.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::WebSocketStream;

use crate::remotecommand::{self, Options, Target};
use crate::spdy::{self, Connection, Role};
use crate::token::TokenStore;
use crate::{portforward, websocket, Backend, BoxFuture, StreamRequest};

pub const HEADER_PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
pub const HEADER_ACCEPTED_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";
const SEC_WEBSOCKET_PROTOCOL: &str = "Sec-WebSocket-Protocol";
const SPDY_UPGRADE: &str = "SPDY/3.1";
/// Time allowed for a TLS handshake and for a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ServerState {
    pub tokens: Arc<TokenStore>,
    pub backend: Arc<dyn Backend>,
}

/// Loads a PEM certificate chain and private key into a TLS acceptor (ring provider, HTTP/1.1 only).
pub fn tls_acceptor(cert: &Path, key: &Path) -> std::io::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("TLS certificate {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "TLS certificate {}: no certificate in the file",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("TLS key {}: {e}", key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| {
        invalid(format!(
            "TLS certificate {} with key {}: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until aborted; aborting also ends every connection and session.
pub async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<ServerState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    if let Err(e) = keepalive(&tcp) {
                        tracing::debug!("streaming: TCP keepalive for {peer}: {e}");
                    }
                    connections.spawn(serve_connection(tcp, peer, tls.clone(), state.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("streaming: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// TCP keepalive probes find clients that vanished without closing (a
/// rebooted node, a dropped network): their sessions end instead of waiting
/// forever. Idle 30 s, then 3 probes 10 s apart.
fn keepalive(tcp: &tokio::net::TcpStream) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(tcp, sockopt::KeepAlive, &true)?;
    setsockopt(tcp, sockopt::TcpKeepIdle, &30)?;
    setsockopt(tcp, sockopt::TcpKeepInterval, &10)?;
    setsockopt(tcp, sockopt::TcpKeepCount, &3)
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<ServerState>,
) {
    match tls {
        None => serve_http(tcp, state).await,
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
        {
            Ok(Ok(stream)) => serve_http(stream, state).await,
            Ok(Err(e)) => tracing::debug!("streaming: TLS handshake with {peer} failed: {e}"),
            Err(_) => tracing::debug!("streaming: TLS handshake with {peer} timed out"),
        },
    }
}

type SessionSlot = Arc<Mutex<Option<BoxFuture<()>>>>;

/// Serves HTTP/1.1 on one connection; after an upgrade, runs the session on it.
async fn serve_http<IO>(io: IO, state: Arc<ServerState>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot: SessionSlot = Arc::default();
    let service_slot = slot.clone();
    let service = hyper::service::service_fn(move |req| {
        let response = route(req, &state, &service_slot);
        async move { Ok::<_, Infallible>(response) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!("streaming: http connection: {e}");
    }
    let session = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(session) = session {
        session.await;
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    fn spdy_protocols(self) -> &'static [&'static str] {
        match self {
            Self::Exec | Self::Attach => remotecommand::SPDY_PROTOCOLS,
            Self::PortForward => portforward::SPDY_PROTOCOLS,
        }
    }

    fn websocket_protocols(self) -> &'static [&'static str] {
        match self {
            Self::Exec | Self::Attach => remotecommand::WEBSOCKET_PROTOCOLS,
            Self::PortForward => portforward::WEBSOCKET_PROTOCOLS,
        }
    }
}

/// Values of a header that may repeat and may hold comma-separated lists.
fn list_header(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn header_has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    list_header(headers, name.as_str())
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

/// The first protocol of the client's (in its order) that the server offers.
fn negotiate(client: &[String], server: &[&str]) -> Option<String> {
    client
        .iter()
        .find(|c| server.contains(&c.as_str()))
        .cloned()
}

fn route(
    mut req: Request<hyper::body::Incoming>,
    state: &ServerState,
    slot: &SessionSlot,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/');
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let kind = match parts.next() {
        Some("exec") => Kind::Exec,
        Some("attach") => Kind::Attach,
        Some("portforward") => Kind::PortForward,
        _ => return text(StatusCode::NOT_FOUND, format!("{path}: not found")),
    };
    let token = parts.next().unwrap_or("");
    if token.is_empty() || token.contains('/') {
        return text(StatusCode::NOT_FOUND, format!("{path}: not found"));
    }
    if req.method() != Method::GET && req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} is not allowed; use GET or POST", req.method()),
        );
    }
    let request = match state.tokens.take(token) {
        Some(r)
            if matches!(
                (&r, kind),
                (StreamRequest::Exec { .. }, Kind::Exec)
                    | (StreamRequest::Attach { .. }, Kind::Attach)
                    | (StreamRequest::PortForward { .. }, Kind::PortForward)
            ) =>
        {
            r
        }
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                format!("{path}: unknown, already used or expired token"),
            )
        }
    };
    let headers = req.headers();
    let websocket = header_has_token(headers, CONNECTION, "upgrade")
        && header_has_token(headers, UPGRADE, "websocket");
    let spdy = header_has_token(headers, CONNECTION, "upgrade")
        && header_has_token(headers, UPGRADE, SPDY_UPGRADE);
    if websocket {
        websocket_upgrade(&mut req, kind, request, state, slot)
    } else if spdy {
        spdy_upgrade(&mut req, kind, request, state, slot)
    } else {
        text(
            StatusCode::BAD_REQUEST,
            format!(
                "unable to upgrade: this endpoint needs an upgrade to {SPDY_UPGRADE} ({HEADER_PROTOCOL_VERSION}: {}) or to websocket ({SEC_WEBSOCKET_PROTOCOL}: {})",
                kind.spdy_protocols().join(", "),
                kind.websocket_protocols().join(", ")
            ),
        )
    }
}

/// What an upgraded connection carries, whatever its transport.
enum Session {
    /// A process's stdio: exec or attach.
    Process(Target, Options),
    /// Ports of a pod sandbox.
    PortForward(String),
}

impl Session {
    fn of(request: StreamRequest) -> Session {
        match request {
            StreamRequest::Exec {
                container_id,
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
            } => Session::Process(
                Target::Exec { container_id, cmd },
                Options::new(stdin, stdout, stderr, tty),
            ),
            StreamRequest::Attach {
                container_id,
                tty,
                stdin,
                stdout,
                stderr,
            } => Session::Process(
                Target::Attach { container_id },
                Options::new(stdin, stdout, stderr, tty),
            ),
            StreamRequest::PortForward { sandbox_id, .. } => Session::PortForward(sandbox_id),
        }
    }
}

fn spdy_upgrade(
    req: &mut Request<hyper::body::Incoming>,
    kind: Kind,
    request: StreamRequest,
    state: &ServerState,
    slot: &SessionSlot,
) -> Response<Full<Bytes>> {
    let offered = list_header(req.headers(), HEADER_PROTOCOL_VERSION);
    let supported = kind.spdy_protocols();
    let protocol = if offered.is_empty() {
        // Clients from before protocol negotiation speak the first version.
        supported[supported.len() - 1].to_string()
    } else {
        match negotiate(&offered, supported) {
            Some(p) => p,
            None => {
                let mut r = text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
                        offered.join(", "),
                        supported.join(", ")
                    ),
                );
                for p in supported {
                    r.headers_mut().append(
                        HEADER_ACCEPTED_PROTOCOL_VERSIONS,
                        HeaderValue::from_static(p),
                    );
                }
                return r;
            }
        }
    };
    let on_upgrade = hyper::upgrade::on(req);
    let backend = state.backend.clone();
    let chosen = protocol.clone();
    let session = async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("streaming: SPDY upgrade failed: {e}"),
        };
        let (conn, incoming) = Connection::new(
            TokioIo::new(upgraded),
            Role::Server,
            spdy::Config::default(),
        );
        match Session::of(request) {
            Session::Process(target, options) => {
                let version = remotecommand::Version::from_protocol(&chosen)
                    .unwrap_or(remotecommand::Version::V1);
                remotecommand::serve_spdy(conn, incoming, version, backend, target, options).await
            }
            Session::PortForward(sandbox_id) => {
                portforward::serve_spdy(conn, incoming, backend, sandbox_id).await
            }
        }
    };
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::pin(session));
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
    if !offered.is_empty() {
        h.insert(
            HEADER_PROTOCOL_VERSION,
            HeaderValue::from_str(&protocol).expect("a known protocol name"),
        );
    }
    r
}

/// The ports of a WebSocket port-forward: the request's, or the `port` query parameters.
fn websocket_ports(
    req: &Request<hyper::body::Incoming>,
    requested: &[i32],
) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    let from_query: Vec<String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("port="))
        .flat_map(|v| v.split(','))
        .map(str::to_string)
        .collect();
    if requested.is_empty() {
        for p in &from_query {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("unable to parse {p:?} as a port")),
            }
        }
    } else {
        for &p in requested {
            match u16::try_from(p) {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("port {p} is out of range")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    if ports.len() > portforward::MAX_WEBSOCKET_PORTS {
        return Err(format!(
            "at most {} ports per connection",
            portforward::MAX_WEBSOCKET_PORTS
        ));
    }
    Ok(ports)
}

fn websocket_upgrade(
    req: &mut Request<hyper::body::Incoming>,
    kind: Kind,
    request: StreamRequest,
    state: &ServerState,
    slot: &SessionSlot,
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    if headers
        .get("Sec-WebSocket-Version")
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        let mut r = text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: Sec-WebSocket-Version must be 13".into(),
        );
        r.headers_mut()
            .insert("Sec-WebSocket-Version", HeaderValue::from_static("13"));
        return r;
    }
    let Some(key) = headers
        .get("Sec-WebSocket-Key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: Sec-WebSocket-Key is missing".into(),
        );
    };
    let offered = list_header(headers, SEC_WEBSOCKET_PROTOCOL);
    let supported = kind.websocket_protocols();
    let protocol = if offered.is_empty() {
        String::new()
    } else {
        match negotiate(&offered, supported) {
            Some(p) => p,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unable to upgrade: requested protocol(s) [{}] are not supported; supported: [{}]",
                        offered.join(", "),
                        supported.join(", ")
                    ),
                )
            }
        }
    };
    let tunnel = protocol == portforward::WEBSOCKET_TUNNEL_PROTOCOL;
    let ports = match &request {
        StreamRequest::PortForward { .. } if tunnel => Vec::new(),
        StreamRequest::PortForward { ports, .. } => match websocket_ports(req, ports) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("unable to upgrade: {e}")),
        },
        _ => Vec::new(),
    };
    let on_upgrade = hyper::upgrade::on(&mut *req);
    let backend = state.backend.clone();
    let chosen = protocol.clone();
    let session = async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("streaming: websocket upgrade failed: {e}"),
        };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            WsRole::Server,
            Some(websocket::config()),
        )
        .await;
        match Session::of(request) {
            Session::Process(target, options) => {
                remotecommand::serve_websocket(ws, &chosen, backend, target, options).await
            }
            Session::PortForward(sandbox_id) if tunnel => {
                let (conn, incoming) = Connection::new(
                    websocket::MessageStream::new(ws),
                    Role::Server,
                    spdy::Config::default(),
                );
                portforward::serve_spdy(conn, incoming, backend, sandbox_id).await
            }
            Session::PortForward(sandbox_id) => {
                portforward::serve_websocket(ws, &chosen, backend, sandbox_id, ports).await
            }
        }
    };
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::pin(session));
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        "Sec-WebSocket-Accept",
        HeaderValue::from_str(&derive_accept_key(&key)).expect("base64 is a valid header value"),
    );
    if !protocol.is_empty() {
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&protocol).expect("a known protocol name"),
        );
    }
    r
}
