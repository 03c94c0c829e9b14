//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//! PodSandboxStatus, ListPodSandbox.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rcrun_proto::cri;
use rcrun_proto::cri::NamespaceMode;
use tonic::Status;

use super::{internal_chain, labels_match, require_id, validate_name, RpcResult};
use crate::daemon::{now_ns, Daemon};
use crate::pinns::{self, PinRequest};
use crate::sandbox_files::{self, SandboxFiles};
use crate::store::{SandboxRecord, SandboxState};

/// The CRI field of a pod's user namespace options, for error messages.
const USERNS_FIELD: &str = "config.linux.security_context.namespace_options.userns_options";

/// The pod's namespace choices.
#[derive(Debug, Clone, Copy)]
pub struct PodNamespaces {
    pub host_network: bool,
    pub host_ipc: bool,
    pub pid: NamespaceMode,
    /// The mappings of the pod's own user namespace (`hostUsers: false`);
    /// `None` = the host's. Validated by RunPodSandbox.
    pub user: Option<rcrun_cri_spec::PodIdMappings>,
}

impl PodNamespaces {
    /// The host (uid, gid) of the pod's root, when it has a user namespace.
    pub fn user_root(&self) -> Option<(u32, u32)> {
        self.user.map(|m| (m.uids.host_root(), m.gids.host_root()))
    }
}

/// Checks the pod's user namespace options (containerd's rules, see
/// `rcrun_cri_spec::pod_id_mappings`) and that the pod owns the namespaces
/// its user namespace must own: a user-namespaced pod cannot share the
/// host's network, IPC or PID namespace (Kubernetes' own rule for
/// `hostUsers: false`).
fn validate_user_namespace(config: &cri::PodSandboxConfig, ns: &PodNamespaces) -> RpcResult<()> {
    let opts = namespace_options(config).and_then(|n| n.userns_options.as_ref());
    rcrun_cri_spec::pod_id_mappings(opts, USERNS_FIELD)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if ns.user.is_some() {
        for (shared, what) in [
            (ns.host_network, "network"),
            (ns.host_ipc, "IPC"),
            (ns.pid == NamespaceMode::Node, "PID"),
        ] {
            if shared {
                return Err(Status::invalid_argument(format!(
                    "invalid {USERNS_FIELD}.mode: a pod with its own user namespace cannot use the host's {what} namespace"
                )));
            }
        }
    }
    Ok(())
}

/// The pod's `linux.security_context.namespace_options`, if given.
fn namespace_options(config: &cri::PodSandboxConfig) -> Option<&cri::NamespaceOption> {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
}

pub fn pod_namespaces(config: &cri::PodSandboxConfig) -> PodNamespaces {
    let opts = namespace_options(config).cloned().unwrap_or_default();
    PodNamespaces {
        host_network: opts.network == NamespaceMode::Node as i32,
        host_ipc: opts.ipc == NamespaceMode::Node as i32,
        pid: NamespaceMode::try_from(opts.pid).unwrap_or(NamespaceMode::Container),
        user: rcrun_cri_spec::pod_id_mappings(opts.userns_options.as_ref(), USERNS_FIELD)
            .ok()
            .flatten(),
    }
}

/// Gives everyone search (not read) permission on `dir` and each of its
/// ancestors that lacks it, as containerd's 0711 state dirs have.
fn make_searchable(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors() {
        let meta = std::fs::metadata(ancestor)
            .with_context(|| format!("reading the mode of {}", ancestor.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            let wanted = (mode | 0o001) & 0o7777;
            std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(wanted))
                .with_context(|| {
                    format!(
                        "letting user-namespaced pods search {} (mode {:o})",
                        ancestor.display(),
                        mode & 0o7777
                    )
                })?;
            tracing::info!(dir = %ancestor.display(), mode = format!("{wanted:o}"), "made searchable for user-namespaced pods");
        }
    }
    Ok(())
}

/// Whether the runtime at `path` makes idmapped bind mounts, from its
/// `features` (`linux.mountExtensions.idmap.enabled`, as containerd reads
/// it). Asked once per binary; a runtime without `features` cannot.
fn runtime_idmaps_mounts(path: &std::path::Path) -> bool {
    static KNOWN: std::sync::Mutex<Vec<(PathBuf, bool)>> = std::sync::Mutex::new(Vec::new());
    if let Some((_, known)) = KNOWN.lock().unwrap().iter().find(|(p, _)| p == path) {
        return *known;
    }
    let enabled = std::process::Command::new(path)
        .arg("features")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|f| f["linux"]["mountExtensions"]["idmap"]["enabled"].as_bool())
        .unwrap_or(false);
    tracing::debug!(runtime = %path.display(), enabled, "idmapped mounts");
    KNOWN.lock().unwrap().push((path.to_path_buf(), enabled));
    enabled
}

/// containerd's sandbox name: `<name>_<namespace>_<uid>_<attempt>`.
fn sandbox_name_key(meta: &cri::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}",
        meta.name, meta.namespace, meta.uid, meta.attempt
    )
}

fn event(
    kind: cri::ContainerEventType,
    status: cri::PodSandboxStatus,
) -> cri::ContainerEventResponse {
    cri::ContainerEventResponse {
        container_id: status.id.clone(),
        container_event_type: kind as i32,
        created_at: now_ns(),
        pod_sandbox_status: Some(status),
        containers_statuses: Vec::new(),
    }
}

impl Daemon {
    /// Where the pod's own user namespace is pinned (pods with
    /// `hostUsers: false` only). Derived from the config, which the record
    /// keeps, so records of older daemons need no new field.
    pub fn pod_userns(&self, record: &SandboxRecord) -> Option<PathBuf> {
        pod_namespaces(&record.config)
            .user
            .map(|_| self.userns_pin_path(&record.id))
    }

    fn userns_pin_path(&self, id: &str) -> PathBuf {
        self.pod_dir(id).join("ns").join("user")
    }

    /// Every namespace the pod pins: user (if any), network, IPC, UTS.
    pub fn pinned_namespaces(&self, record: &SandboxRecord) -> Vec<PathBuf> {
        self.pod_userns(record)
            .into_iter()
            .chain(
                [&record.netns, &record.ipcns, &record.utsns]
                    .into_iter()
                    .flatten()
                    .cloned(),
            )
            .collect()
    }

    pub fn emit_sandbox(&self, kind: cri::ContainerEventType, record: &SandboxRecord) {
        self.emit(event(kind, self.sandbox_status_proto(record)));
    }

    pub fn find_sandbox(&self, id: &str) -> RpcResult<Option<SandboxRecord>> {
        self.store.sandbox(id).map_err(Status::invalid_argument)
    }

    pub fn sandbox_or_not_found(&self, id: &str) -> RpcResult<SandboxRecord> {
        require_id("pod_sandbox_id", id)?;
        self.find_sandbox(id)?.ok_or_else(|| {
            Status::not_found(format!(
                "an error occurred when try to find sandbox {id:?}: not found"
            ))
        })
    }

    pub async fn run_pod_sandbox(
        self: Arc<Self>,
        req: cri::RunPodSandboxRequest,
    ) -> RpcResult<String> {
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
        validate_name("metadata.name", &meta.name)?;
        for (field, value) in [
            ("metadata.namespace", &meta.namespace),
            ("metadata.uid", &meta.uid),
        ] {
            if value.contains('/') || value.chars().any(char::is_control) {
                return Err(Status::invalid_argument(format!(
                    "{field} {value:?} contains an invalid character"
                )));
            }
        }
        // sethostname(2) takes at most 64 bytes; refuse early, not half-way.
        let host = &config.hostname;
        if host.len() > 64
            || host
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(Status::invalid_argument(format!(
                "hostname {host:?} is not a valid host name (at most 64 letters, digits, '-' and '.')"
            )));
        }
        let Some(runtime) = self.runtime(&req.runtime_handler) else {
            return Err(Status::invalid_argument(format!(
                "unknown runtime handler {:?}: configured handlers are {:?}",
                req.runtime_handler,
                self.config.runtimes.keys().collect::<Vec<_>>()
            )));
        };
        let ns = pod_namespaces(&config);
        if ns.pid == NamespaceMode::Target {
            return Err(Status::invalid_argument(
                "a pod's PID namespace cannot be TARGET",
            ));
        }
        validate_user_namespace(&config, &ns)?;
        let mut sysctls: Vec<(String, String)> = config
            .linux
            .as_ref()
            .map(|l| {
                l.sysctls
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        sysctls.sort();
        pinns::validate_sysctls(&sysctls, !ns.host_network, !ns.host_ipc)
            .map_err(Status::invalid_argument)?;
        if self.config.cni.enabled && !ns.host_network {
            // containerd refuses non-hostNetwork pods until CNI is ready.
            if let Err(message) = self.cni.status() {
                return Err(Status::failed_precondition(format!(
                    "network plugin is not ready: {message} (set cni.enabled = false for pods with only loopback)"
                )));
            }
        }

        let id = self.new_id();
        let key = sandbox_name_key(&meta);
        if let Err(owner) = self.store.reserve_name(&key, &id) {
            return Err(Status::already_exists(format!(
                "failed to reserve sandbox name {key:?}: name {key:?} is reserved for {owner:?}"
            )));
        }
        let dir = self.pod_dir(&id);
        let files = SandboxFiles::in_dir(&dir);
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| self.config.default_cgroup_parent.clone());
        let mut record = SandboxRecord {
            id: id.clone(),
            name_key: key.clone(),
            config: config.clone(),
            runtime_handler: runtime.name.clone(),
            state: SandboxState::Creating,
            created_at: now_ns(),
            netns: (!ns.host_network).then(|| dir.join("ns").join("net")),
            ipcns: (!ns.host_ipc).then(|| dir.join("ns").join("ipc")),
            utsns: (!ns.host_network).then(|| dir.join("ns").join("uts")),
            shm: if ns.host_ipc {
                PathBuf::from("/dev/shm")
            } else {
                files.shm.clone()
            },
            shm_mounted: false,
            cgroup_parent,
            network_attached: false,
            ips: Vec::new(),
            cni_result: serde_json::Value::Null,
            infra: None,
        };
        if let Err(e) = self.store.put_sandbox(&record) {
            self.store.release_name(&key, &id);
            return Err(internal_chain(e));
        }
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        match self
            .clone()
            .set_up_sandbox(&mut record, &files, ns, sysctls)
            .await
        {
            Ok(()) => {}
            Err(status) => {
                tracing::warn!(sandbox = %id, error = %status.message(), "RunPodSandbox failed; cleaning up");
                // The stored record knows of an infra process started half-way.
                let stored = self.find_sandbox(&id).ok().flatten();
                let mut latest = record.clone();
                if let Some(stored) = stored {
                    latest.infra = stored.infra;
                }
                self.release_sandbox_resources(&latest).await;
                let _ = crate::sandbox_files::remove_tree(&dir);
                let _ = self.store.delete_sandbox(&id);
                self.store.release_name(&key, &id);
                return Err(status);
            }
        }
        tracing::info!(sandbox = %id, name = %key, "pod sandbox ready");
        let status = self.sandbox_status_proto(&record);
        self.emit(event(
            cri::ContainerEventType::ContainerCreatedEvent,
            status.clone(),
        ));
        self.emit(event(
            cri::ContainerEventType::ContainerStartedEvent,
            status,
        ));
        Ok(id)
    }

    async fn set_up_sandbox(
        self: Arc<Self>,
        record: &mut SandboxRecord,
        files: &SandboxFiles,
        ns: PodNamespaces,
        sysctls: Vec<(String, String)>,
    ) -> RpcResult<()> {
        let dir = self.pod_dir(&record.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Status::internal(format!("creating {}: {e}", dir.display())))?;
        if ns.user.is_some() {
            // The runtime sets up a container's rootfs and bind mounts from
            // inside the pod's user namespace, whose root is an ordinary
            // user on the host: it must be able to walk to the pod's and the
            // containers' dirs (containerd keeps its state dirs 0711 alike).
            make_searchable(&dir).map_err(internal_chain)?;
        }
        sandbox_files::write_files(files, &record.config, ns.host_network, ns.user_root())
            .map_err(internal_chain)?;
        if !ns.host_ipc {
            sandbox_files::mount_shm(&files.shm, self.config.shm_size, ns.user_root())
                .map_err(internal_chain)?;
            record.shm_mounted = true;
            self.store.put_sandbox(record).map_err(internal_chain)?;
        }
        let pin = PinRequest {
            user: self.pod_userns(record),
            uid_map: ns.user.map(|m| m.uids.map_line()).unwrap_or_default(),
            gid_map: ns.user.map(|m| m.gids.map_line()).unwrap_or_default(),
            net: record.netns.clone(),
            ipc: record.ipcns.clone(),
            uts: record.utsns.clone(),
            hostname: sandbox_files::pod_hostname(&record.config),
            sysctls,
        };
        if pin.user.is_some() || pin.net.is_some() || pin.ipc.is_some() || pin.uts.is_some() {
            tokio::task::spawn_blocking(move || pinns::pin(&pin))
                .await
                .map_err(super::internal)?
                .map_err(|e| Status::internal(format!("pinning the pod's namespaces: {e:#}")))?;
        }
        if let Some(netns) = record.netns.clone() {
            if self.config.cni.enabled {
                // Persist the intent first: a crash during ADD still gets its DEL.
                record.network_attached = true;
                self.store.put_sandbox(record).map_err(internal_chain)?;
                let request = self.pod_network_request(record, netns);
                let result = self.cni.setup_pod(&request).await.map_err(|e| match e {
                    rcrun_network::NetworkError::NotReady(m) => {
                        Status::failed_precondition(format!("network plugin is not ready: {m}"))
                    }
                    other => Status::unknown(format!("failed to set up the pod network: {other}")),
                })?;
                record.ips = result.ips.iter().map(|ip| ip.to_string()).collect();
                record.cni_result = result.result;
            }
        }
        if ns.pid == NamespaceMode::Pod {
            let infra = self.start_infra(record).await?;
            record.infra = Some(infra);
        }
        record.state = SandboxState::Ready;
        self.store.put_sandbox(record).map_err(internal_chain)?;
        if let Some(infra) = &record.infra {
            self.clone()
                .watch_infra(record.id.clone(), infra.monitor_pid);
        }
        Ok(())
    }

    pub fn pod_network_request(
        &self,
        record: &SandboxRecord,
        netns: PathBuf,
    ) -> rcrun_network::PodNetworkRequest {
        let meta = record.config.metadata.clone().unwrap_or_default();
        let dns = record.config.dns_config.clone().unwrap_or_default();
        rcrun_network::PodNetworkRequest {
            sandbox_id: record.id.clone(),
            pod_name: meta.name,
            pod_namespace: meta.namespace,
            pod_uid: meta.uid,
            netns_path: netns,
            port_mappings: record
                .config
                .port_mappings
                .iter()
                .map(|p| rcrun_network::PortMapping {
                    host_port: p.host_port,
                    container_port: p.container_port,
                    protocol: cri::Protocol::try_from(p.protocol)
                        .map(|p| p.as_str_name().to_ascii_lowercase())
                        .unwrap_or_else(|_| "tcp".into()),
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
            dns_servers: dns.servers,
            dns_searches: dns.searches,
            dns_options: dns.options,
            annotations: record
                .config
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Releases everything a sandbox holds on the node except its containers
    /// and its record: infra process, network, pinned namespaces, shm.
    /// Idempotent; used by Stop, Remove, failed Run and start-up recovery.
    /// With `keep_network_on_error`, a failed CNI DEL stops the release
    /// before the network namespace goes, so that a retried Stop can DEL
    /// again (containerd's behaviour); otherwise the release is best effort.
    pub async fn release_sandbox_resources_checked(
        &self,
        record: &SandboxRecord,
        keep_network_on_error: bool,
    ) -> Result<(), String> {
        // Also without recorded pids: an infra being made when the daemon
        // was killed is found by its state dir.
        if record.infra.is_some() || self.infra_dir(&record.id).exists() {
            self.stop_infra(record).await;
        }
        if record.network_attached {
            if let Some(netns) = record.netns.clone() {
                let request = self.pod_network_request(record, netns);
                if let Err(e) = self.cni.teardown_pod(&request).await {
                    tracing::warn!(sandbox = %record.id, error = %e, "CNI DEL failed");
                    if keep_network_on_error {
                        return Err(format!("failed to tear down the pod network: {e}"));
                    }
                }
            }
        }
        for ns in self.pinned_namespaces(record) {
            pinns::unpin(&ns);
        }
        if record.shm_mounted || record.shm.starts_with(self.pod_dir(&record.id)) {
            sandbox_files::unmount_all(&record.shm);
        }
        Ok(())
    }

    /// Best-effort release (failed Run, Remove, start-up recovery).
    pub async fn release_sandbox_resources(&self, record: &SandboxRecord) {
        let _ = self.release_sandbox_resources_checked(record, false).await;
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> RpcResult<()> {
        require_id("pod_sandbox_id", id)?;
        // Unknown IDs are fine: Stop is idempotent (newer containerd, critest).
        let Some(record) = self.find_sandbox(id)? else {
            return Ok(());
        };
        let id = record.id.clone();
        for container in self.store.containers_of(&id) {
            self.stop_container(&container.id, 0).await?;
        }
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let Some(record) = self.find_sandbox(&id)? else {
            return Ok(());
        };
        if let Err(message) = self.release_sandbox_resources_checked(&record, true).await {
            // NotReady, but the network stays attached for the retried Stop.
            let _ = self.store.update_sandbox(&id, |r| {
                r.state = SandboxState::NotReady;
                r.infra = None;
            });
            return Err(Status::unknown(message));
        }
        let was_ready = record.state == SandboxState::Ready;
        let updated = self
            .store
            .update_sandbox(&id, |r| {
                r.state = SandboxState::NotReady;
                r.network_attached = false;
                r.shm_mounted = false;
                r.infra = None;
            })
            .map_err(internal_chain)?;
        if let (true, Some(updated)) = (was_ready, updated) {
            tracing::info!(sandbox = %id, "pod sandbox stopped");
            self.emit(event(
                cri::ContainerEventType::ContainerStoppedEvent,
                self.sandbox_status_proto(&updated),
            ));
        }
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> RpcResult<()> {
        require_id("pod_sandbox_id", id)?;
        let Some(record) = self.find_sandbox(id)? else {
            return Ok(());
        };
        let id = record.id.clone();
        if record.state != SandboxState::NotReady || record.network_attached {
            self.stop_pod_sandbox(&id).await?;
        }
        for container in self.store.containers_of(&id) {
            self.remove_container(&container.id).await?;
        }
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let Some(record) = self.find_sandbox(&id)? else {
            return Ok(());
        };
        // Once more, in case a Stop was interrupted half-way.
        self.release_sandbox_resources(&record).await;
        let dir = self.pod_dir(&id);
        if let Err(e) = crate::sandbox_files::remove_tree(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Status::internal(format!("removing {}: {e}", dir.display())));
            }
        }
        let status = self.sandbox_status_proto(&record);
        self.store.delete_sandbox(&id).map_err(internal_chain)?;
        self.forget_lock(&id);
        tracing::info!(sandbox = %id, "pod sandbox removed");
        self.emit(event(
            cri::ContainerEventType::ContainerDeletedEvent,
            status,
        ));
        Ok(())
    }

    pub fn sandbox_status_proto(&self, record: &SandboxRecord) -> cri::PodSandboxStatus {
        let ns = pod_namespaces(&record.config);
        let state = match record.state {
            SandboxState::Ready => cri::PodSandboxState::SandboxReady,
            _ => cri::PodSandboxState::SandboxNotready,
        };
        let mut ips = record.ips.iter();
        let network = Some(cri::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
        });
        let options = cri::NamespaceOption {
            network: if ns.host_network {
                NamespaceMode::Node
            } else {
                NamespaceMode::Pod
            } as i32,
            pid: ns.pid as i32,
            ipc: if ns.host_ipc {
                NamespaceMode::Node
            } else {
                NamespaceMode::Pod
            } as i32,
            target_id: String::new(),
            // As containerd: the options the pod was created with.
            userns_options: namespace_options(&record.config)
                .and_then(|n| n.userns_options.clone()),
        };
        cri::PodSandboxStatus {
            id: record.id.clone(),
            metadata: record.config.metadata.clone(),
            state: state as i32,
            created_at: record.created_at,
            network,
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(options),
                }),
            }),
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
            runtime_handler: record.runtime_handler.clone(),
        }
    }

    pub async fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> RpcResult<cri::PodSandboxStatusResponse> {
        let record = self.sandbox_or_not_found(id)?;
        let mut info = HashMap::new();
        if verbose {
            let mut check = serde_json::Value::Null;
            if let (true, Some(netns), SandboxState::Ready) =
                (record.network_attached, record.netns.clone(), record.state)
            {
                let request = self.pod_network_request(&record, netns);
                check = match self.cni.check_pod(&request).await {
                    Ok(()) => serde_json::json!("ok"),
                    Err(e) => serde_json::json!(e.to_string()),
                };
            }
            let value = serde_json::json!({
                "pid": record.infra.as_ref().map(|i| i.pid).unwrap_or(0),
                "runtimeHandler": record.runtime_handler,
                "netns": record.netns,
                "ipcns": record.ipcns,
                "utsns": record.utsns,
                "userns": self.pod_userns(&record),
                "shm": record.shm,
                "cgroupParent": record.cgroup_parent,
                "cniResult": record.cni_result,
                "cniCheck": check,
                "config": {
                    "hostname": sandbox_files::pod_hostname(&record.config),
                    "logDirectory": record.config.log_directory,
                },
            });
            info.insert("info".to_string(), value.to_string());
        }
        let containers_statuses = self
            .store
            .containers_of(&record.id)
            .iter()
            .map(|c| self.container_status_proto(c))
            .collect();
        Ok(cri::PodSandboxStatusResponse {
            status: Some(self.sandbox_status_proto(&record)),
            info,
            containers_statuses,
            timestamp: now_ns(),
        })
    }

    pub fn list_pod_sandbox(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let filter = filter.unwrap_or_default();
        self.store
            .sandboxes()
            .into_iter()
            .filter(|r| r.state != SandboxState::Creating)
            .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
            .map(|r| self.sandbox_status_proto(&r))
            .filter(|s| filter.state.as_ref().is_none_or(|f| f.state == s.state))
            .filter(|s| labels_match(&filter.label_selector, &s.labels))
            .map(|s| cri::PodSandbox {
                id: s.id,
                metadata: s.metadata,
                state: s.state,
                created_at: s.created_at,
                labels: s.labels,
                annotations: s.annotations,
                runtime_handler: s.runtime_handler,
            })
            .collect()
    }

    /// What the spec generator needs to know of a sandbox.
    pub fn sandbox_info(&self, record: &SandboxRecord) -> rcrun_cri_spec::SandboxInfo {
        let ns = pod_namespaces(&record.config);
        let files = SandboxFiles::in_dir(&self.pod_dir(&record.id));
        let pid_ns = match ns.pid {
            NamespaceMode::Node => rcrun_cri_spec::PodPidNamespace::Node,
            NamespaceMode::Pod => match &record.infra {
                Some(infra) => rcrun_cri_spec::PodPidNamespace::Pod(PathBuf::from(format!(
                    "/proc/{}/ns/pid",
                    infra.pid
                ))),
                None => rcrun_cri_spec::PodPidNamespace::Container,
            },
            _ => rcrun_cri_spec::PodPidNamespace::Container,
        };
        let sc = record
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        rcrun_cri_spec::SandboxInfo {
            id: record.id.clone(),
            net_ns: record.netns.clone(),
            ipc_ns: record.ipcns.clone(),
            uts_ns: record.utsns.clone(),
            pid_ns,
            user_ns: ns.user.map(|mappings| rcrun_cri_spec::PodUserNamespace {
                path: self.userns_pin_path(&record.id),
                mappings,
                idmap_volumes: self
                    .runtime(&record.runtime_handler)
                    .is_some_and(|r| runtime_idmaps_mounts(&r.path)),
            }),
            hostname: sandbox_files::pod_hostname(&record.config),
            hostname_file: Some(files.hostname),
            hosts_file: Some(files.hosts),
            resolv_conf: Some(files.resolv_conf),
            shm_dir: Some(record.shm.clone()),
            cgroup_parent: record.cgroup_parent.clone(),
            sysctls: record
                .config
                .linux
                .as_ref()
                .map(|l| l.sysctls.clone())
                .unwrap_or_default(),
            security: rcrun_cri_spec::PodSecurity {
                privileged: sc.privileged,
                run_as_user: sc.run_as_user.map(|v| v.value as u32),
                run_as_group: sc.run_as_group.map(|v| v.value as u32),
                supplemental_groups: sc.supplemental_groups.iter().map(|g| *g as u32).collect(),
            },
        }
    }
}
