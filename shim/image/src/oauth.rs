//! Identity tokens (OAuth2 refresh tokens, what `docker login` stores for
//! some registries) exchanged for a registry bearer token, the way
//! containerd does it: the registry's `/v2/` names the token server in its
//! Bearer challenge; the refresh token is POSTed there
//! (`grant_type=refresh_token`) and the `access_token` of the answer pulls.
//! Token servers without the OAuth2 form are asked with a GET and the
//! token as basic credentials, as containerd falls back.

use crate::registry::{Endpoint, PullTuning};
use crate::ImageError;
use std::time::Duration;

/// The client id token servers see (containerd sends its own name too).
pub const CLIENT_ID: &str = "rcrun";

/// The parameters of a `WWW-Authenticate: Bearer ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Finds the Bearer challenge among the `WWW-Authenticate` header values
/// (`Bearer realm="...",service="...",scope="..."`).
pub fn bearer_challenge<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<BearerChallenge> {
    headers.into_iter().find_map(|h| {
        let h = h.trim_start();
        let (scheme, params) = h.split_once(char::is_whitespace).unwrap_or((h, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = auth_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        Some(BearerChallenge {
            realm: get("realm").filter(|r| !r.is_empty())?,
            service: get("service"),
            scope: get("scope"),
        })
    })
}

/// `name=value` or `name="quoted \"value\""` pairs separated by commas (RFC 7235).
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_string();
        if name.is_empty() {
            return out;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_string();
        }
        out.push((name, value));
    }
}

/// The answer of a token server (OAuth2 form or the GET form).
#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    token: String,
}

/// What one attempt came to.
enum Outcome<T> {
    Done(T),
    /// The server refused the credentials: no retry.
    Refused(String),
    /// Any other answer that another attempt would not change.
    Failed(String),
    /// Connection trouble, a timeout, 429 or 5xx: worth another attempt.
    Transient(String),
}

/// The token server an endpoint's `/v2/` named: found once per endpoint,
/// then asked for each bearer token (the first and every renewal).
pub struct TokenServer {
    http: reqwest::Client,
    challenge: BearerChallenge,
}

fn refused(reference: &str, message: String) -> ImageError {
    ImageError::Unauthorized {
        reference: reference.to_string(),
        message,
    }
}

/// Probes `endpoint` for the token server identity tokens are exchanged at.
/// `None` when the endpoint asks for no credentials.
pub async fn token_server(
    endpoint: &Endpoint,
    reference: &str,
    tuning: &PullTuning,
) -> Result<Option<TokenServer>, ImageError> {
    let http = reqwest::Client::builder()
        .connect_timeout(tuning.stall_timeout.min(Duration::from_secs(30)))
        .timeout(tuning.stall_timeout)
        .build()
        .map_err(|e| ImageError::Other(format!("identity token: http client: {e}")))?;
    let probe_url = endpoint.v2_url();
    let (http_ref, probe_url) = (&http, probe_url.as_str());
    let challenge = with_retries(tuning, &format!("probing {probe_url}"), || async move {
        let response = match http_ref.get(probe_url).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Transient(format!("request failed: {e}")),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Done(None);
        }
        if status.as_u16() == 429 || status.is_server_error() {
            return Outcome::Transient(format!("HTTP {status}"));
        }
        let headers: Vec<&str> = response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        match bearer_challenge(headers.iter().copied()) {
            Some(c) if status.as_u16() == 401 => Outcome::Done(Some(c)),
            None if status.as_u16() == 401 => Outcome::Refused(format!(
                "registry {endpoint} asks for no token at {probe_url} (WWW-Authenticate: {headers:?}): \
                 an identity token needs a registry with a token server"
            )),
            _ => Outcome::Failed(format!(
                "registry {endpoint} answered {probe_url} with HTTP {status}"
            )),
        }
    })
    .await
    .map_err(|e| e.into_error(|m| refused(reference, m)))?;
    Ok(challenge.map(|challenge| TokenServer { http, challenge }))
}

impl TokenServer {
    /// Exchanges `identity_token` for a bearer token for pulling
    /// `repository` from `endpoint`.
    pub async fn exchange(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        identity_token: &str,
        reference: &str,
        tuning: &PullTuning,
    ) -> Result<String, ImageError> {
        let (http, challenge) = (&self.http, &self.challenge);
        let realm = &challenge.realm;
        let what = format!("token endpoint {realm} of registry {endpoint}");
        if !(realm.starts_with("http://") || realm.starts_with("https://")) {
            return Err(ImageError::Other(format!(
                "{what}: the realm is not an http(s) URL"
            )));
        }
        // This repository's pull, plus what the challenge asked for.
        let mut scopes = vec![format!("repository:{repository}:pull")];
        for extra in challenge.scope.iter().flat_map(|s| s.split(' ')) {
            if !extra.is_empty() && !scopes.iter().any(|s| s == extra) {
                scopes.push(extra.to_string());
            }
        }
        // The OAuth2 form joins scopes with spaces; the GET form repeats `scope`.
        let joined = scopes.join(" ");
        let service = challenge.service.clone().unwrap_or_default();
        let (service, scope, scopes) = (service.as_str(), joined.as_str(), scopes.as_slice());
        with_retries(tuning, &what, || async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", identity_token),
                ("service", service),
                ("scope", scope),
                ("client_id", CLIENT_ID),
            ];
            let posted = match http.post(realm).form(&form).send().await {
                Ok(r) => r,
                Err(e) => return Outcome::Transient(format!("request failed: {e}")),
            };
            let status = posted.status().as_u16();
            match status {
                200..=299 => return parse_token(posted).await,
                429 | 500..=599 => return Outcome::Transient(format!("POST: HTTP {status}")),
                // Token servers without the OAuth2 form (404/405) or that
                // refuse it (400/401, as some do): the GET form, as containerd.
                400 | 401 | 404 | 405 => {}
                _ => {
                    return Outcome::Failed(format!(
                        "POST: HTTP {status}: {}",
                        body_excerpt(posted).await
                    ))
                }
            }
            let post_error = format!("POST: HTTP {status}: {}", body_excerpt(posted).await);
            let mut query: Vec<(&str, &str)> =
                scopes.iter().map(|s| ("scope", s.as_str())).collect();
            if !service.is_empty() {
                query.push(("service", service));
            }
            let fetched = match http
                .get(realm)
                .query(&query)
                .basic_auth("", Some(identity_token))
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return Outcome::Transient(format!("request failed: {e}")),
            };
            let status = fetched.status().as_u16();
            match status {
                200..=299 => parse_token(fetched).await,
                429 | 500..=599 => Outcome::Transient(format!("GET: HTTP {status}")),
                400..=499 => Outcome::Refused(format!(
                    "{post_error}; GET: HTTP {status}: {}",
                    body_excerpt(fetched).await
                )),
                _ => Outcome::Failed(format!(
                    "{post_error}; GET: HTTP {status}: {}",
                    body_excerpt(fetched).await
                )),
            }
        })
        .await
        .map_err(|e| {
            e.into_error(|m| refused(reference, format!("{what} refused the identity token: {m}")))
        })
    }
}

async fn parse_token(response: reqwest::Response) -> Outcome<String> {
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Transient(format!("reading the answer: {e}")),
    };
    match serde_json::from_slice::<TokenResponse>(&body) {
        Ok(t) if !t.access_token.is_empty() => Outcome::Done(t.access_token),
        Ok(t) if !t.token.is_empty() => Outcome::Done(t.token),
        Ok(_) => Outcome::Failed("the answer holds no access_token".into()),
        Err(e) => Outcome::Failed(format!("the answer is not a token response: {e}")),
    }
}

/// The first 200 bytes of an error body, for messages.
async fn body_excerpt(response: reqwest::Response) -> String {
    let body = response.text().await.unwrap_or_default();
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &body[..i]),
        None => body.to_string(),
    }
}

/// Why `with_retries` gave up.
enum GaveUp {
    Refused(String),
    Failed(String),
}

impl GaveUp {
    fn into_error(self, refused: impl FnOnce(String) -> ImageError) -> ImageError {
        match self {
            GaveUp::Refused(m) => refused(m),
            GaveUp::Failed(m) => ImageError::Other(m),
        }
    }
}

/// Runs `attempt` until it is done or refused, at most `tuning.attempts`
/// times, backing off between transient failures.
async fn with_retries<T, F, Fut>(tuning: &PullTuning, what: &str, attempt: F) -> Result<T, GaveUp>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Outcome<T>>,
{
    let attempts = tuning.attempts.max(1);
    for n in 1..=attempts {
        match attempt().await {
            Outcome::Done(v) => return Ok(v),
            Outcome::Refused(m) => return Err(GaveUp::Refused(m)),
            Outcome::Failed(m) => return Err(GaveUp::Failed(format!("{what}: {m}"))),
            Outcome::Transient(m) if n == attempts => {
                return Err(GaveUp::Failed(format!(
                    "{what}: {m} (gave up after {n} attempts)"
                )))
            }
            Outcome::Transient(m) => {
                tracing::warn!(what, error = %m, attempt = n, "retrying");
                tokio::time::sleep(tuning.backoff_after(n)).await;
            }
        }
    }
    unreachable!("the last attempt returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed() {
        let c = bearer_challenge([
            "Basic realm=\"x\"",
            "Bearer realm=\"http://127.0.0.1:5001/token\",service=\"reg, one\",scope=\"repository:a/b:pull\"",
        ])
        .unwrap();
        assert_eq!(c.realm, "http://127.0.0.1:5001/token");
        assert_eq!(c.service.as_deref(), Some("reg, one"));
        assert_eq!(c.scope.as_deref(), Some("repository:a/b:pull"));
        let c = bearer_challenge(["bearer realm=https://auth.example/t , service=svc"]).unwrap();
        assert_eq!(c.realm, "https://auth.example/t");
        assert_eq!(c.service.as_deref(), Some("svc"));
        assert_eq!(c.scope, None);
        let c = bearer_challenge([r#"Bearer realm="a\"b",error="invalid_token""#]).unwrap();
        assert_eq!(c.realm, "a\"b");
        assert!(bearer_challenge(["Basic realm=\"registry\""]).is_none());
        assert!(bearer_challenge(["Bearer service=\"no realm\""]).is_none());
    }
}
