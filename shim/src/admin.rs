//! The project's own admin socket next to the CRI socket: one JSON request
//! per line, one JSON answer per line. It serves `rcrun-cri image
//! import|ls|rm|pull`, which must act on the running daemon's image store.
//!
//! A pull answers with a stream of [`PullEvent`] lines instead: progress
//! first, then its result; it takes the connection, which closes after it.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

use crate::daemon::Daemon;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Import an OCI-layout or docker-save tar readable by the daemon.
    Import {
        path: PathBuf,
    },
    List,
    Remove {
        image: String,
    },
    /// Pull from a registry, streaming progress (see [`PullEvent`]).
    Pull {
        reference: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<Credentials>,
    },
}

/// What a pull authenticates with: a user and password, or a token (as in
/// the CRI's `AuthConfig`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// An OAuth2 refresh token, exchanged at the registry's token server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity_token: String,
    /// A bearer token, sent as it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registry_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageLine {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AdminResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default)]
    pub images: Vec<ImageLine>,
}

/// One line of a pull's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// A layer's bytes so far (`downloaded == total` once it is complete).
    Progress {
        layer: String,
        downloaded: u64,
        total: u64,
    },
    /// The last line: the pulled image, or why the pull failed.
    Done(AdminResponse),
}

fn line(record: &rcrun_image::ImageRecord) -> ImageLine {
    ImageLine {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        size: record.size,
    }
}

async fn handle(daemon: &Daemon, request: AdminRequest) -> AdminResponse {
    let result: Result<Vec<ImageLine>, String> = match request {
        AdminRequest::Import { path } => {
            if !path.is_absolute() {
                Err(format!("import path {} must be absolute", path.display()))
            } else {
                daemon
                    .images
                    .import(&path)
                    .await
                    .map(|r| r.iter().map(line).collect())
                    .map_err(|e| e.to_string())
            }
        }
        AdminRequest::Pull { .. } => Err("a pull is served by serve_pull".to_string()),
        AdminRequest::List => Ok(daemon.images.list().iter().map(line).collect()),
        AdminRequest::Remove { image } => match daemon.images.resolve(&image) {
            None => Err(format!("image {image:?} not found")),
            Some(record) => daemon
                .images
                .remove(&image)
                .await
                .map(|()| vec![line(&record)])
                .map_err(|e| e.to_string()),
        },
    };
    respond(result)
}

fn respond(result: Result<Vec<ImageLine>, String>) -> AdminResponse {
    match result {
        Ok(images) => AdminResponse {
            ok: true,
            error: String::new(),
            images,
        },
        Err(error) => AdminResponse {
            ok: false,
            error,
            images: Vec::new(),
        },
    }
}

/// Layer progress not yet written to the client, in first-seen order. The
/// store's callback only overwrites entries here, so a slow client gets
/// fewer, newer updates instead of an ever-growing backlog.
#[derive(Default)]
struct PendingProgress {
    layers: Mutex<Vec<(String, u64, u64)>>,
    changed: tokio::sync::Notify,
}

impl PendingProgress {
    fn record(&self, p: &rcrun_image::PullProgress) {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        match layers.iter_mut().find(|(l, _, _)| *l == p.layer) {
            Some(entry) => (entry.1, entry.2) = (p.downloaded, p.total),
            None => layers.push((p.layer.clone(), p.downloaded, p.total)),
        }
        drop(layers);
        self.changed.notify_one();
    }

    fn take(&self) -> Vec<(String, u64, u64)> {
        std::mem::take(&mut *self.layers.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

async fn write_event(wr: &mut OwnedWriteHalf, event: &PullEvent) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    out.push(b'\n');
    wr.write_all(&out).await
}

async fn write_progress(wr: &mut OwnedWriteHalf, pending: &PendingProgress) -> std::io::Result<()> {
    for (layer, downloaded, total) in pending.take() {
        let event = PullEvent::Progress {
            layer,
            downloaded,
            total,
        };
        write_event(wr, &event).await?;
    }
    Ok(())
}

/// Runs one pull for a client, streaming its progress. The client sends
/// nothing more: end of input (or a failed write) means it went away, and
/// the pull's future is dropped, which withdraws its interest from the
/// store (work shared with other pullers goes on for them).
async fn serve_pull(
    daemon: &Daemon,
    reference: String,
    credentials: Option<Credentials>,
    lines: &mut Lines<BufReader<OwnedReadHalf>>,
    wr: &mut OwnedWriteHalf,
) {
    let pending = Arc::new(PendingProgress::default());
    let sink = pending.clone();
    let progress: rcrun_image::ProgressFn = Arc::new(move |p| sink.record(p));
    let auth = credentials.map(|c| rcrun_image::PullAuth {
        username: c.username,
        password: c.password,
        identity_token: c.identity_token,
        registry_token: c.registry_token,
        ..Default::default()
    });
    let pull = daemon.images.pull_with_progress(&reference, auth, progress);
    tokio::pin!(pull);
    let mut client_open = true;
    let result = loop {
        tokio::select! {
            result = &mut pull => break result,
            () = pending.changed.notified() => {
                if write_progress(wr, &pending).await.is_err() {
                    tracing::info!(image = %reference, "admin client went away; pull abandoned");
                    return;
                }
            }
            // `next_line` is cancel safe.
            read = lines.next_line(), if client_open => match read {
                Ok(Some(_)) => client_open = false,
                Ok(None) | Err(_) => {
                    tracing::info!(image = %reference, "admin client went away; pull abandoned");
                    return;
                }
            },
        }
    };
    let response = respond(match result {
        Ok(record) => {
            tracing::info!(image = %reference, id = %record.id, "image pulled (admin)");
            Ok(vec![line(&record)])
        }
        Err(e) => Err(e.to_string()),
    });
    if write_progress(wr, &pending).await.is_ok() {
        let _ = write_event(wr, &PullEvent::Done(response)).await;
    }
}

async fn serve_connection(daemon: Arc<Daemon>, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    while let Ok(Some(text)) = lines.next_line().await {
        let response = match serde_json::from_str::<AdminRequest>(&text) {
            Ok(AdminRequest::Pull {
                reference,
                credentials,
            }) => {
                serve_pull(&daemon, reference, credentials, &mut lines, &mut wr).await;
                break;
            }
            Ok(request) => handle(&daemon, request).await,
            Err(e) => AdminResponse {
                ok: false,
                error: format!("bad request: {e}"),
                images: Vec::new(),
            },
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        if wr.write_all(&out).await.is_err() {
            break;
        }
    }
}

/// Serves the admin socket until the task is dropped. Root-only (mode 0600).
pub fn serve(daemon: Arc<Daemon>, path: &Path) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(daemon.clone(), stream));
        }
    }))
}

async fn connect(path: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(path).await.with_context(|| {
        format!(
            "connecting to the rcrun-cri admin socket {} (is the daemon running?)",
            path.display()
        )
    })
}

/// The client side: one request, one answer.
pub async fn call(path: &Path, request: &AdminRequest) -> anyhow::Result<Vec<ImageLine>> {
    let stream = connect(path).await?;
    let (rd, mut wr) = stream.into_split();
    let mut out = serde_json::to_vec(request)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    let mut lines = BufReader::new(rd).lines();
    let text = lines
        .next_line()
        .await?
        .context("the daemon closed the admin connection")?;
    let response: AdminResponse = serde_json::from_str(&text).context("unreadable admin answer")?;
    if !response.ok {
        bail!("{}", response.error);
    }
    Ok(response.images)
}

/// The client side of a pull: `on_progress` sees each progress line; the
/// result is the pulled image, or the daemon's error.
pub async fn pull(
    path: &Path,
    reference: &str,
    credentials: Option<Credentials>,
    mut on_progress: impl FnMut(&str, u64, u64),
) -> anyhow::Result<ImageLine> {
    let stream = connect(path).await?;
    let (rd, mut wr) = stream.into_split();
    let request = AdminRequest::Pull {
        reference: reference.to_string(),
        credentials,
    };
    let mut out = serde_json::to_vec(&request)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    let mut lines = BufReader::new(rd).lines();
    loop {
        let text = lines
            .next_line()
            .await?
            .context("the daemon closed the admin connection during the pull")?;
        match serde_json::from_str(&text).context("unreadable admin answer")? {
            PullEvent::Progress {
                layer,
                downloaded,
                total,
            } => on_progress(&layer, downloaded, total),
            PullEvent::Done(response) => {
                if !response.ok {
                    bail!("{}", response.error);
                }
                return response
                    .images
                    .into_iter()
                    .next()
                    .context("the daemon's pull answer names no image");
            }
        }
    }
}
