//! Driving a runc-compatible runtime CLI (rcrun, runc, crun) the way
//! containerd and CRI-O drive runc.
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct OciRuntime {
    pub name: String,
    pub path: PathBuf,
    pub root: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {0} does not exist in the runtime")]
    NotFound(String),
    #[error("{runtime} {command}: {message}")]
    Failed {
        runtime: String,
        command: String,
        message: String,
    },
}

impl OciRuntime {
    /// A command with the runtime's global flags already set.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.arg("--root").arg(&self.root).args(&self.args);
        cmd.stdin(Stdio::null()).kill_on_drop(false);
        cmd
    }

    /// Global arguments for `rcrun-monitor --runtime-arg`.
    pub fn global_args(&self) -> Vec<String> {
        self.args.clone()
    }

    async fn run(
        &self,
        what: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String, RuntimeError> {
        let mut cmd = self.command();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let failed = |message: String| RuntimeError::Failed {
            runtime: self.name.clone(),
            command: what.to_string(),
            message,
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| failed(format!("cannot run {}: {e}", self.path.display())))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let _ = pipe.write_all(data).await;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let message = runtime_message(&output.stderr);
        if message.contains("does not exist")
            || message.contains("not found") && message.contains("container")
        {
            if let Some(id) = args.last() {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
        }
        Err(failed(message))
    }

    /// The OCI status (`created`, `running`, `stopped`, ...) of a container.
    pub async fn status(&self, id: &str) -> Result<String, RuntimeError> {
        let out = self.run("state", &["state", id], None).await?;
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_string))
            .ok_or_else(|| RuntimeError::Failed {
                runtime: self.name.clone(),
                command: "state".into(),
                message: format!("no status in {out:?}"),
            })
    }

    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", &["start", id], None).await.map(drop)
    }

    /// Sends `signal` (a name or number) to the init process, or to every
    /// process of the container with `all`.
    pub async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuntimeError> {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.push(id);
        args.push(signal);
        // `kill` takes the signal after the id, so the id is not last: map NotFound here.
        match self.run("kill", &args, None).await {
            Err(RuntimeError::Failed { message, .. })
                if message.contains("not exist") || message.contains("not found") =>
            {
                Err(RuntimeError::NotFound(id.to_string()))
            }
            Err(RuntimeError::NotFound(_)) => Err(RuntimeError::NotFound(id.to_string())),
            other => other.map(drop),
        }
    }

    /// Deletes the container from the runtime; a missing one is fine.
    pub async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        match self.run("delete", &["delete", "--force", id], None).await {
            Ok(_) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `update --resources -` with an OCI `LinuxResources` JSON.
    pub async fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), RuntimeError> {
        self.run(
            "update",
            &["update", "--resources", "-", id],
            Some(resources_json),
        )
        .await
        .map(drop)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The useful part of a runtime's stderr: the `msg` of logrus-style lines
/// (`level=error msg="..."` or JSON), else the text itself.
pub fn runtime_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut messages = Vec::new();
    for line in text.lines() {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(msg) = json.get("msg").and_then(|m| m.as_str()) {
                messages.push(msg.to_string());
                continue;
            }
        }
        if let Some(pos) = line.find("msg=\"") {
            let rest = &line[pos + 5..];
            let mut msg = String::new();
            let mut escaped = false;
            for ch in rest.chars() {
                match (escaped, ch) {
                    (true, c) => {
                        msg.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (false, c) => msg.push(c),
                }
            }
            messages.push(msg);
            continue;
        }
        if !line.trim().is_empty() {
            messages.push(line.trim().to_string());
        }
    }
    if messages.is_empty() {
        "failed with no message".into()
    } else {
        messages.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_messages_are_extracted() {
        assert_eq!(
            runtime_message(b"time=\"x\" level=error msg=\"container \\\"a\\\" does not exist\"\n"),
            "container \"a\" does not exist"
        );
        assert_eq!(
            runtime_message(b"{\"level\":\"error\",\"msg\":\"boom\"}\n"),
            "boom"
        );
        assert_eq!(runtime_message(b"plain failure\n"), "plain failure");
        assert_eq!(runtime_message(b""), "failed with no message");
    }
}
