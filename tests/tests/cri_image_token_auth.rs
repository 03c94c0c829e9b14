//! PullImage from a real `docker-registry` with token auth (`auth.token`),
//! its tokens issued by the project's own token server: credentials,
//! registry tokens and identity tokens (OAuth2 refresh tokens) from the CRI
//! `AuthConfig`; also a mirror served below a path prefix in front of it.
use rcrun_proto::cri;
use rcrun_tests::daemon::{Daemon, DaemonOptions};
use rcrun_tests::fixtures::Image;
use rcrun_tests::images::{cli_pull, mirror_options, reference, MIRRORED_HOST};
use rcrun_tests::registry::{http_post_form, http_request, PrefixProxy, Registry};
use rcrun_tests::token_server::{TokenRequest, TokenServer, SERVICE};

const USER: &str = "puller";
const PASSWORD: &str = "t0ken-pa55";

/// A token server, a registry trusting it (holding busybox) and a daemon
/// that reaches the registry over plain http.
struct Setup {
    daemon: Daemon,
    registry: Registry,
    tokens: TokenServer,
    image: Image,
    /// `127.0.0.1:PORT/<repository>:<tag>`.
    reference: String,
}

async fn setup() -> Setup {
    let tokens = TokenServer::start(USER, PASSWORD);
    let registry = Registry::start_with_token_auth(&tokens.registry_auth(), &["busybox"]);
    let image = rcrun_tests::fixtures::image("busybox");
    let daemon = Daemon::start(DaemonOptions {
        insecure_registries: vec![registry.addr().to_string()],
        ..Default::default()
    })
    .await;
    let reference = reference(registry.addr(), &image);
    Setup {
        daemon,
        registry,
        tokens,
        image,
        reference,
    }
}

/// A token server, a registry trusting it (holding busybox), a mirror in
/// front of the registry below the path `prefix`, and a daemon that pulls
/// [`MIRRORED_HOST`] from that mirror.
struct MirrorSetup {
    daemon: Daemon,
    proxy: PrefixProxy,
    registry: Registry,
    tokens: TokenServer,
    image: Image,
    /// `registry.example.test/<repository>:<tag>`.
    reference: String,
}

async fn setup_behind_a_mirror(prefix: &str) -> MirrorSetup {
    let tokens = TokenServer::start(USER, PASSWORD);
    let registry = Registry::start_with_token_auth(&tokens.registry_auth(), &["busybox"]);
    let image = rcrun_tests::fixtures::image("busybox");
    let proxy = PrefixProxy::start(registry.addr(), prefix);
    let daemon = Daemon::start(mirror_options(proxy.url())).await;
    let reference = reference(MIRRORED_HOST, &image);
    MirrorSetup {
        daemon,
        proxy,
        registry,
        tokens,
        image,
        reference,
    }
}

fn basic(user: &str, password: &str) -> Option<cri::AuthConfig> {
    Some(cri::AuthConfig {
        username: user.into(),
        password: password.into(),
        ..Default::default()
    })
}

fn with_registry_token(token: &str) -> Option<cri::AuthConfig> {
    Some(cri::AuthConfig {
        registry_token: token.into(),
        ..Default::default()
    })
}

fn with_identity_token(token: &str) -> Option<cri::AuthConfig> {
    Some(cri::AuthConfig {
        identity_token: token.into(),
        ..Default::default()
    })
}

/// The image ref of a pull that must succeed; else the registry's log says why.
fn pulled(result: Result<String, tonic::Status>, registry: &Registry) -> String {
    result.unwrap_or_else(|e| panic!("{e:?}\nregistry log:\n{}", registry.log()))
}

fn pull_scope(image: &Image) -> String {
    format!("repository:{}:pull", image.repository)
}

fn assert_unauthenticated(result: Result<String, tonic::Status>, what: &str) -> tonic::Status {
    match result {
        Err(status) if status.code() == tonic::Code::Unauthenticated => status,
        other => panic!("{what}: expected Unauthenticated, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_pulls_through_the_token_server_with_the_pull_scope() {
    let mut s = setup().await;
    let id = pulled(
        s.daemon.pull(&s.reference, basic(USER, PASSWORD)).await,
        &s.registry,
    );
    assert_eq!(id, s.image.config_digest);
    assert!(s.daemon.image_names().await.contains(&s.reference));

    let requests = s.tokens.requests();
    let granted: Vec<&TokenRequest> = requests.iter().filter(|r| r.granted).collect();
    assert!(!granted.is_empty(), "{requests:?}");
    for r in &granted {
        assert_eq!(
            (r.method.as_str(), r.grant.as_str(), r.account.as_str()),
            ("GET", "basic", USER),
            "{r:?}"
        );
        assert_eq!(r.service, SERVICE, "{r:?}");
        assert_eq!(r.scopes, vec![pull_scope(&s.image)], "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_no_credentials_are_refused() {
    let mut s = setup().await;
    let wrong = s.daemon.pull(&s.reference, basic(USER, "wrong")).await;
    let status = assert_unauthenticated(wrong, "wrong password");
    assert!(
        status.message().contains(&s.image.repository)
            && status.message().contains("token server")
            && status.message().contains("refused the credentials"),
        "the error says who refused: {status:?}"
    );
    assert_unauthenticated(s.daemon.pull(&s.reference, None).await, "no credentials");
    assert_unauthenticated(
        s.daemon.pull(&s.reference, basic("nobody", PASSWORD)).await,
        "unknown user",
    );
    assert!(s.daemon.image_names().await.is_empty());

    let requests = s.tokens.requests();
    assert!(requests.iter().all(|r| !r.granted), "{requests:?}");
    for (grant, account) in [("basic", USER), ("anonymous", ""), ("basic", "nobody")] {
        assert!(
            requests
                .iter()
                .any(|r| r.grant == grant && r.account == account),
            "no {grant} request for {account:?}: {requests:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_token_issued_by_the_server_pulls_and_other_tokens_do_not() {
    let mut s = setup().await;
    // What a client would have fetched itself: Docker's GET form.
    let scope = pull_scope(&s.image);
    let answer = http_request(
        s.tokens.addr(),
        "GET",
        &format!("/token?service={SERVICE}&scope={scope}"),
        Some((USER, PASSWORD)),
        &[],
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let token = json["token"].as_str().unwrap().to_string();
    assert_eq!(json["access_token"].as_str(), Some(token.as_str()));

    // A token for another repository: the registry checks the grant.
    let elsewhere = s.tokens.issue(USER, &["some/other-repo"]);
    assert_unauthenticated(
        s.daemon
            .pull(&s.reference, with_registry_token(&elsewhere))
            .await,
        "token for another repository",
    );
    assert_unauthenticated(
        s.daemon
            .pull(&s.reference, with_registry_token("not.a-jwt.at-all"))
            .await,
        "garbage token",
    );
    assert!(s.daemon.image_names().await.is_empty());

    let id = pulled(
        s.daemon
            .pull(&s.reference, with_registry_token(&token))
            .await,
        &s.registry,
    );
    assert_eq!(id, s.image.config_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_is_exchanged_for_an_access_token() {
    let mut s = setup().await;
    let identity_token = login(&s.tokens);
    let refused = assert_unauthenticated(
        s.daemon
            .pull(&s.reference, with_identity_token("not-the-token"))
            .await,
        "wrong identity token",
    );
    let message = refused.message();
    assert!(
        message.contains(&s.tokens.realm()) && message.contains(s.registry.addr()),
        "the error names the token endpoint and the registry: {message}"
    );
    assert!(s.daemon.image_names().await.is_empty());

    let id = pulled(
        s.daemon
            .pull(&s.reference, with_identity_token(&identity_token))
            .await,
        &s.registry,
    );
    assert_eq!(id, s.image.config_digest);

    let requests = s.tokens.requests();
    let exchanges: Vec<&TokenRequest> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.grant == "refresh_token")
        .collect();
    assert_eq!(exchanges.len(), 2, "{requests:?}");
    for r in &exchanges {
        assert_eq!(r.client_id, "rcrun", "{r:?}");
        assert_eq!(r.service, SERVICE, "{r:?}");
        assert_eq!(r.scopes, vec![pull_scope(&s.image)], "{r:?}");
    }
    assert!(
        !exchanges[0].granted && exchanges[1].granted,
        "{requests:?}"
    );
    assert_eq!(exchanges[1].account, USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_pull_command_takes_tokens_too() {
    let mut s = setup().await;
    let refused = cli_pull(
        &s.daemon,
        &s.reference,
        &["--registry-token", "not.a-jwt.at-all"],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );
    assert!(s.daemon.image_names().await.is_empty());

    let token = s.tokens.issue(USER, &[&s.image.repository]);
    let out = cli_pull(&s.daemon, &s.reference, &["--registry-token", &token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(s.image.config_digest.as_str())
    );

    // Gone again, then through an identity token from a login.
    s.daemon.remove_image(&s.reference).await;
    let out = cli_pull(
        &s.daemon,
        &s.reference,
        &["--identity-token", &login(&s.tokens)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One kind of credentials at a time.
    let both = cli_pull(
        &s.daemon,
        &s.reference,
        &["--creds", "a:b", "--registry-token", &token],
    );
    assert!(!both.status.success());
}

/// A refresh token from the OAuth2 password grant, as `docker login` keeps it.
fn login(tokens: &TokenServer) -> String {
    let answer = http_post_form(
        tokens.addr(),
        "/token",
        &[
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASSWORD),
            ("service", SERVICE),
            ("client_id", "rcrun-tests"),
            ("access_type", "offline"),
        ],
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    json["refresh_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_bearer_token_is_renewed_with_the_identity_token_once() {
    let mut s = setup().await;
    let auth = with_identity_token(&login(&s.tokens));
    let exchanges = |tokens: &TokenServer| {
        tokens
            .requests()
            .iter()
            .filter(|r| r.grant == "refresh_token" && r.granted)
            .count()
    };
    // Both the first token and its renewal are refused: the pull fails,
    // after exactly one renewal.
    s.tokens.expire_next_tokens(2);
    assert_unauthenticated(
        s.daemon.pull(&s.reference, auth.clone()).await,
        "expired tokens only",
    );
    assert_eq!(exchanges(&s.tokens), 2, "{:?}", s.tokens.requests());
    assert!(s.daemon.image_names().await.is_empty());

    // The first token has expired (as in a long pull): renewed, pulled.
    s.tokens.expire_next_tokens(1);
    let id = pulled(s.daemon.pull(&s.reference, auth).await, &s.registry);
    assert_eq!(id, s.image.config_digest);
    assert_eq!(exchanges(&s.tokens), 4, "{:?}", s.tokens.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_token_for_a_registry_without_a_token_server_is_refused() {
    let registry = Registry::start_with_auth(USER, PASSWORD);
    let image = registry.push_image("busybox");
    let mut d = Daemon::start(DaemonOptions {
        insecure_registries: vec![registry.addr().to_string()],
        ..Default::default()
    })
    .await;
    let reference = reference(registry.addr(), &image);
    let auth = with_identity_token("some-refresh-token");
    let refused = assert_unauthenticated(
        d.pull(&reference, auth).await,
        "identity token at a basic-auth registry",
    );
    assert!(
        refused.message().contains("token server") && refused.message().contains(registry.addr()),
        "{refused:?}"
    );
    assert!(d.image_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_below_a_path_prefix_serves_the_original_name() {
    let mut s = setup_behind_a_mirror("/mirrors/rcrun").await;

    let id = pulled(
        s.daemon.pull(&s.reference, basic(USER, PASSWORD)).await,
        &s.registry,
    );
    assert_eq!(id, s.image.config_digest);
    let names = s.daemon.image_names().await;
    assert!(names.contains(&s.reference), "{names:?}");
    let seen = s.proxy.requests();
    let below = |part: &str| {
        let start = format!("/mirrors/rcrun/v2/{}/{part}/", s.image.repository);
        seen.iter().any(|t| t.starts_with(&start))
    };
    assert!(below("manifests") && below("blobs"), "{seen:?}");
    assert!(
        seen.iter().all(|t| t.starts_with("/mirrors/rcrun/v2/")),
        "{seen:?}"
    );

    // An identity token is exchanged with the token server the mirror's
    // `/v2/` (below the prefix) names.
    let auth = with_identity_token(&login(&s.tokens));
    assert_eq!(
        s.daemon.pull(&s.reference, auth).await.unwrap(),
        s.image.config_digest
    );
    assert!(
        s.tokens
            .requests()
            .iter()
            .any(|r| r.grant == "refresh_token" && r.granted),
        "{:?}",
        s.tokens.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_for_another_server_are_not_sent_to_a_mirror() {
    // As containerd's ParseAuth: an AuthConfig with a server_address belongs
    // to that registry; a mirror on another host is asked anonymously.
    let mut s = setup_behind_a_mirror("/mirror").await;
    let for_server = |server: &str| {
        Some(cri::AuthConfig {
            username: USER.into(),
            password: PASSWORD.into(),
            server_address: server.into(),
            ..Default::default()
        })
    };

    let refused = s
        .daemon
        .pull(
            &s.reference,
            for_server("https://registry.example.test/v1/"),
        )
        .await;
    assert_unauthenticated(refused, "credentials of the origin at its mirror");
    assert!(
        s.tokens.requests().iter().all(|r| r.account != USER),
        "the mirror was given the origin's credentials: {:?}",
        s.tokens.requests()
    );

    // The same credentials, addressed to the mirror's host, are used there.
    let mirror_host = registry_host(&s.proxy.url());
    let id = pulled(
        s.daemon.pull(&s.reference, for_server(&mirror_host)).await,
        &s.registry,
    );
    assert_eq!(id, s.image.config_digest);
    assert!(s
        .tokens
        .requests()
        .iter()
        .any(|r| r.account == USER && r.granted));

    // An address that names no host is refused before anything is fetched.
    let bad = s
        .daemon
        .pull(&s.reference, for_server("https:///v1/"))
        .await;
    assert_eq!(
        bad.as_ref().map_err(|e| e.code()).unwrap_err(),
        tonic::Code::InvalidArgument,
        "{bad:?}"
    );
}

/// `host:port` of an `http://host:port/path` URL.
fn registry_host(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap().to_string()
}
