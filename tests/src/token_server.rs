//! A token server of the registry token protocol on 127.0.0.1, for a
//! `docker-registry` configured with `auth.token`: it checks credentials and
//! issues JWTs (ES256, the signing certificate in the `x5c` header, the
//! same certificate in the registry's `rootcertbundle`) granting `pull`.
//!
//! It speaks both forms clients use:
//! - `GET /token?service=..&scope=..` with basic credentials (Docker's
//!   token protocol) answers `{"token": .., "access_token": ..}`;
//! - `POST /token` with a form (`grant_type=password` with `username` and
//!   `password`, or `grant_type=refresh_token` with `refresh_token`; plus
//!   `service`, `scope`, `client_id`, `access_type=offline` for a refresh
//!   token), the OAuth2 form containerd uses for identity tokens, answers
//!   `{"access_token": .., "refresh_token"?: ..}`.
//!
//! Every request is recorded for the tests to check (method, grant, scopes).
//! The key and certificate are made with the `openssl` CLI in a temp dir.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use crate::registry::{base64, TokenAuth};

/// The registry's name in tokens (`aud`) and in its challenges (`service`).
pub const SERVICE: &str = "rcrun-test-registry";
/// The `iss` of the tokens, trusted by the registry.
pub const ISSUER: &str = "rcrun-test-token-issuer";
/// How long an issued token is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// "GET" or "POST".
    pub method: String,
    /// "basic" (GET with credentials), "anonymous" (GET without), or the
    /// POST form's `grant_type` ("password", "refresh_token", ...).
    pub grant: String,
    /// The account the credentials named ("" for a refresh token or none).
    pub account: String,
    pub service: String,
    /// Requested scopes, e.g. `repository:library/busybox:pull`.
    pub scopes: Vec<String>,
    /// The POST form's `client_id`.
    pub client_id: String,
    /// Whether a token was issued.
    pub granted: bool,
}

struct Accounts {
    user: String,
    password: String,
    /// Refresh tokens this server issued or was given, by account.
    refresh_tokens: HashMap<String, String>,
}

struct Shared {
    key: EcdsaKeyPair,
    /// base64 DER of the signing certificate (the `x5c` header).
    cert_b64: String,
    rng: SystemRandom,
    accounts: Mutex<Accounts>,
    requests: Mutex<Vec<TokenRequest>>,
    serial: AtomicU64,
    /// How many of the next tokens are issued already expired.
    expire_next: AtomicU32,
}

pub struct TokenServer {
    addr: String,
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Starts a server accepting `user`/`password`; panics with the reason if it can't.
    pub fn start(user: &str, password: &str) -> TokenServer {
        Self::try_start(user, password).expect("starting the token server")
    }

    pub fn try_start(user: &str, password: &str) -> Result<TokenServer> {
        let dir = tempfile::Builder::new()
            .prefix("rcrun-token-server-")
            .tempdir()?;
        let (key_pem, key_der, cert_pem, cert_der) = (
            dir.path().join("key.pem"),
            dir.path().join("key.pk8"),
            dir.path().join("cert.pem"),
            dir.path().join("cert.der"),
        );
        let subject = format!("/CN={ISSUER}");
        let steps: [Vec<&std::ffi::OsStr>; 4] = [
            vec![
                "genpkey".as_ref(),
                "-algorithm".as_ref(),
                "EC".as_ref(),
                "-pkeyopt".as_ref(),
                "ec_paramgen_curve:P-256".as_ref(),
                "-pkeyopt".as_ref(),
                "ec_param_enc:named_curve".as_ref(),
                "-out".as_ref(),
                key_pem.as_os_str(),
            ],
            vec![
                "pkcs8".as_ref(),
                "-topk8".as_ref(),
                "-nocrypt".as_ref(),
                "-in".as_ref(),
                key_pem.as_os_str(),
                "-outform".as_ref(),
                "DER".as_ref(),
                "-out".as_ref(),
                key_der.as_os_str(),
            ],
            vec![
                "req".as_ref(),
                "-new".as_ref(),
                "-x509".as_ref(),
                "-key".as_ref(),
                key_pem.as_os_str(),
                "-days".as_ref(),
                "2".as_ref(),
                "-subj".as_ref(),
                subject.as_ref(),
                "-out".as_ref(),
                cert_pem.as_os_str(),
            ],
            vec![
                "x509".as_ref(),
                "-in".as_ref(),
                cert_pem.as_os_str(),
                "-outform".as_ref(),
                "DER".as_ref(),
                "-out".as_ref(),
                cert_der.as_os_str(),
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .output()
                .context("running openssl (apt-get install openssl)")?;
            if !out.status.success() {
                bail!(
                    "openssl {:?}: {}",
                    args,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &std::fs::read(&key_der)?,
            &rng,
        )
        .map_err(|e| anyhow::anyhow!("loading the signing key: {e}"))?;
        let shared = Arc::new(Shared {
            key,
            cert_b64: base64(&std::fs::read(&cert_der)?),
            rng,
            accounts: Mutex::new(Accounts {
                user: user.to_string(),
                password: password.to_string(),
                refresh_tokens: HashMap::new(),
            }),
            requests: Mutex::default(),
            serial: AtomicU64::new(0),
            expire_next: AtomicU32::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || serve_connection(conn, &shared));
                }
            })
        };
        Ok(TokenServer {
            addr,
            dir,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The token endpoint: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// What a registry needs to trust this server's tokens.
    pub fn registry_auth(&self) -> TokenAuth {
        TokenAuth {
            realm: self.realm(),
            service: SERVICE.to_string(),
            issuer: ISSUER.to_string(),
            root_cert_bundle: self.dir.path().join("cert.pem"),
        }
    }

    /// Issues the next `n` tokens expired (beyond the registry's leeway of
    /// a minute), as if they had been issued long ago: for clients that
    /// must renew a token during a pull.
    pub fn expire_next_tokens(&self, n: u32) {
        self.shared.expire_next.store(n, Ordering::SeqCst);
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Issues a token for `subject` granting pull on `repositories`, as the
    /// server would after checking credentials.
    pub fn issue(&self, subject: &str, repositories: &[&str]) -> String {
        let scopes: Vec<String> = repositories
            .iter()
            .map(|r| format!("repository:{r}:pull"))
            .collect();
        self.shared.sign(subject, SERVICE, &scopes)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop up so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A parsed HTTP/1.1 request.
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
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

/// Answers requests on one connection until the client closes it (keep-alive).
fn serve_connection(conn: TcpStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (status, body) = shared.answer(&request);
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Method Not Allowed",
        };
        let mut head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if status == 401 {
            head.push_str("WWW-Authenticate: Basic realm=\"rcrun-test-token\"\r\n");
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

fn read_request(r: &mut impl BufRead) -> Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        bail!("bad request line {line:?}");
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: parse_form(query),
        headers: Vec::new(),
        body: Vec::new(),
    };
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            request
                .headers
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if let Some(len) = request.header("content-length") {
        let len: usize = len.parse().context("bad Content-Length")?;
        if len > 1 << 20 {
            bail!("body too large");
        }
        request.body = vec![0; len];
        r.read_exact(&mut request.body)?;
    }
    Ok(Some(request))
}

/// `a=b&c=d` with percent-escapes and `+` for space.
fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let escaped = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match escaped {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// base64url without padding (JWS).
fn b64url(data: &[u8]) -> String {
    base64(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// Decodes standard base64 (for basic credentials).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn json_error(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "errors": [{"code": code, "message": message}],
        "error": code,
        "error_description": message,
    }))
    .expect("JSON")
}

impl Shared {
    /// Status and JSON body for one request (recorded).
    fn answer(&self, request: &Request) -> (u16, Vec<u8>) {
        if request.path != "/token" {
            return (404, json_error("NOT_FOUND", "no such endpoint"));
        }
        let form = match request.method.as_str() {
            "GET" => request.query.clone(),
            "POST" => parse_form(&String::from_utf8_lossy(&request.body)),
            _ => return (405, json_error("UNSUPPORTED", "GET or POST")),
        };
        let field = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        // GET repeats `scope`; the OAuth2 form joins scopes with spaces.
        let scopes: Vec<String> = form
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mut record = TokenRequest {
            method: request.method.clone(),
            grant: String::new(),
            account: String::new(),
            service: field("service"),
            scopes: scopes.clone(),
            client_id: field("client_id"),
            granted: false,
        };
        let outcome = self.authenticate(request, &field, &mut record);
        let answer = match outcome {
            Err((status, body)) => (status, body),
            Ok(issue_refresh) => {
                if record.service != SERVICE {
                    (400, json_error("invalid_request", "unknown service"))
                } else {
                    record.granted = true;
                    let token = self.sign(&record.account, &record.service, &scopes);
                    let mut body = serde_json::json!({
                        "token": token,
                        "access_token": token,
                        "expires_in": TOKEN_LIFETIME.as_secs(),
                        "scope": scopes.join(" "),
                    });
                    if issue_refresh {
                        body["refresh_token"] = self.refresh_token_for(&record.account).into();
                    }
                    (200, serde_json::to_vec(&body).expect("JSON"))
                }
            }
        };
        self.requests.lock().unwrap().push(record);
        answer
    }

    /// Checks the credentials of a request; Ok(whether a refresh token is
    /// wanted too) or the refusal.
    fn authenticate(
        &self,
        request: &Request,
        field: &dyn Fn(&str) -> String,
        record: &mut TokenRequest,
    ) -> std::result::Result<bool, (u16, Vec<u8>)> {
        let accounts = self.accounts.lock().unwrap();
        let unauthorized = || (401, json_error("UNAUTHORIZED", "authentication required"));
        if request.method == "GET" {
            let basic = request
                .header("authorization")
                .and_then(|h| {
                    h.strip_prefix("Basic ")
                        .or_else(|| h.strip_prefix("basic "))
                })
                .and_then(base64_decode)
                .and_then(|b| String::from_utf8(b).ok());
            let Some((user, password)) = basic.as_deref().and_then(|c| c.split_once(':')) else {
                record.grant = "anonymous".into();
                return Err(unauthorized());
            };
            record.grant = "basic".into();
            record.account = user.to_string();
            if user != accounts.user || password != accounts.password {
                return Err(unauthorized());
            }
            return Ok(field("offline_token") == "true");
        }
        record.grant = field("grant_type");
        let offline = field("access_type") == "offline";
        match record.grant.as_str() {
            "password" => {
                record.account = field("username");
                if record.account != accounts.user || field("password") != accounts.password {
                    return Err(unauthorized());
                }
                Ok(offline)
            }
            "refresh_token" => {
                let presented = field("refresh_token");
                match accounts
                    .refresh_tokens
                    .iter()
                    .find(|(_, t)| !presented.is_empty() && **t == presented)
                {
                    Some((account, _)) => {
                        record.account = account.clone();
                        Ok(offline)
                    }
                    None => Err((401, json_error("invalid_grant", "unknown refresh token"))),
                }
            }
            _ => Err((
                400,
                json_error("unsupported_grant_type", "password or refresh_token"),
            )),
        }
    }

    /// The account's refresh token, made on first use.
    fn refresh_token_for(&self, account: &str) -> String {
        let mut accounts = self.accounts.lock().unwrap();
        if let Some(t) = accounts.refresh_tokens.get(account) {
            return t.clone();
        }
        let token = self.random_hex(24);
        accounts
            .refresh_tokens
            .insert(account.to_string(), token.clone());
        token
    }

    fn random_hex(&self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.rng.fill(&mut buf).expect("random bytes");
        hex::encode(buf)
    }

    /// A JWT as distribution's `token` access controller verifies it:
    /// header `{typ, alg: ES256, x5c}`, claims `iss sub aud exp nbf iat jti
    /// access[]`, granting `pull` of each requested repository.
    fn sign(&self, subject: &str, service: &str, scopes: &[String]) -> String {
        let mut now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let expired = self
            .expire_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if expired {
            now -= TOKEN_LIFETIME.as_secs() + 600;
        }
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let (kind, rest) = s.split_once(':')?;
                // The name may hold a port's colon: the actions come last.
                let (name, actions) = rest.rsplit_once(':')?;
                let granted: Vec<&str> = actions.split(',').filter(|a| *a == "pull").collect();
                (kind == "repository" && !granted.is_empty()).then(
                    || serde_json::json!({"type": "repository", "name": name, "actions": granted}),
                )
            })
            .collect();
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [self.cert_b64],
        });
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": service,
            "exp": now + TOKEN_LIFETIME.as_secs(),
            "nbf": now.saturating_sub(5),
            "iat": now,
            "jti": format!("{}-{}", self.serial.fetch_add(1, Ordering::SeqCst), self.random_hex(8)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(&serde_json::to_vec(&header).expect("JSON")),
            b64url(&serde_json::to_vec(&claims).expect("JSON"))
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ECDSA signing");
        format!("{signing_input}.{}", b64url(signature.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_base64_decode() {
        assert_eq!(
            parse_form("scope=repository%3Aa%2Fb%3Apull+x&service=s&e"),
            vec![
                ("scope".to_string(), "repository:a/b:pull x".to_string()),
                ("service".to_string(), "s".to_string()),
                ("e".to_string(), String::new()),
            ]
        );
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(base64_decode(&base64(b"user:pa55")).unwrap(), b"user:pa55");
        assert_eq!(base64_decode(&base64(b"ab")).unwrap(), b"ab");
        assert!(base64_decode("!!").is_none());
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }
}
