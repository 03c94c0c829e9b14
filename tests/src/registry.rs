//! A private Debian `docker-registry` on 127.0.0.1: plain HTTP, a free port,
//! storage in a temp dir, optionally htpasswd or token auth; stopped by PID
//! on drop. Also a reverse proxy serving a registry below a path prefix.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bins::bin;
use crate::fixtures::{self, Image};

/// Where Debian's `docker-registry` package installs the server.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct Registry {
    child: Child,
    addr: String,
    credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

/// A registry's `auth.token` settings: where clients get tokens and whose
/// tokens it trusts (see [`crate::token_server::TokenServer::registry_auth`]).
#[derive(Debug, Clone)]
pub struct TokenAuth {
    pub realm: String,
    /// The registry's name in challenges and in the tokens' `aud`.
    pub service: String,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// PEM certificates whose keys may sign tokens.
    pub root_cert_bundle: PathBuf,
}

/// How a registry checks requests.
enum Auth<'a> {
    Anonymous,
    Basic(&'a str, &'a str),
    Token(&'a TokenAuth),
}

impl Registry {
    /// Starts an anonymous registry; panics with the reason if it can't.
    pub fn start() -> Registry {
        Self::try_start(None).expect("starting docker-registry")
    }

    /// Starts a registry that requires basic auth with these credentials.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::try_start(Some((user, password))).expect("starting docker-registry with auth")
    }

    /// Starts a registry that requires tokens of `auth`'s token server,
    /// holding the fixture images `fixtures` (pushed before auth is on: an
    /// anonymous instance on the same storage, stopped, then this one).
    pub fn start_with_token_auth(auth: &TokenAuth, fixtures: &[&str]) -> Registry {
        let mut registry = Self::start();
        if !fixtures.is_empty() {
            registry.push_fixtures(fixtures);
        }
        stop_child(&mut registry.child);
        let (child, addr) = launch(registry.dir.path(), &Auth::Token(auth))
            .expect("starting docker-registry with token auth");
        registry.child = child;
        registry.addr = addr;
        registry
    }

    pub fn try_start(credentials: Option<(&str, &str)>) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("rcrun-registry-")
            .tempdir()?;
        let auth = match credentials {
            Some((user, password)) => Auth::Basic(user, password),
            None => Auth::Anonymous,
        };
        let (child, addr) = launch(dir.path(), &auth)?;
        Ok(Registry {
            child,
            addr,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            dir,
        })
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The basic-auth credentials, if the registry requires them.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's data directory (to corrupt blobs in tests).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes fixture images (by catalog name; all images when empty) under
    /// their catalog repository paths and tags.
    pub fn push_fixtures(&self, names: &[&str]) {
        let mut cmd = Command::new(bin("rcrun-fixtures"));
        cmd.arg("push")
            .arg("--registry")
            .arg(&self.addr)
            .arg("--out")
            .arg(fixtures::fixtures_dir());
        for n in names {
            cmd.arg("--image").arg(n);
        }
        self.run_push(cmd);
    }

    /// Pushes one fixture image and returns its catalog entry.
    pub fn push_image(&self, name: &str) -> Image {
        self.push_fixtures(&[name]);
        fixtures::image(name)
    }

    /// Pushes an arbitrary OCI layout as `repo:tag`.
    pub fn push_layout(&self, layout: &Path, repo: &str, tag: &str) {
        let mut cmd = Command::new(bin("rcrun-fixtures"));
        cmd.arg("push-layout")
            .arg("--registry")
            .arg(&self.addr)
            .arg("--layout")
            .arg(layout)
            .arg("--repository")
            .arg(repo)
            .arg("--tag")
            .arg(tag);
        self.run_push(cmd);
    }

    fn run_push(&self, mut cmd: Command) {
        if let Some((u, p)) = self.credentials() {
            cmd.arg("--user").arg(format!("{u}:{p}"));
        }
        let out = cmd.output().expect("running rcrun-fixtures push");
        assert!(
            out.status.success(),
            "push to {} failed: {}\nregistry log:\n{}",
            self.addr,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// GET with this registry's credentials (if any).
    pub fn get(&self, target: &str) -> Result<HttpResponse> {
        http_get(&self.addr, target, self.credentials())
    }

    /// A manifest's bytes, as served for `reference` (tag or digest), with
    /// every manifest media type accepted.
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<HttpResponse> {
        http_request(
            &self.addr,
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            self.credentials(),
            &[("Accept", MANIFEST_TYPES)],
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Starts `docker-registry` with storage under `dir` and `auth`, on a free
/// port; returns the process and its "127.0.0.1:PORT".
fn launch(dir: &Path, auth: &Auth) -> Result<(Child, String)> {
    if !Path::new(REGISTRY_BIN).exists() {
        bail!("{REGISTRY_BIN} is missing: apt-get install docker-registry");
    }
    let auth_yaml = match auth {
        Auth::Anonymous => String::new(),
        Auth::Basic(user, password) => {
            let out = Command::new(bin("rcrun-fixtures"))
                .args(["htpasswd", user, password])
                .output()
                .context("running rcrun-fixtures htpasswd")?;
            if !out.status.success() {
                bail!(
                    "rcrun-fixtures htpasswd: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let path = dir.join("htpasswd");
            std::fs::write(&path, out.stdout)?;
            format!(
                "auth:\n  htpasswd:\n    realm: rcrun-test\n    path: {}\n",
                path.display()
            )
        }
        Auth::Token(t) => format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            t.realm,
            t.service,
            t.issuer,
            t.root_cert_bundle.display()
        ),
    };
    let requires_auth = !matches!(auth, Auth::Anonymous);
    // The port is free when probed; another process may take it before the
    // registry binds, so a registry that exits early is retried.
    let mut last_error = None;
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: {addr}\n  secret: rcrun-test-secret\n{auth_yaml}",
                dir.join("data").display()
            ),
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("registry.log"))?;
        let mut child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning docker-registry")?;
        match wait_ready(&mut child, &addr, requires_auth, Duration::from_secs(15)) {
            Ok(()) => return Ok((child, addr)),
            Err(e) => {
                stop_child(&mut child);
                let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                last_error = Some(e.context(log));
            }
        }
    }
    Err(last_error.expect("at least one attempt"))
}

/// Polls `/v2/` until the registry answers as configured: 200 anonymously,
/// or 401 anonymously and 200 with credentials (checked by the caller).
fn wait_ready(child: &mut Child, addr: &str, auth: bool, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let expected = if auth { 401 } else { 200 };
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("docker-registry exited early: {status}");
        }
        if let Ok(resp) = http_get(addr, "/v2/", None) {
            if resp.status == expected {
                return Ok(());
            }
            bail!(
                "docker-registry on {addr} answered /v2/ with HTTP {}",
                resp.status
            );
        }
        if Instant::now() > deadline {
            bail!("docker-registry on {addr} did not answer /v2/ in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM by PID, then SIGKILL after 5 s; always reaped.
fn stop_child(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's PID, which is not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Standard base64 with padding (for a Basic authorization header).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET on loopback.
pub fn http_get(
    addr: &str,
    target: &str,
    credentials: Option<(&str, &str)>,
) -> Result<HttpResponse> {
    http_request(addr, "GET", target, credentials, &[])
}

/// One request per connection; bodies by Content-Length, chunked or EOF.
pub fn http_request(
    addr: &str,
    method: &str,
    target: &str,
    credentials: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Result<HttpResponse> {
    http_request_with_body(addr, method, target, credentials, headers, &[])
}

/// A POST of an `application/x-www-form-urlencoded` form.
pub fn http_post_form(addr: &str, target: &str, form: &[(&str, &str)]) -> Result<HttpResponse> {
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v)))
        .collect::<Vec<_>>()
        .join("&");
    http_request_with_body(
        addr,
        "POST",
        target,
        None,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
}

/// Percent-escapes everything but unreserved characters.
fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// [`http_request`] with a request body (sent with its Content-Length).
pub fn http_request_with_body(
    addr: &str,
    method: &str,
    target: &str,
    credentials: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((u, p)) = credentials {
        let token = base64(format!("{u}:{p}").as_bytes());
        head.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?} from {addr}"))?;
    let mut resp = HttpResponse {
        status,
        headers: Vec::new(),
        body: Vec::new(),
    };
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            resp.headers
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if method == "HEAD" {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .with_context(|| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                break;
            }
            let start = resp.body.len();
            resp.body.resize(start + size, 0);
            r.read_exact(&mut resp.body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(len) = resp.header("content-length") {
        let mut body = vec![0; len.parse().context("bad Content-Length")?];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// A reverse proxy on 127.0.0.1 serving a registry below a path: a request
/// for `/<prefix>/v2/...` goes upstream as `/v2/...`; anything else is
/// answered 404. Each request gets its own upstream connection (and the
/// client's connection closes after the answer). Stops on drop.
pub struct PrefixProxy {
    addr: String,
    prefix: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl PrefixProxy {
    /// Serves `upstream` ("127.0.0.1:PORT") below `prefix` ("/some/path").
    pub fn start(upstream: &str, prefix: &str) -> PrefixProxy {
        assert!(
            prefix.starts_with('/') && !prefix.ends_with('/'),
            "prefix {prefix:?}: expected /path"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped, upstream, strip) = (
            requests.clone(),
            stop.clone(),
            upstream.to_string(),
            prefix.to_string(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (seen, upstream, strip) = (seen.clone(), upstream.clone(), strip.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(client, &upstream, &strip, &seen);
                });
            }
        });
        PrefixProxy {
            addr,
            prefix: prefix.to_string(),
            requests,
            stop,
        }
    }

    /// "http://127.0.0.1:PORT/<prefix>": what a mirror entry names.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.prefix)
    }

    /// The request targets received so far, as the client sent them.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for PrefixProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Forwards one request of `client` (prefix stripped) and its answer.
fn proxy_one(
    client: TcpStream,
    upstream: &str,
    prefix: &str,
    seen: &Mutex<Vec<String>>,
) -> Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("bad request line {line:?}");
    };
    seen.lock().unwrap().push(target.to_string());
    let mut head = String::new();
    let mut body_len = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
        let name = header.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            body_len = header.split(':').nth(1).unwrap_or("").trim().parse()?;
        }
        head.push_str(header.trim_end());
        head.push_str("\r\n");
    }
    let mut body = vec![0; body_len];
    reader.read_exact(&mut body)?;
    let Some(stripped) = target
        .strip_prefix(prefix)
        .filter(|rest| rest.starts_with("/v2/") || *rest == "/v2")
    else {
        client.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(
        format!("{method} {stripped} {version}\r\n{head}Connection: close\r\n\r\n").as_bytes(),
    )?;
    server.write_all(&body)?;
    // The upstream answer ends with its connection (asked with
    // `Connection: close`, which it repeats to the client).
    std::io::copy(&mut server, &mut client)?;
    let _ = client.shutdown(std::net::Shutdown::Both);
    Ok(())
}
