//! `rcrun-cri`: the CRI v1 daemon kubelet talks to, and its image CLI.
mod admin;
mod cgroup_stats;
mod config;
mod daemon;
mod exec;
mod infra;
mod monitor;
mod oci_runtime;
mod pinns;
mod pull_progress;
mod recovery;
mod sandbox_files;
mod server;
mod store;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use rcrun_proto::cri::image_service_server::ImageServiceServer;
use rcrun_proto::cri::runtime_service_server::RuntimeServiceServer;

use crate::config::{Config, Overrides};
use crate::daemon::Daemon;

/// Requests up to this size are decoded (ExecSync answers can be 16 MiB too).
const MAX_MESSAGE: usize = 16 * 1024 * 1024 + 64 * 1024;
/// How long SIGTERM waits for in-flight requests.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "rcrun-cri",
    version,
    about = "CRI v1 runtime daemon for kubelet"
)]
struct Cli {
    /// Config file (TOML); default /etc/rcrun/cri.toml when it exists.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The CRI socket.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// error, warn, info, debug, trace (or a tracing filter).
    #[arg(long)]
    log_level: Option<String>,
    /// text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// The runtime handler of pods that name none.
    #[arg(long)]
    default_runtime: Option<String>,
    #[arg(long)]
    monitor_path: Option<PathBuf>,
    #[arg(long)]
    cni_conf_dir: Vec<PathBuf>,
    #[arg(long)]
    cni_bin_dir: Vec<PathBuf>,
    /// Run pods without CNI (a network namespace with only loopback).
    #[arg(long)]
    no_cni: bool,
    /// ip:port of the streaming server (port 0 = any free port).
    #[arg(long)]
    streaming_address: Option<String>,
    /// Print the effective configuration (TOML) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the running daemon's images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Import an OCI-layout tar or a `docker save` tar.
    Import { file: PathBuf },
    /// List images.
    Ls,
    /// Remove an image by id, tag or digest.
    Rm { image: String },
    /// Pull an image from its registry, with a progress bar per layer.
    Pull {
        reference: String,
        /// Registry credentials.
        #[arg(long, value_name = "USER:PASS", group = "auth")]
        creds: Option<String>,
        /// An identity token (OAuth2 refresh token) from a registry login,
        /// exchanged at the registry's token server.
        #[arg(long, value_name = "TOKEN", group = "auth")]
        identity_token: Option<String>,
        /// A registry (bearer) token, sent as it is.
        #[arg(long, value_name = "TOKEN", group = "auth")]
        registry_token: Option<String>,
    },
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The namespace helper must run before any thread exists.
    if args.get(1).map(String::as_str) == Some(pinns::HELPER) {
        pinns::helper_main(&args[2..]);
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("rcrun-cri: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let overrides = Overrides {
        socket: cli.socket.clone(),
        state_dir: cli.state_dir.clone(),
        run_dir: cli.run_dir.clone(),
        log_level: cli.log_level.clone(),
        log_format: cli.log_format.clone(),
        default_runtime: cli.default_runtime.clone(),
        monitor_path: cli.monitor_path.clone(),
        cni_conf_dirs: cli.cni_conf_dir.clone(),
        cni_bin_dirs: cli.cni_bin_dir.clone(),
        no_cni: cli.no_cni,
        streaming_address: cli.streaming_address.clone(),
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    if cli.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    match cli.command {
        Some(Command::Image { command }) => image_cli(&config, command),
        None => serve(config),
    }
}

fn image_cli(config: &Config, command: ImageCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let request = match command {
        ImageCommand::Pull {
            reference,
            creds,
            identity_token,
            registry_token,
        } => {
            let credentials = match (creds, identity_token, registry_token) {
                (Some(creds), _, _) => Some(parse_creds(&creds)?),
                (None, Some(identity_token), _) => Some(admin::Credentials {
                    identity_token,
                    ..Default::default()
                }),
                (None, None, Some(registry_token)) => Some(admin::Credentials {
                    registry_token,
                    ..Default::default()
                }),
                (None, None, None) => None,
            };
            let image = rt.block_on(pull_progress::pull(
                config.admin_socket(),
                &reference,
                credentials,
            ))?;
            println!("{}", image.id);
            return Ok(());
        }
        ImageCommand::Import { file } => {
            let path =
                std::fs::canonicalize(&file).with_context(|| format!("{}", file.display()))?;
            admin::AdminRequest::Import { path }
        }
        ImageCommand::Ls => admin::AdminRequest::List,
        ImageCommand::Rm { image } => admin::AdminRequest::Remove { image },
    };
    let images = rt.block_on(admin::call(config.admin_socket(), &request))?;
    println!("{:<20} {:>12}  TAGS", "IMAGE ID", "SIZE");
    for image in images {
        let short = image
            .id
            .trim_start_matches("sha256:")
            .chars()
            .take(13)
            .collect::<String>();
        println!(
            "{:<20} {:>12}  {}",
            short,
            image.size,
            image.repo_tags.join(",")
        );
    }
    Ok(())
}

/// `--creds USER:PASS` (the password may contain ':').
fn parse_creds(creds: &str) -> anyhow::Result<admin::Credentials> {
    match creds.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok(admin::Credentials {
            username: user.to_string(),
            password: password.to_string(),
            ..Default::default()
        }),
        _ => bail!("--creds must be USER:PASS, got {creds:?}"),
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("invalid log level {:?}", config.log_level))?;
    use std::io::IsTerminal;
    // Colours only for a terminal, never in a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Holds the state dir's lock for the daemon's lifetime.
fn lock_state_dir(state_dir: &Path) -> anyhow::Result<std::fs::File> {
    use fs2::FileExt;
    let path = state_dir.join("rcrun-cri.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock_exclusive().is_err() {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another rcrun-cri is already running on state dir {} (lock {} held{})",
            state_dir.display(),
            path.display(),
            if holder.trim().is_empty() {
                String::new()
            } else {
                format!(" by pid {}", holder.trim())
            }
        );
    }
    file.set_len(0)?;
    std::fs::write(&path, format!("{}\n", std::process::id()))?;
    Ok(file)
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config)?;
    for dir in [&config.state_dir, &config.run_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _lock = lock_state_dir(&config.state_dir)?;
    let longest = daemon::longest_socket_path(&config.run_dir);
    if longest >= 108 {
        bail!(
            "run_dir {} is too long: the monitors' unix sockets under it would take {longest} bytes, over the 107 a socket path may have",
            config.run_dir.display()
        );
    }
    if let Some(dir) = config.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve_async(config))
}

async fn serve_async(config: Config) -> anyhow::Result<()> {
    let images =
        rcrun_image::ImageStore::open(&config.state_dir.join("images"), config.registry.clone())
            .await
            .context("opening the image store")?;
    let cni = rcrun_network::CniManager::new(rcrun_network::CniConfig {
        conf_dirs: config.cni.conf_dirs.clone(),
        bin_dirs: config.cni.bin_dirs.clone(),
        cache_dir: config
            .cni
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.state_dir.join("cni-cache")),
        plugin_timeout: std::time::Duration::from_secs(config.cni.plugin_timeout_secs),
    });
    let store = store::Store::open(&config.state_dir.join("store")).context("opening the store")?;
    let socket = config.socket.clone();
    let admin_socket = config.admin_socket().to_path_buf();
    let streaming_config = rcrun_streaming::StreamingConfig {
        listen: config
            .streaming
            .address
            .parse()
            .context("streaming.address")?,
        tls: match (&config.streaming.tls_cert, &config.streaming.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => None,
        },
        token_ttl: std::time::Duration::from_secs(config.streaming.token_ttl_secs),
    };
    let daemon = Arc::new(Daemon::new(config, store, images, cni));
    daemon.restore_pod_cidr();
    recovery::recover(&daemon).await;
    let backend = Arc::new(exec::StreamBackend(Arc::downgrade(&daemon)));
    let streaming = rcrun_streaming::StreamingServer::start(streaming_config, backend)
        .await
        .context("starting the streaming server")?;
    tracing::info!(address = %streaming.local_addr(), "streaming server listening");
    let _ = daemon.streaming.set(streaming);
    let admin = admin::serve(daemon.clone(), &admin_socket)?;

    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %socket.display(), "rcrun-cri serving CRI v1");
    let cri = server::Cri(daemon.clone());
    let stopping = daemon.clone();
    let shutdown = async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down; containers keep running");
        stopping.shutdown.send_replace(true);
        // In-flight requests get a grace period, not forever.
        tokio::spawn(async {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; exiting anyway");
            std::process::exit(0);
        });
    };
    tonic::transport::Server::builder()
        // Every log line of a request carries its CRI method.
        .trace_fn(|request| tracing::info_span!("cri", method = %request.uri().path()))
        .layer(tower::layer::layer_fn(server::log_failures::layer))
        .add_service(
            RuntimeServiceServer::new(cri.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::new(cri)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
        .context("serving gRPC")?;
    admin.abort();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&admin_socket);
    Ok(())
}
