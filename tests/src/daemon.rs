//! A real `rcrun-cri` on a temp socket, state dir and run dir, driven with
//! tonic CRI clients over its unix socket. Dropping it removes every pod
//! through the CRI, stops the daemon by PID, and checks that nothing stayed
//! mounted under its dirs.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
use rcrun_proto::cri;
use rcrun_proto::cri::image_service_client::ImageServiceClient;
use rcrun_proto::cri::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::bins::bin;

/// Largest CRI message the clients accept (ExecSync answers go up to 16 MiB).
const MAX_MESSAGE: usize = 17 * 1024 * 1024;

/// The OCI runtime the tests use: `RCRUN_TEST_RUNTIME` (a path), else `rcrun`.
pub fn default_runtime() -> PathBuf {
    match std::env::var_os("RCRUN_TEST_RUNTIME") {
        Some(path) => PathBuf::from(path),
        None => bin("rcrun"),
    }
}

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The default runtime handler's binary.
    pub runtime: PathBuf,
    /// CNI conf dir; `None` runs pods with loopback only (`cni.enabled = false`).
    pub cni_conf_dir: Option<PathBuf>,
    pub cni_bin_dirs: Vec<PathBuf>,
    /// `registry host -> endpoints`.
    pub registry_mirrors: Vec<(String, Vec<String>)>,
    /// Hosts spoken to over plain http.
    pub insecure_registries: Vec<String>,
    /// More TOML appended to the generated config.
    pub extra_toml: String,
    pub log_level: String,
    /// A network namespace standing in for the node (see
    /// [`crate::cni::Netns::create_node`]): the daemon runs there, so CNI's
    /// bridges and veths never touch the host's network.
    pub node_netns: Option<PathBuf>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            runtime: default_runtime(),
            cni_conf_dir: None,
            cni_bin_dirs: vec![PathBuf::from(crate::cni::PLUGIN_DIR)],
            registry_mirrors: Vec::new(),
            insecure_registries: Vec::new(),
            extra_toml: String::new(),
            log_level: "debug".into(),
            node_netns: None,
        }
    }
}

pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    child: Option<Child>,
    node_netns: Option<PathBuf>,
    /// Cgroup parents of the pods started with [`Daemon::run_pod`]: kubelet
    /// owns pod cgroups, so the test removes them at the end.
    pod_cgroups: Vec<String>,
    _tmp: tempfile::TempDir,
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn toml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| toml_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A tonic channel over a unix socket.
pub async fn connect(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to {}", socket.display()))
}

impl Daemon {
    pub async fn start(opts: DaemonOptions) -> Daemon {
        Self::try_start(opts).await.expect("starting rcrun-cri")
    }

    pub async fn try_start(opts: DaemonOptions) -> Result<Daemon> {
        // Short paths: unix socket paths are limited to 108 bytes.
        let tmp = tempfile::Builder::new().prefix("rcri").tempdir_in("/tmp")?;
        let dir = tmp.path().to_path_buf();
        let socket = dir.join("cri.sock");
        let state_dir = dir.join("state");
        let run_dir = dir.join("run");
        let config_path = dir.join("cri.toml");
        let mut toml = format!(
            "socket = {}\nstate_dir = {}\nrun_dir = {}\ndefault_runtime = \"test\"\nlog_level = {}\n",
            toml_str(&socket.to_string_lossy()),
            toml_str(&state_dir.to_string_lossy()),
            toml_str(&run_dir.to_string_lossy()),
            toml_str(&opts.log_level),
        );
        toml.push_str(&format!(
            "[runtimes.test]\npath = {}\n",
            toml_str(&opts.runtime.to_string_lossy())
        ));
        toml.push_str("[runtimes.runc]\npath = \"/usr/sbin/runc\"\n");
        toml.push_str(&format!(
            "[runtimes.rcrun]\npath = {}\n",
            toml_str(&bin("rcrun").to_string_lossy())
        ));
        match &opts.cni_conf_dir {
            Some(conf) => {
                let bins: Vec<String> = opts
                    .cni_bin_dirs
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                toml.push_str(&format!(
                    "[cni]\nenabled = true\nconf_dirs = {}\nbin_dirs = {}\n",
                    toml_list(&[conf.to_string_lossy().into_owned()]),
                    toml_list(&bins)
                ));
            }
            None => toml.push_str("[cni]\nenabled = false\n"),
        }
        toml.push_str("[registry]\n");
        toml.push_str(&format!(
            "insecure = {}\n",
            toml_list(&opts.insecure_registries)
        ));
        toml.push_str("[registry.mirrors]\n");
        for (host, endpoints) in &opts.registry_mirrors {
            toml.push_str(&format!("{} = {}\n", toml_str(host), toml_list(endpoints)));
        }
        toml.push_str(&opts.extra_toml);
        std::fs::write(&config_path, toml)?;
        let log_path = dir.join("daemon.log");
        let channel_placeholder = Endpoint::try_from("http://[::]:1")?.connect_lazy();
        let mut daemon = Daemon {
            dir,
            socket,
            state_dir,
            run_dir,
            config_path,
            log_path,
            runtime: RuntimeServiceClient::new(channel_placeholder.clone()),
            images: ImageServiceClient::new(channel_placeholder),
            child: None,
            node_netns: opts.node_netns.clone(),
            pod_cgroups: Vec::new(),
            _tmp: tmp,
        };
        daemon.spawn().await?;
        Ok(daemon)
    }

    /// A command line of this daemon's binary with its config.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("rcrun-cri"));
        cmd.arg("--config").arg(&self.config_path);
        cmd
    }

    /// Starts the daemon process and waits until it answers `Version`.
    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = self.command();
        if let Some(netns) = &self.node_netns {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let ns = std::fs::File::open(netns)
                .with_context(|| format!("opening {}", netns.display()))?;
            // SAFETY: setns is async-signal-safe; the closure owns the fd.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning rcrun-cri")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "rcrun-cri exited with {status} at start-up:\n{}",
                    self.log()
                );
            }
            if self.socket.exists() {
                if let Ok(channel) = connect(&self.socket).await {
                    let mut rt = RuntimeServiceClient::new(channel.clone())
                        .max_decoding_message_size(MAX_MESSAGE)
                        .max_encoding_message_size(MAX_MESSAGE);
                    if rt.version(cri::VersionRequest::default()).await.is_ok() {
                        self.runtime = rt;
                        self.images = ImageServiceClient::new(channel)
                            .max_decoding_message_size(MAX_MESSAGE)
                            .max_encoding_message_size(MAX_MESSAGE);
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("rcrun-cri did not answer within 30s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9` the daemon (its containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn sigterm(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again on the same dirs (after `kill9` or `sigterm`).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.sigterm();
        }
        self.spawn().await.expect("restarting rcrun-cri");
    }

    /// `rcrun-cri image import FILE` against this daemon; the imported image ids.
    pub fn import(&self, archive: &Path) -> Result<String> {
        let out = self
            .command()
            .args(["image", "import"])
            .arg(archive)
            .output()?;
        if !out.status.success() {
            bail!(
                "image import {}: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports a fixture image (by catalog name, from its `docker save` archive,
    /// which names its tags) and returns its reference.
    pub fn import_fixture(&self, name: &str) -> String {
        let image = crate::fixtures::image(name);
        self.import(&image.docker_archive())
            .expect("importing a fixture image");
        image.reference()
    }

    /// Mount points under this daemon's dirs (from /proc/self/mountinfo).
    pub fn mounts_under_dirs(&self) -> Vec<String> {
        mounts_under(&self.dir)
    }

    /// Removes every pod (and so every container) through the CRI.
    pub async fn remove_all_pods(&mut self) -> Result<()> {
        remove_pods(&mut self.runtime).await
    }
}

/// Stops and removes every pod the daemon behind `client` lists.
async fn remove_pods(client: &mut RuntimeServiceClient<Channel>) -> Result<()> {
    let pods = client
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    for pod in pods {
        client
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await?;
        client
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.id,
            })
            .await?;
    }
    Ok(())
}

/// Removes the pod cgroups `parents` in every hierarchy; returns the
/// cgroups that could not be removed because something is still in them.
pub fn remove_cgroups(parents: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    let hierarchies: Vec<PathBuf> = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        std::fs::read_dir("/sys/fs/cgroup")
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for parent in parents {
        for h in &hierarchies {
            let dir = h.join(parent.trim_start_matches('/'));
            if !dir.is_dir() {
                continue;
            }
            if std::fs::remove_dir(&dir).is_err() {
                let children: Vec<String> = std::fs::read_dir(&dir)
                    .map(|r| {
                        r.flatten()
                            .filter(|e| e.path().is_dir())
                            .map(|e| e.path().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                left.extend(children);
            }
        }
    }
    left
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let socket = self.socket.clone();
        let alive = self.child.is_some();
        let mut cleanup_error = None;
        if alive {
            // The test's runtime may be gone or busy: clean up from a thread of our own.
            let result = std::thread::spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let channel = connect(&socket).await?;
                    remove_pods(&mut RuntimeServiceClient::new(channel)).await
                })
            })
            .join();
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => cleanup_error = Some(format!("{e:#}")),
                Err(_) => cleanup_error = Some("cleanup thread panicked".into()),
            }
            self.sigterm();
        }
        let leaked = mounts_under(&self.dir);
        let leaked_cgroups = remove_cgroups(&self.pod_cgroups);
        // Never leave mounts behind, even when the test failed.
        for m in leaked.iter().rev() {
            let _ = nix::mount::umount2(Path::new(m), nix::mount::MntFlags::MNT_DETACH);
        }
        if std::thread::panicking() {
            return;
        }
        if let Some(e) = cleanup_error {
            panic!(
                "removing the pods at the end of the test failed: {e}\n{}",
                self.log()
            );
        }
        assert!(
            leaked.is_empty(),
            "mounts left under {}: {leaked:?}\n{}",
            self.dir.display(),
            self.log()
        );
        assert!(
            leaked_cgroups.is_empty(),
            "cgroups left in the pods' cgroups: {leaked_cgroups:?}\n{}",
            self.log()
        );
    }
}

// ---- request builders shared by the CRI tests ----

/// A unique pod config with loopback-only networking, logs under `log_dir`.
pub fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    let uid = crate::cni::unique_tag();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("{name}-{uid}"),
            uid: format!("uid-{uid}"),
            namespace: "rcrun-test".into(),
            attempt: 0,
        }),
        hostname: name.chars().take(63).collect(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        labels: HashMap::from([("test".to_string(), name.to_string())]),
        // Like kubelet: an explicit PID namespace per container (the CRI's
        // zero value is POD, a shared one).
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/rcrun-test/pod-{uid}"),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `args` (as `command`) from `image`.
pub fn container_config(name: &str, image: &str, args: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("container".to_string(), name.to_string())]),
        ..Default::default()
    }
}

/// A container config running `sleep 1000`: a container that stays up for
/// the test to exec into, inspect and stop.
pub fn sleeper(name: &str, image: &str) -> cri::ContainerConfig {
    container_config(name, image, &["sleep", "1000"])
}

/// A container config answering `pong` to each TCP connection on `port`
/// (busybox `nc`), for traffic tests.
pub fn pong_server(name: &str, image: &str, port: u16) -> cri::ContainerConfig {
    let script = format!("while true; do echo pong | nc -l -p {port}; done");
    container_config(name, image, &["sh", "-c", &script])
}

/// A temp dir for pods' logs (a [`pod_config`]'s `log_directory`).
pub fn log_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rcri-logs")
        .tempdir()
        .expect("creating a log dir")
}

/// Builder steps on a [`pod_config`].
pub trait PodConfigExt {
    /// Replaces the pod's namespace options (host namespaces, a shared PID
    /// namespace).
    fn with_namespaces(self, options: cri::NamespaceOption) -> Self;
}

impl PodConfigExt for cri::PodSandboxConfig {
    fn with_namespaces(mut self, options: cri::NamespaceOption) -> Self {
        self.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options = Some(options);
        self
    }
}

/// Builder steps on a [`container_config`] for the Linux settings tests vary.
pub trait ContainerConfigExt {
    /// Replaces the container's namespace options (e.g. TARGET for an
    /// ephemeral container).
    fn with_namespaces(self, options: cri::NamespaceOption) -> Self;
    fn with_resources(self, resources: cri::LinuxContainerResources) -> Self;
    /// A `Localhost` seccomp profile: the JSON file at `path` on the node.
    fn with_seccomp_profile(self, path: &str) -> Self;
    /// Capabilities added to the default set (names without `CAP_`).
    fn with_added_capabilities(self, capabilities: &[&str]) -> Self;
}

impl ContainerConfigExt for cri::ContainerConfig {
    fn with_namespaces(mut self, options: cri::NamespaceOption) -> Self {
        security_context(&mut self).namespace_options = Some(options);
        self
    }

    fn with_resources(mut self, resources: cri::LinuxContainerResources) -> Self {
        self.linux.get_or_insert_with(Default::default).resources = Some(resources);
        self
    }

    fn with_seccomp_profile(mut self, path: &str) -> Self {
        security_context(&mut self).seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: path.into(),
        });
        self
    }

    fn with_added_capabilities(mut self, capabilities: &[&str]) -> Self {
        security_context(&mut self)
            .capabilities
            .get_or_insert_with(Default::default)
            .add_capabilities
            .extend(capabilities.iter().map(|c| c.to_string()));
        self
    }
}

fn security_context(config: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

impl Daemon {
    pub async fn run_pod(&mut self, config: &cri::PodSandboxConfig) -> Result<String> {
        if let Some(parent) = config.linux.as_ref().map(|l| l.cgroup_parent.clone()) {
            if !parent.is_empty() {
                self.pod_cgroups.push(parent);
            }
        }
        Ok(self
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    pub async fn create(
        &mut self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        config: &cri::ContainerConfig,
    ) -> Result<String> {
        Ok(self
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config.clone()),
                sandbox_config: Some(pod.clone()),
            })
            .await?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> Result<()> {
        self.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await?;
        Ok(())
    }

    /// Creates and starts a container.
    pub async fn run_container(
        &mut self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        config: &cri::ContainerConfig,
    ) -> Result<String> {
        let id = self.create(pod_id, pod, config).await?;
        self.start_container(&id).await?;
        Ok(id)
    }

    /// Creates and starts a [`sleeper`] named `name`.
    pub async fn run_sleeper(
        &mut self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
    ) -> Result<String> {
        self.run_container(pod_id, pod, &sleeper(name, image)).await
    }

    pub async fn stop_container(&mut self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        self.runtime
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await?;
        Ok(())
    }

    pub async fn remove_container(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await?;
        Ok(())
    }

    pub async fn stop_pod(&mut self, pod_id: &str) -> Result<(), tonic::Status> {
        self.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await?;
        Ok(())
    }

    pub async fn remove_pod(&mut self, pod_id: &str) -> Result<(), tonic::Status> {
        self.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await?;
        Ok(())
    }

    /// PodSandboxStatus without the verbose info.
    pub async fn pod_status(&mut self, pod_id: &str) -> Result<cri::PodSandboxStatus> {
        self.runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.into(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .context("PodSandboxStatus without status")
    }

    /// The verbose PodSandboxStatus's `info` JSON (e.g. the infra `pid`).
    pub async fn pod_info(&mut self, pod_id: &str) -> Result<serde_json::Value> {
        let response = self
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.into(),
                verbose: true,
            })
            .await?
            .into_inner();
        verbose_info(&response.info)
    }

    /// The verbose ContainerStatus's `info` JSON (e.g. `pid`, `monitorPid`).
    pub async fn container_info(&mut self, id: &str) -> Result<serde_json::Value> {
        let response = self
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await?
            .into_inner();
        verbose_info(&response.info)
    }

    pub async fn list_containers(&mut self) -> Result<Vec<cri::Container>, tonic::Status> {
        Ok(self
            .runtime
            .list_containers(cri::ListContainersRequest::default())
            .await?
            .into_inner()
            .containers)
    }

    pub async fn list_pods(&mut self) -> Result<Vec<cri::PodSandbox>, tonic::Status> {
        Ok(self
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items)
    }

    /// The runtime condition of type `kind` (`RuntimeReady`, `NetworkReady`)
    /// from a non-verbose Status.
    pub async fn condition(&mut self, kind: &str) -> Result<cri::RuntimeCondition> {
        self.runtime
            .status(cri::StatusRequest { verbose: false })
            .await?
            .into_inner()
            .status
            .context("Status without status")?
            .conditions
            .into_iter()
            .find(|c| c.r#type == kind)
            .with_context(|| format!("no {kind} condition"))
    }

    pub async fn status(&mut self, id: &str) -> Result<cri::ContainerStatus> {
        self.runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .context("ContainerStatus without status")
    }

    /// Waits until the container reaches `state`; returns its status.
    pub async fn wait_state(
        &mut self,
        id: &str,
        state: cri::ContainerState,
        timeout: Duration,
    ) -> Result<cri::ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id).await?;
            if status.state == state as i32 {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "container {id} is still in state {} after {timeout:?}: {status:?}",
                    status.state
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to 20 s until the container runs; returns its status.
    pub async fn wait_running(&mut self, id: &str) -> Result<cri::ContainerStatus> {
        self.wait_state(
            id,
            cri::ContainerState::ContainerRunning,
            Duration::from_secs(20),
        )
        .await
    }

    pub async fn version(&mut self) -> Result<cri::VersionResponse, tonic::Status> {
        Ok(self
            .runtime
            .version(cri::VersionRequest::default())
            .await?
            .into_inner())
    }

    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        Ok(self
            .runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await?
            .into_inner())
    }
}

/// The JSON under `info` in a verbose status answer.
fn verbose_info(info: &HashMap<String, String>) -> Result<serde_json::Value> {
    let text = info.get("info").context("verbose status without info")?;
    serde_json::from_str(text).context("verbose info is not JSON")
}

// ---- pods on a CNI bridge network ----

/// A node network namespace with a CNI bridge network configured for it:
/// a daemon started with [`CniNode::daemon_options`] runs in the node and
/// gives its pods IPs on the bridge, away from the host's network.
pub struct CniNode {
    pub net: crate::cni::BridgeNetwork,
    _data: tempfile::TempDir,
    conf: tempfile::TempDir,
    /// Last to drop: the namespace everything else was made for.
    pub node: crate::cni::Netns,
}

impl CniNode {
    pub fn create() -> CniNode {
        let node = crate::cni::Netns::create_node().expect("creating a node netns");
        let conf = tempfile::tempdir().expect("creating a CNI conf dir");
        let data = tempfile::tempdir().expect("creating a CNI data dir");
        let net = crate::cni::BridgeNetwork::new(data.path());
        net.write(conf.path(), "10-rcrun.conflist")
            .expect("writing the CNI network");
        CniNode {
            net,
            _data: data,
            conf,
            node,
        }
    }

    /// Options for a daemon in the node, with the bridge network as its CNI.
    pub fn daemon_options(&self) -> DaemonOptions {
        DaemonOptions {
            cni_conf_dir: Some(self.conf.path().to_path_buf()),
            node_netns: Some(self.node.path.clone()),
            ..Default::default()
        }
    }
}

impl Daemon {
    /// What a [`pong_server`] at `server_ip:port` answers a `ping` sent with
    /// `nc` from container `client`: retried for about 5 s (the server may
    /// still be starting) until the answer holds `pong`.
    pub async fn ask_pong_server(&mut self, client: &str, server_ip: &str, port: u16) -> String {
        let script = format!("echo ping | nc -w 2 {server_ip} {port}");
        let mut answer = String::new();
        for _ in 0..50 {
            let r = self
                .exec_sync(client, &["sh", "-c", &script], 10)
                .await
                .expect("exec nc in the client");
            answer = String::from_utf8_lossy(&r.stdout).into_owned();
            if answer.contains("pong") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        answer
    }
}
