//! Talking to registries with `oci-client`: endpoints (mirrors first, then
//! the image's own host, as containerd's `hosts.toml`), credentials,
//! manifests and streamed blobs with bounded retries, resume and a
//! no-progress timeout.

use crate::digest::Digest;
use crate::oauth;
use crate::reference::ImageName;
use crate::{ImageError, PullAuth, RegistryConfig};
use base64::Engine as _;
use futures::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED_MANIFESTS: &[&str] = &[
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_LIST,
    MEDIA_OCI_MANIFEST,
    MEDIA_DOCKER_MANIFEST,
];

/// Timeouts and retry bounds of registry traffic.
#[derive(Debug, Clone)]
pub struct PullTuning {
    /// A request or a blob stream that makes no progress for this long fails
    /// (and is retried); there is no limit on the total time.
    pub stall_timeout: Duration,
    /// Attempts per request / per blob without progress in between.
    pub attempts: u32,
    /// First backoff between attempts, doubled each time.
    pub backoff: Duration,
    /// Layers downloaded at once per pull.
    pub parallel_layers: usize,
}

impl PullTuning {
    /// The pause after failed attempt `attempt` (from 1): `backoff`, doubled
    /// each time.
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        self.backoff * 2u32.saturating_pow(attempt - 1)
    }
}

impl Default for PullTuning {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(60),
            attempts: 4,
            backoff: Duration::from_millis(250),
            parallel_layers: 4,
        }
    }
}

/// One place to fetch an image's content from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// host[:port]
    pub host: String,
    /// Path in front of `/v2` ("" or "/prefix"), for mirrors served below
    /// a path (containerd's hosts.toml: `http://host/prefix` means
    /// `http://host/prefix/v2`).
    pub path: String,
    pub plain_http: bool,
}

impl Endpoint {
    /// What `oci-client` takes as the registry: it builds its URLs as
    /// `{scheme}://{registry}/v2/...`, so a path prefix rides along here.
    pub fn registry(&self) -> String {
        format!("{}{}", self.host, self.path)
    }

    fn scheme(&self) -> &'static str {
        if self.plain_http {
            "http"
        } else {
            "https"
        }
    }

    /// `{scheme}://host[:port][/prefix]/v2/`: the API version check.
    pub fn v2_url(&self) -> String {
        format!("{}://{}{}/v2/", self.scheme(), self.host, self.path)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.host, self.path)
    }
}

/// Parses one mirror entry: `[scheme://]host[:port][/path]`. The path is
/// the one in front of `/v2`: a trailing `/v2` is dropped (it is what
/// `oci-client` appends anyway), as containerd's hosts.toml reads a path
/// not ending in `/v2` as `<path>/v2`.
fn parse_mirror(mirror: &str, insecure: impl Fn(&str) -> bool) -> Result<Endpoint, String> {
    let (scheme, rest) = match mirror.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, mirror),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains(['@', '?', '#']) || host.contains(char::is_whitespace) {
        return Err("expected [http[s]://]host[:port][/path]".into());
    }
    let mut path = path.trim_end_matches('/');
    if path == "/v2" || path.ends_with("/v2") {
        path = &path[..path.len() - 3];
    }
    if path.contains(['?', '#', '%', '\\']) || path.contains(char::is_whitespace) {
        return Err("the path may hold only plain segments (no query, fragment or escapes)".into());
    }
    if path
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("the path has an empty, \".\" or \"..\" segment".into());
    }
    let plain_http = match scheme.as_deref() {
        Some("http") => true,
        Some("https") => insecure(host),
        None => insecure(host) || insecure(mirror.trim_end_matches('/')),
        Some(other) => return Err(format!("unknown scheme {other:?} (http or https)")),
    };
    Ok(Endpoint {
        host: host.to_string(),
        path: path.to_string(),
        plain_http,
    })
}

/// Mirrors of `domain` in configured order, then `domain` itself.
pub fn endpoints(config: &RegistryConfig, domain: &str) -> Vec<Endpoint> {
    let insecure = |host: &str| config.insecure.iter().any(|h| h == host);
    let mut out = Vec::new();
    for mirror in config.mirrors.get(domain).into_iter().flatten() {
        let ep = match parse_mirror(mirror, insecure) {
            Ok(ep) => ep,
            Err(reason) => {
                tracing::warn!(mirror, domain, reason, "ignoring mirror endpoint");
                continue;
            }
        };
        if !out.contains(&ep) {
            out.push(ep);
        }
    }
    let origin = Endpoint {
        host: domain.to_string(),
        path: String::new(),
        plain_http: insecure(domain),
    };
    let mirror_only = config.mirror_only.iter().any(|h| h == domain || h == "*");
    let skip_origin = mirror_only && !out.is_empty();
    if !skip_origin && !out.contains(&origin) {
        out.push(origin);
    }
    out
}

/// The credentials of one pull and the host they belong to.
#[derive(Clone)]
pub struct PullCredentials {
    pub secret: Credentials,
    /// host[:port] from the CRI `server_address`; `None`: every endpoint.
    pub server: Option<String>,
}

impl PullCredentials {
    /// What to present to `host`. Like containerd's `ParseAuth`, credentials
    /// for another registry are never sent (a mirror on another host gets an
    /// anonymous request instead of someone else's password).
    pub fn for_host(&self, host: &str) -> Credentials {
        match &self.server {
            Some(server) if !same_registry(server, host) => {
                Credentials::Registry(RegistryAuth::Anonymous)
            }
            _ => self.secret.clone(),
        }
    }

    /// A digest of the secret and its host: pulls with different
    /// credentials never share work.
    pub fn fingerprint(&self) -> Digest {
        let server = self.server.as_deref().unwrap_or("");
        Digest::of(format!("{server}\0{}", self.secret.fingerprint()).as_bytes())
    }
}

/// Docker Hub answers under several names; everything else compares as is.
fn same_registry(a: &str, b: &str) -> bool {
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    a == b || (hub(a) && hub(b))
}

/// The `host[:port]` of a CRI `server_address` (`https://host:port/v1/`,
/// `host`, ...); `None` when it is empty.
fn server_host(address: &str) -> Result<Option<String>, ImageError> {
    let address = address.trim();
    if address.is_empty() {
        return Ok(None);
    }
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
        return Err(ImageError::InvalidAuth(format!(
            "server_address {address:?} names no registry host"
        )));
    }
    Ok(Some(host.to_ascii_lowercase()))
}

/// Credentials of one pull, from the CRI `AuthConfig`.
#[derive(Clone)]
pub enum Credentials {
    /// Used as they are on every endpoint (oci-client fetches tokens with
    /// basic credentials itself).
    Registry(RegistryAuth),
    /// An OAuth2 refresh token, exchanged per endpoint for a bearer token.
    IdentityToken(String),
}

impl Credentials {
    /// A digest of the secret: pulls with different credentials never share work.
    pub fn fingerprint(&self) -> Digest {
        let secret = match self {
            Credentials::Registry(RegistryAuth::Anonymous) => String::new(),
            Credentials::Registry(RegistryAuth::Basic(u, p)) => format!("basic\0{u}\0{p}"),
            Credentials::Registry(RegistryAuth::Bearer(t)) => format!("bearer\0{t}"),
            Credentials::IdentityToken(t) => format!("identity\0{t}"),
        };
        Digest::of(secret.as_bytes())
    }
}

/// Reads the CRI credentials; the first of registry token, username and
/// password, `auth` and identity token that is set wins.
pub fn credentials(auth: Option<&PullAuth>) -> Result<PullCredentials, ImageError> {
    let registry = registry_auth(auth)?;
    let secret = match auth.map(|a| a.identity_token.as_str()) {
        Some(token) if !token.is_empty() && matches!(registry, RegistryAuth::Anonymous) => {
            Credentials::IdentityToken(token.to_string())
        }
        _ => Credentials::Registry(registry),
    };
    let server = match auth {
        Some(a) => server_host(&a.server_address)?,
        None => None,
    };
    Ok(PullCredentials { secret, server })
}

fn registry_auth(auth: Option<&PullAuth>) -> Result<RegistryAuth, ImageError> {
    let Some(a) = auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if !a.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(a.registry_token.clone()));
    }
    if !a.username.is_empty() || !a.password.is_empty() {
        return Ok(RegistryAuth::Basic(a.username.clone(), a.password.clone()));
    }
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
            .ok_or_else(|| {
                ImageError::InvalidAuth(
                    "the \"auth\" field is not base64(\"user:password\")".into(),
                )
            })?;
        return Ok(RegistryAuth::Basic(decoded.0, decoded.1));
    }
    Ok(RegistryAuth::Anonymous)
}

/// A connection to one endpoint for one image repository.
pub struct Remote {
    client: Client,
    pub endpoint: Endpoint,
    registry: String,
    repository: String,
    auth: RegistryAuth,
    /// Basic credentials were traded for a token (or found not to need one).
    authorized: AtomicBool,
    /// Identity-token pulls: how the bearer token is renewed.
    renewal: Option<Renewal>,
    tuning: PullTuning,
    /// The reference as the user named it (for error messages).
    display: String,
}

/// The bearer token of an identity-token pull expires (after minutes, at
/// some registries) while a long pull goes on: a refused token is renewed
/// with the identity token and the request retried. A renewed token that is
/// refused before it served any request means no access, not expiry: that
/// refusal is final, which bounds the renewals.
struct Renewal {
    /// The endpoint's token server, probed once at connect.
    server: oauth::TokenServer,
    identity_token: String,
    /// Bumped by each renewal: a request that failed on an older token
    /// just retries with the one renewed meanwhile.
    generation: AtomicU64,
    /// 1 + the newest generation that served a request (0: none did).
    served: AtomicU64,
    /// One renewal at a time.
    lock: tokio::sync::Mutex<()>,
}

/// Outcome classes of a failed request.
enum Failure {
    Permanent(ImageError),
    Transient(String),
}

impl Failure {
    fn is_unauthorized(&self) -> bool {
        matches!(self, Failure::Permanent(ImageError::Unauthorized { .. }))
    }
}

impl Remote {
    /// A connection to `endpoint` with `credentials`; an identity token is
    /// exchanged for a bearer token of this endpoint's token server first.
    pub async fn connect(
        endpoint: Endpoint,
        name: &ImageName,
        credentials: &Credentials,
        tuning: PullTuning,
    ) -> Result<Self, ImageError> {
        let (auth, renewal) = match credentials {
            Credentials::Registry(auth) => (auth.clone(), None),
            Credentials::IdentityToken(token) => {
                let display = name.to_string();
                match oauth::token_server(&endpoint, &display, &tuning).await? {
                    Some(server) => (
                        RegistryAuth::Bearer(
                            server
                                .exchange(&endpoint, &name.path, token, &display, &tuning)
                                .await?,
                        ),
                        Some(Renewal {
                            server,
                            identity_token: token.clone(),
                            generation: AtomicU64::new(0),
                            served: AtomicU64::new(0),
                            lock: tokio::sync::Mutex::new(()),
                        }),
                    ),
                    None => (RegistryAuth::Anonymous, None),
                }
            }
        };
        let mut remote = Self::new(endpoint, name, auth, tuning);
        remote.renewal = renewal;
        Ok(remote)
    }

    fn new(endpoint: Endpoint, name: &ImageName, auth: RegistryAuth, tuning: PullTuning) -> Self {
        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(tuning.stall_timeout.min(Duration::from_secs(30))),
            ..Default::default()
        };
        Self {
            client: Client::new(config),
            registry: endpoint.registry(),
            endpoint,
            repository: name.path.clone(),
            auth,
            authorized: AtomicBool::new(false),
            renewal: None,
            tuning,
            display: name.to_string(),
        }
    }

    fn reference_for(&self, tag_or_digest: &TagOrDigest) -> Reference {
        match tag_or_digest {
            TagOrDigest::Tag(t) => {
                Reference::with_tag(self.registry.clone(), self.repository.clone(), t.clone())
            }
            TagOrDigest::Digest(d) => Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.to_string(),
            ),
        }
    }

    /// Trades basic credentials for a token before the first request.
    /// oci-client would do it on its own, but it drops a token server's
    /// refusal and goes on anonymously: the error then only says "401".
    async fn authorize(&self, reference: &Reference) -> Result<(), OciDistributionError> {
        if !matches!(self.auth, RegistryAuth::Basic(..)) || self.authorized.load(Ordering::Acquire)
        {
            return Ok(());
        }
        self.client
            .auth(reference, &self.auth, RegistryOperation::Pull)
            .await?;
        self.authorized.store(true, Ordering::Release);
        Ok(())
    }

    /// The generation of the bearer token requests go out with now.
    fn token_generation(&self) -> u64 {
        self.renewal
            .as_ref()
            .map_or(0, |r| r.generation.load(Ordering::Acquire))
    }

    /// A request sent with token `generation` succeeded.
    fn token_served(&self, generation: u64) {
        if let Some(r) = &self.renewal {
            r.served.fetch_max(generation + 1, Ordering::AcqRel);
        }
    }

    /// After the registry refused a request sent with token `generation`:
    /// renews the bearer token if that may help. Ok(true): retry.
    async fn renew_token(
        &self,
        generation: u64,
        reference: &Reference,
    ) -> Result<bool, ImageError> {
        let Some(r) = &self.renewal else {
            return Ok(false);
        };
        let _one_at_a_time = r.lock.lock().await;
        let current = r.generation.load(Ordering::Acquire);
        if current != generation {
            return Ok(true);
        }
        if current > 0 && r.served.load(Ordering::Acquire) <= current {
            // A renewed token refused before it served anything: no access.
            return Ok(false);
        }
        let token = r
            .server
            .exchange(
                &self.endpoint,
                &self.repository,
                &r.identity_token,
                &self.display,
                &self.tuning,
            )
            .await?;
        tracing::info!(endpoint = %self.endpoint, image = %self.display, "bearer token refused; renewed it with the identity token");
        // oci-client keeps tokens per repository: the new one replaces the old.
        self.client
            .auth(
                reference,
                &RegistryAuth::Bearer(token),
                RegistryOperation::Pull,
            )
            .await
            .map_err(|e| {
                ImageError::Other(format!("{}: storing a renewed token: {e}", self.display))
            })?;
        r.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Fetches a manifest or index; a digest reference is verified.
    pub async fn manifest(&self, what: &TagOrDigest) -> Result<(bytes::Bytes, Digest), ImageError> {
        let reference = self.reference_for(what);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let generation = self.token_generation();
            let request = async {
                self.authorize(&reference).await?;
                self.client
                    .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFESTS)
                    .await
            };
            let result = tokio::time::timeout(self.tuning.stall_timeout, request).await;
            let failure = match result {
                Ok(Ok((body, _))) => {
                    self.token_served(generation);
                    let actual = Digest::of(&body);
                    if let TagOrDigest::Digest(expected) = what {
                        if &actual != expected {
                            return Err(ImageError::Other(format!(
                                "manifest {expected} of {}: digest mismatch: content hashes to {actual}",
                                self.display
                            )));
                        }
                    }
                    return Ok((body, actual));
                }
                Ok(Err(e)) => self.classify(e),
                Err(_) => Failure::Transient(format!(
                    "no response within {:?}",
                    self.tuning.stall_timeout
                )),
            };
            if failure.is_unauthorized() && self.renew_token(generation, &reference).await? {
                continue;
            }
            self.retry_or_fail(failure, attempt, &format!("manifest {}", reference.whole()))
                .await?;
        }
    }

    /// Fetches a small blob (a config) into memory, verified.
    pub async fn small_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, ImageError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let fetch = self.blob(digest, Some(size), tx, |_| {});
        let collect = async {
            let mut buf = Vec::new();
            while let Some(chunk) = rx.recv().await {
                match chunk {
                    Ok(c) => buf.extend_from_slice(&c),
                    Err(e) => return Err(ImageError::Other(e.to_string())),
                }
            }
            Ok(buf)
        };
        let (fetched, buf) = tokio::join!(fetch, collect);
        fetched?;
        let buf = buf?;
        let actual = Digest::of(&buf);
        if &actual != digest {
            return Err(ImageError::Other(format!(
                "blob {digest}: digest mismatch: content hashes to {actual}"
            )));
        }
        Ok(buf)
    }

    /// Streams blob `digest` into `sink`, resuming after transient failures.
    /// The receiver verifies the digest; a receiver that hangs up ends the
    /// download quietly (it has failed on its own and says why).
    pub async fn blob(
        &self,
        digest: &Digest,
        size: Option<u64>,
        sink: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
        progress: impl Fn(u64),
    ) -> Result<(), ImageError> {
        let reference = self.reference_for(&TagOrDigest::Digest(digest.clone()));
        let descriptor = OciDescriptor {
            digest: digest.to_string(),
            size: size.unwrap_or(0) as i64,
            ..Default::default()
        };
        let mut offset: u64 = 0;
        // Failures in a row without any data in between.
        let mut failures = 0;
        loop {
            let generation = self.token_generation();
            let request =
                self.client
                    .pull_blob_stream_partial(&reference, &descriptor, offset, None);
            let failure = match tokio::time::timeout(self.tuning.stall_timeout, request).await {
                Err(_) => Failure::Transient(format!(
                    "no response within {:?}",
                    self.tuning.stall_timeout
                )),
                Ok(Err(e)) => self.classify(e),
                Ok(Ok(response)) => {
                    self.token_served(generation);
                    // A registry without range support answers with the whole blob.
                    let (mut stream, mut skip) = match response {
                        BlobResponse::Full(s) => (s.stream, offset),
                        BlobResponse::Partial(s) => (s.stream, 0),
                    };
                    loop {
                        match tokio::time::timeout(self.tuning.stall_timeout, stream.next()).await {
                            Err(_) => {
                                break Failure::Transient(format!(
                                    "no data for {:?}",
                                    self.tuning.stall_timeout
                                ));
                            }
                            Ok(None) => return Ok(()),
                            Ok(Some(Err(e))) => break Failure::Transient(e.to_string()),
                            Ok(Some(Ok(mut chunk))) => {
                                if skip > 0 {
                                    let n = skip.min(chunk.len() as u64);
                                    let _ = chunk.split_to(n as usize);
                                    skip -= n;
                                }
                                if chunk.is_empty() {
                                    continue;
                                }
                                offset += chunk.len() as u64;
                                failures = 0;
                                if size.is_some_and(|s| offset > s) {
                                    return Err(ImageError::Other(format!(
                                        "blob {digest}: registry sent more than the {} bytes the manifest declares",
                                        size.unwrap_or(0)
                                    )));
                                }
                                if sink.send(Ok(chunk)).await.is_err() {
                                    return Ok(());
                                }
                                progress(offset);
                            }
                        }
                    }
                }
            };
            let renewed = if failure.is_unauthorized() {
                self.renew_token(generation, &reference).await
            } else {
                Ok(false)
            };
            let outcome = match renewed {
                Ok(true) => continue,
                Ok(false) => {
                    failures += 1;
                    self.retry_or_fail(failure, failures, &format!("blob {digest}"))
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                let _ = sink.send(Err(std::io::Error::other(e.to_string()))).await;
                return Err(e);
            }
        }
    }

    async fn retry_or_fail(
        &self,
        failure: Failure,
        attempt: u32,
        what: &str,
    ) -> Result<(), ImageError> {
        match failure {
            Failure::Permanent(e) => Err(e),
            Failure::Transient(msg) if attempt >= self.tuning.attempts => {
                Err(ImageError::Other(format!(
                    "{what} from {}: {msg} (gave up after {attempt} attempts)",
                    self.endpoint
                )))
            }
            Failure::Transient(msg) => {
                tracing::warn!(what, endpoint = %self.endpoint, error = %msg, attempt, "retrying");
                tokio::time::sleep(self.tuning.backoff_after(attempt)).await;
                Ok(())
            }
        }
    }

    fn classify(&self, e: OciDistributionError) -> Failure {
        let unauthorized = |message: String| {
            Failure::Permanent(ImageError::Unauthorized {
                reference: self.display.clone(),
                message,
            })
        };
        let not_found = || Failure::Permanent(ImageError::NotFound(self.display.clone()));
        match e {
            OciDistributionError::AuthenticationFailure(m) => unauthorized(format!(
                "the token server of {} refused the credentials: {}",
                self.endpoint,
                m.trim()
            )),
            OciDistributionError::UnauthorizedError { url } => {
                unauthorized(format!("401 Unauthorized from {url}"))
            }
            OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
            OciDistributionError::RegistryError { envelope, url } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized(format!("{envelope} ({url})"))
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found()
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
                {
                    Failure::Transient(format!("{envelope}"))
                } else {
                    Failure::Permanent(ImageError::Other(format!(
                        "registry error from {url}: {envelope}"
                    )))
                }
            }
            OciDistributionError::ServerError { code, url, message } => match code {
                401 | 403 => unauthorized(format!("{code} from {url}: {message}")),
                404 => not_found(),
                408 | 429 | 500..=599 => {
                    Failure::Transient(format!("{code} from {url}: {message}"))
                }
                _ => Failure::Permanent(ImageError::Other(format!(
                    "registry answered {code} ({url}): {message}"
                ))),
            },
            OciDistributionError::RequestError(e) => {
                Failure::Transient(format!("request failed: {e}"))
            }
            OciDistributionError::IoError(e) => Failure::Transient(format!("i/o: {e}")),
            OciDistributionError::DigestError(e) => Failure::Permanent(ImageError::Other(format!(
                "{}: digest mismatch: {e}",
                self.display
            ))),
            other => Failure::Permanent(ImageError::Other(format!("{}: {other}", self.display))),
        }
    }
}

#[derive(Debug, Clone)]
pub enum TagOrDigest {
    Tag(String),
    Digest(Digest),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, path: &str, plain_http: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            path: path.into(),
            plain_http,
        }
    }

    #[test]
    fn mirrors_come_first_and_keep_order() {
        let mut config = RegistryConfig::default();
        config.mirrors.insert(
            "registry.k8s.io".into(),
            vec![
                "http://127.0.0.1:5000".into(),
                "https://mirror.example:443/".into(),
                "plain:5001".into(),
            ],
        );
        config.insecure.push("plain:5001".into());
        let eps = endpoints(&config, "registry.k8s.io");
        assert_eq!(
            eps,
            vec![
                ep("127.0.0.1:5000", "", true),
                ep("mirror.example:443", "", false),
                ep("plain:5001", "", true),
                ep("registry.k8s.io", "", false),
            ]
        );
        assert_eq!(endpoints(&config, "gcr.io"), vec![ep("gcr.io", "", false)]);
        config.mirror_only.push("registry.k8s.io".into());
        assert_eq!(endpoints(&config, "registry.k8s.io").len(), 3);
        config.mirror_only = vec!["*".into()];
        assert_eq!(
            endpoints(&config, "gcr.io").len(),
            1,
            "a host without mirrors is still reached"
        );
    }

    #[test]
    fn mirror_paths_are_prefixes_in_front_of_v2() {
        let insecure = |h: &str| h == "plain:5001";
        let parse = |m: &str| parse_mirror(m, insecure);
        assert_eq!(parse("http://h:1/v2").unwrap(), ep("h:1", "", true));
        assert_eq!(parse("http://h:1/v2/").unwrap(), ep("h:1", "", true));
        assert_eq!(parse("https://h/cache").unwrap(), ep("h", "/cache", false));
        assert_eq!(parse("https://h/a/b/v2").unwrap(), ep("h", "/a/b", false));
        assert_eq!(parse("https://h/a/v2x/").unwrap(), ep("h", "/a/v2x", false));
        assert_eq!(parse("plain:5001/p").unwrap(), ep("plain:5001", "/p", true));
        assert_eq!(parse("HTTP://h/p").unwrap(), ep("h", "/p", true));
        for bad in [
            "http:///p",
            "ftp://h",
            "http://h/a//b",
            "http://h/../x",
            "http://h/p?x=1",
            "http://h/p#f",
            "http://h/a%2fb",
            "http://u@h/p",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = ep("h:1", "/cache", true);
        assert_eq!(e.registry(), "h:1/cache");
        assert_eq!(e.v2_url(), "http://h:1/cache/v2/");
        assert_eq!(e.to_string(), "http://h:1/cache");

        let mut config = RegistryConfig::default();
        config.mirrors.insert(
            "docker.io".into(),
            vec![
                "http://h:1/cache".into(),
                "http://h:1/cache/v2".into(),
                "http://h:1/../x".into(),
            ],
        );
        assert_eq!(
            endpoints(&config, "docker.io"),
            vec![ep("h:1", "/cache", true), ep("docker.io", "", false)],
            "duplicates and bad entries are dropped"
        );
    }

    #[test]
    fn credentials_from_cri_auth() {
        let a = PullAuth {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:x"),
            ..Default::default()
        };
        assert!(
            matches!(registry_auth(Some(&a)).unwrap(), RegistryAuth::Basic(u, p) if u == "u" && p == "p:x")
        );
        let a = PullAuth {
            registry_token: "t".into(),
            username: "u".into(),
            ..Default::default()
        };
        assert!(matches!(registry_auth(Some(&a)).unwrap(), RegistryAuth::Bearer(t) if t == "t"));
        assert!(matches!(
            registry_auth(None).unwrap(),
            RegistryAuth::Anonymous
        ));
        let bad = PullAuth {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(registry_auth(Some(&bad)).is_err());

        let identity = PullAuth {
            identity_token: "refresh".into(),
            ..Default::default()
        };
        assert!(
            matches!(credentials(Some(&identity)).unwrap().secret, Credentials::IdentityToken(t) if t == "refresh")
        );
        let both = PullAuth {
            username: "u".into(),
            password: "p".into(),
            identity_token: "refresh".into(),
            ..Default::default()
        };
        assert!(matches!(
            credentials(Some(&both)).unwrap().secret,
            Credentials::Registry(RegistryAuth::Basic(..))
        ));
        assert!(matches!(
            credentials(None).unwrap().secret,
            Credentials::Registry(RegistryAuth::Anonymous)
        ));
        assert_ne!(
            credentials(Some(&identity)).unwrap().fingerprint(),
            credentials(None).unwrap().fingerprint()
        );
    }

    #[test]
    fn credentials_go_only_to_their_server_address() {
        let basic = |server: &str| PullAuth {
            username: "u".into(),
            password: "p".into(),
            server_address: server.into(),
            ..Default::default()
        };
        let is_basic = |c: Credentials| matches!(c, Credentials::Registry(RegistryAuth::Basic(..)));
        // No server address: every endpoint, as before.
        let any = credentials(Some(&basic(""))).unwrap();
        assert!(is_basic(any.for_host("mirror.example:5000")));
        // kubelet's forms of an address: scheme, port, path.
        let own = credentials(Some(&basic("https://Registry.Example:5000/v1/"))).unwrap();
        assert_eq!(own.server.as_deref(), Some("registry.example:5000"));
        assert!(is_basic(own.for_host("registry.example:5000")));
        assert!(!is_basic(own.for_host("mirror.example:5000")));
        assert!(!is_basic(own.for_host("registry.example")));
        // Docker Hub's names are one registry.
        let hub = credentials(Some(&basic("https://index.docker.io/v1/"))).unwrap();
        assert!(is_basic(hub.for_host("docker.io")));
        assert!(is_basic(hub.for_host("registry-1.docker.io")));
        // The host is part of what pulls share work under.
        assert_ne!(any.fingerprint(), own.fingerprint());
        for bad in ["https://", "user@host", "/v1/"] {
            let e = credentials(Some(&basic(bad))).err().expect(bad);
            assert!(matches!(e, ImageError::InvalidAuth(_)), "{bad}: {e}");
        }
    }
}
