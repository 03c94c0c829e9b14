//! Containers: Create, Start, Stop, Remove, List, Status,
//! UpdateContainerResources, ReopenContainerLog; and exit handling.
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcrun_proto::cri;
use rcrun_proto::cri::NamespaceMode;
use tonic::Status;

use super::{internal_chain, labels_match, require_id, validate_name, RpcResult};
use crate::daemon::{now_ns, Daemon};
use crate::monitor::{self, MonitorSpec};
use crate::store::{ContainerRecord, ContainerState, ProcessIds, SandboxRecord, SandboxState};

/// containerd's exit code for a container whose start failed.
const START_ERROR_EXIT_CODE: i32 = 128;
/// How long ReopenContainerLog waits for the monitor to create the new file.
const REOPEN_WAIT: Duration = Duration::from_secs(5);
/// How long a SIGKILLed container may take to be reaped before Stop gives up.
const KILL_GRACE: Duration = Duration::from_secs(30);

/// containerd's container name: `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`.
fn container_name_key(meta: &cri::ContainerMetadata, pod: &cri::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
    )
}

pub fn image_error_status(e: rcrun_image::ImageError) -> Status {
    use rcrun_image::ImageError as E;
    match e {
        E::NotFound(_) => Status::not_found(e.to_string()),
        E::Unauthorized { .. } => Status::unauthenticated(e.to_string()),
        E::InvalidReference { .. } | E::InvalidAuth(_) => Status::invalid_argument(e.to_string()),
        E::InUse(_) => Status::failed_precondition(e.to_string()),
        E::Other(_) => Status::internal(e.to_string()),
    }
}

fn spec_error_status(e: rcrun_cri_spec::SpecError) -> Status {
    use rcrun_cri_spec::SpecErrorKind as K;
    let message = format!("failed to generate container spec: {e}");
    match e.kind() {
        K::InvalidArgument => Status::invalid_argument(message),
        K::NotFound => Status::not_found(message),
        K::Internal => Status::internal(message),
    }
}

/// The log file under the pod's log directory; `None` when there is none.
fn resolve_log_path(log_directory: &str, log_path: &str) -> RpcResult<Option<PathBuf>> {
    if log_directory.is_empty() || log_path.is_empty() {
        return Ok(None);
    }
    let rel = Path::new(log_path);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Status::invalid_argument(format!(
            "log_path {log_path:?} must be relative to the pod's log_directory and stay inside it"
        )));
    }
    Ok(Some(Path::new(log_directory).join(rel)))
}

fn container_event(
    kind: cri::ContainerEventType,
    sandbox: Option<cri::PodSandboxStatus>,
    status: cri::ContainerStatus,
) -> cri::ContainerEventResponse {
    cri::ContainerEventResponse {
        container_id: status.id.clone(),
        container_event_type: kind as i32,
        created_at: now_ns(),
        pod_sandbox_status: sandbox,
        containers_statuses: vec![status],
    }
}

impl Daemon {
    pub fn find_container(&self, id: &str) -> RpcResult<Option<ContainerRecord>> {
        self.store.container(id).map_err(Status::invalid_argument)
    }

    pub fn container_or_not_found(&self, id: &str) -> RpcResult<ContainerRecord> {
        require_id("container_id", id)?;
        self.find_container(id)?.ok_or_else(|| {
            Status::not_found(format!(
                "an error occurred when try to find container {id:?}: not found"
            ))
        })
    }

    fn emit_container(&self, kind: cri::ContainerEventType, record: &ContainerRecord) {
        let sandbox = self
            .store
            .sandbox(&record.sandbox_id)
            .ok()
            .flatten()
            .map(|s| self.sandbox_status_proto(&s));
        self.emit(container_event(
            kind,
            sandbox,
            self.container_status_proto(record),
        ));
    }

    pub async fn create_container(
        self: Arc<Self>,
        req: cri::CreateContainerRequest,
    ) -> RpcResult<String> {
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
        validate_name("metadata.name", &meta.name)?;
        let sandbox = self.sandbox_or_not_found(&req.pod_sandbox_id)?;
        if sandbox.state != SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "sandbox {} is not ready: cannot create a container in a stopped pod",
                sandbox.id
            )));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(Status::invalid_argument(
                "config.image.image must not be empty",
            ));
        }
        let image = self.images.resolve(&image_name).ok_or_else(|| {
            Status::not_found(format!("image {image_name:?} not found: pull it first"))
        })?;
        let log_path = resolve_log_path(&sandbox.config.log_directory, &config.log_path)?;
        let runtime = self.runtime(&sandbox.runtime_handler).ok_or_else(|| {
            Status::failed_precondition(format!(
                "the pod's runtime handler {:?} is no longer configured",
                sandbox.runtime_handler
            ))
        })?;
        let target_pid_ns = self.target_pid_ns(&config, &sandbox)?;
        let pod_meta = sandbox.config.metadata.clone().unwrap_or_default();
        let id = self.new_id();
        let key = container_name_key(&meta, &pod_meta);
        if let Err(owner) = self.store.reserve_name(&key, &id) {
            return Err(Status::already_exists(format!(
                "failed to reserve container name {key:?}: name {key:?} is reserved for {owner:?}"
            )));
        }
        let mut record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name_key: key.clone(),
            config: config.clone(),
            image_id: image.id.clone(),
            image_name: image_name.clone(),
            runtime_handler: runtime.name.clone(),
            state: ContainerState::Creating,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            process: ProcessIds::default(),
            log_path: log_path
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cgroups_path: rcrun_cri_spec::container_cgroups_path(&sandbox.cgroup_parent, &id),
            stop_signal: image.config.stop_signal.clone(),
            uid: 0,
            gid: 0,
            supplemental_groups: Vec::new(),
            resources: config.linux.as_ref().and_then(|l| l.resources.clone()),
        };
        if let Err(e) = self.store.put_container(&record) {
            self.store.release_name(&key, &id);
            return Err(internal_chain(e));
        }
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let setup = self
            .set_up_container(
                &mut record,
                &sandbox,
                &image,
                &runtime,
                log_path,
                target_pid_ns,
            )
            .await;
        if let Err(status) = setup {
            tracing::warn!(container = %id, error = %status.message(), "CreateContainer failed; cleaning up");
            // Best effort: the create failed, and its error is the answer.
            let _ = self.release_container_resources(&record).await;
            let _ = self.store.delete_container(&id);
            self.store.release_name(&key, &id);
            self.forget_lock(&id);
            return Err(status);
        }
        tracing::info!(container = %id, sandbox = %sandbox.id, name = %key, "container created");
        self.emit_container(cri::ContainerEventType::ContainerCreatedEvent, &record);
        self.clone()
            .watch_exit(id.clone(), record.process.monitor_pid);
        Ok(id)
    }

    /// For `NamespaceMode::TARGET`: the target container's PID namespace.
    fn target_pid_ns(
        &self,
        config: &cri::ContainerConfig,
        sandbox: &SandboxRecord,
    ) -> RpcResult<Option<PathBuf>> {
        let opts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        if opts.pid != NamespaceMode::Target as i32 {
            return Ok(None);
        }
        if opts.target_id.is_empty() {
            return Err(Status::invalid_argument(
                "namespace_options.target_id is required with a TARGET PID namespace",
            ));
        }
        let target = self.find_container(&opts.target_id)?.ok_or_else(|| {
            Status::not_found(format!(
                "target container {:?} of the PID namespace not found",
                opts.target_id
            ))
        })?;
        if target.sandbox_id != sandbox.id {
            return Err(Status::invalid_argument(format!(
                "target container {} is not in pod {}",
                target.id, sandbox.id
            )));
        }
        if target.state != ContainerState::Running || target.process.pid <= 0 {
            return Err(Status::failed_precondition(format!(
                "target container {} is not running: cannot join its PID namespace",
                target.id
            )));
        }
        Ok(Some(PathBuf::from(format!(
            "/proc/{}/ns/pid",
            target.process.pid
        ))))
    }

    async fn set_up_container(
        self: &Arc<Self>,
        record: &mut ContainerRecord,
        sandbox: &SandboxRecord,
        image: &rcrun_image::ImageRecord,
        runtime: &crate::oci_runtime::OciRuntime,
        log_path: Option<PathBuf>,
        target_pid_ns: Option<PathBuf>,
    ) -> RpcResult<()> {
        let id = record.id.clone();
        let run_dir = self.container_run_dir(&id);
        let bundle = self.bundle_dir(&id);
        let rootfs = bundle.join("rootfs");
        let scratch = self.scratch_dir(&id);
        for dir in [&rootfs, &scratch] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Status::internal(format!("creating {}: {e}", dir.display())))?;
        }
        // In a pod's user namespace, the image layers are idmapped with it
        // and the writable layer belongs to the container's root.
        let userns = crate::server::sandbox::pod_namespaces(&sandbox.config)
            .user_root()
            .and_then(|root| Some((self.pod_userns(sandbox)?, root)));
        {
            let daemon = self.clone();
            let (id, image_id, rootfs, scratch) = (
                id.clone(),
                image.id.clone(),
                rootfs.clone(),
                scratch.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let idmap = userns
                    .as_ref()
                    .map(|(path, root)| rcrun_image::RootfsIdmap {
                        userns: path,
                        root: *root,
                    });
                daemon.images.prepare_rootfs_idmapped(
                    &id,
                    &image_id,
                    &rootfs,
                    &scratch,
                    idmap.as_ref(),
                )
            })
            .await
            .map_err(super::internal)?
            .map_err(image_error_status)?;
        }
        let info = self.sandbox_info(sandbox);
        let image_config = rcrun_cri_spec::ImageConfig {
            user: image.config.user.clone(),
            env: image.config.env.clone(),
            entrypoint: image.config.entrypoint.clone(),
            cmd: image.config.cmd.clone(),
            working_dir: image.config.working_dir.clone(),
        };
        let options = rcrun_cri_spec::SpecOptions::default();
        let seccomp_root = self.config.state_dir.join("seccomp");
        let input = rcrun_cri_spec::ContainerSpecInput {
            id: &id,
            config: &record.config,
            sandbox_config: &sandbox.config,
            sandbox: &info,
            image: &image_config,
            rootfs: &rootfs,
            cgroups_path: &record.cgroups_path,
            target_pid_ns: target_pid_ns.as_deref(),
            seccomp_profile_root: &seccomp_root,
            min_oom_score_adj: self.min_oom_score_adj,
            cgroup_v2: self.cgroup_v2,
            options: &options,
        };
        let spec = rcrun_cri_spec::container_spec(&input).map_err(spec_error_status)?;
        if let Some(process) = spec.process() {
            record.uid = process.user().uid() as i64;
            record.gid = process.user().gid() as i64;
            record.supplemental_groups = process
                .user()
                .additional_gids()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(i64::from)
                .collect();
        }
        let json = serde_json::to_vec_pretty(&spec).map_err(super::internal)?;
        crate::store::write_volatile(&bundle.join("config.json"), &json)
            .map_err(|e| Status::internal(format!("writing config.json: {e}")))?;
        let log_file = match &log_path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Status::internal(format!("creating log dir {}: {e}", dir.display()))
                    })?;
                }
                path.clone()
            }
            None => PathBuf::from("/dev/null"),
        };
        let memory_cgroup = Some(self.memory_cgroup_dir(&record.cgroups_path));
        let monitor_path = self.config.monitor_path().to_path_buf();
        let (tty, stdin, stdin_once) = (
            record.config.tty,
            record.config.stdin,
            record.config.stdin_once,
        );
        let runtime = runtime.clone();
        let ids = tokio::task::spawn_blocking(move || {
            monitor::spawn(&MonitorSpec {
                monitor: &monitor_path,
                runtime: &runtime,
                id: &id,
                bundle: &bundle,
                state_dir: &run_dir,
                log_path: &log_file,
                tty,
                stdin,
                stdin_once,
                memory_cgroup,
            })
        })
        .await
        .map_err(super::internal)?
        .map_err(|e| Status::unknown(format!("failed to create the container: {e:#}")))?;
        record.process = ids;
        record.state = ContainerState::Created;
        self.store.put_container(record).map_err(internal_chain)?;
        Ok(())
    }

    /// Releases what a container holds on the node (runtime state, monitor,
    /// rootfs mount, dirs) but not its record. Idempotent. Everything is
    /// tried; a runtime that could not delete the container is reported, so
    /// that RemoveContainer keeps the record and can be retried.
    pub async fn release_container_resources(
        &self,
        record: &ContainerRecord,
    ) -> Result<(), String> {
        let mut runtime_result = Ok(());
        if let Some(runtime) = self.runtime(&record.runtime_handler) {
            if let Err(e) = runtime.delete(&record.id).await {
                tracing::warn!(container = %record.id, error = %e, "runtime delete failed");
                runtime_result = Err(e.to_string());
            }
        }
        if record.process.monitor_pid > 0 {
            monitor::signal_monitor(
                record.process.monitor_pid,
                &record.id,
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let rootfs = self.bundle_dir(&record.id).join("rootfs");
        let scratch = self.scratch_dir(&record.id);
        if let Err(e) = self.images.release_rootfs(&record.id, &rootfs, &scratch) {
            tracing::warn!(container = %record.id, error = %e, "releasing the rootfs failed");
        }
        crate::sandbox_files::unmount_all(&rootfs);
        for dir in [self.container_run_dir(&record.id), scratch] {
            if let Err(e) = crate::sandbox_files::remove_tree(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "removing a container dir failed");
                }
            }
        }
        runtime_result
    }

    /// Watches the container's monitor and records the exit when it ends.
    pub fn watch_exit(self: Arc<Self>, id: String, monitor_pid: i32) {
        tokio::spawn(async move {
            monitor::wait_exit(monitor_pid).await;
            self.apply_exit(&id).await;
        });
    }

    /// Records the container's exit from the monitor's exit record. Idempotent.
    /// Takes the container's lock so that an exit racing with StartContainer
    /// is recorded (and announced) after the start.
    pub async fn apply_exit(&self, id: &str) {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        if self.store.container(id).ok().flatten().is_none() {
            self.forget_lock(id);
            return;
        }
        let state_dir = self.container_run_dir(id);
        let exit = monitor::read_exit(&state_dir);
        if exit.is_none() {
            self.kill_unsupervised(id).await;
        }
        let updated = self.store.update_container(id, |r| {
            if !matches!(r.state, ContainerState::Created | ContainerState::Running) {
                return;
            }
            r.state = ContainerState::Exited;
            match &exit {
                Some(exit) => {
                    r.exit_code = exit.exit_code;
                    r.finished_at = exit.finished_at_ns;
                    r.reason = if exit.oom_killed {
                        "OOMKilled".into()
                    } else if exit.exit_code == 0 {
                        "Completed".into()
                    } else {
                        "Error".into()
                    };
                }
                None => {
                    r.exit_code = 255;
                    r.finished_at = now_ns();
                    r.reason = "Error".into();
                    r.message = "the container's monitor ended without an exit record".into();
                }
            }
        });
        match updated {
            Ok(Some(record)) if record.state == ContainerState::Exited => {
                tracing::info!(container = %id, exit_code = record.exit_code, reason = %record.reason, "container exited");
                self.emit_container(cri::ContainerEventType::ContainerStoppedEvent, &record);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(container = %id, error = %format!("{e:#}"), "recording an exit failed")
            }
        }
    }

    /// The monitor is gone without an exit record (it was killed): the
    /// container must not run on unsupervised while it is reported exited.
    async fn kill_unsupervised(&self, id: &str) {
        let Ok(Some(record)) = self.store.container(id) else {
            return;
        };
        let pid = record.process.pid;
        let in_container = pid > 0
            && std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|cg| cg.contains(id));
        if !in_container {
            return;
        }
        tracing::warn!(container = %id, pid, "the monitor died; killing the unsupervised container");
        if let Some(runtime) = self.runtime(&record.runtime_handler) {
            if let Err(e) = runtime.kill(id, "SIGKILL", true).await {
                tracing::warn!(container = %id, error = %e, "killing an unsupervised container");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    pub async fn start_container(&self, id: &str) -> RpcResult<()> {
        let record = self.container_or_not_found(id)?;
        let id = record.id.clone();
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let record = self.container_or_not_found(&id)?;
        if record.state != ContainerState::Created {
            return Err(Status::failed_precondition(format!(
                "container {id} is in {:?} state: only a created container can be started",
                record.state
            )));
        }
        let sandbox = self.find_sandbox(&record.sandbox_id)?;
        if sandbox.as_ref().map(|s| s.state) != Some(SandboxState::Ready) {
            return Err(Status::failed_precondition(format!(
                "sandbox {} of container {id} is not ready",
                record.sandbox_id
            )));
        }
        let runtime = self.runtime(&record.runtime_handler).ok_or_else(|| {
            Status::failed_precondition(format!(
                "runtime handler {:?} is gone",
                record.runtime_handler
            ))
        })?;
        // Written ahead: a daemon killed after the runtime started the
        // container but before the record says so finds, at its restart,
        // when it was started (see recovery).
        let started_at = now_ns();
        self.store
            .update_container(&id, |r| r.started_at = started_at)
            .map_err(internal_chain)?;
        if let Err(e) = runtime.start(&id).await {
            let message = e.to_string();
            // containerd: a failed start leaves the container EXITED with StartError.
            let _ = self.store.update_container(&id, |r| {
                r.state = ContainerState::Exited;
                r.started_at = 0;
                r.exit_code = START_ERROR_EXIT_CODE;
                r.finished_at = now_ns();
                r.reason = "StartError".into();
                r.message = message.clone();
            });
            let _ = runtime.kill(&id, "KILL", false).await;
            return Err(Status::unknown(format!(
                "failed to start container {id}: {message}"
            )));
        }
        let updated = self
            .store
            .update_container(&id, |r| {
                r.started_at = started_at;
                if r.state == ContainerState::Created {
                    r.state = ContainerState::Running;
                }
            })
            .map_err(internal_chain)?;
        if let Some(record) = updated {
            tracing::info!(container = %id, "container started");
            self.emit_container(cri::ContainerEventType::ContainerStartedEvent, &record);
        }
        Ok(())
    }

    /// Whether the container's processes may live outside its init's PID namespace.
    fn shares_pid_namespace(record: &ContainerRecord) -> bool {
        let pid = record
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(|n| n.pid)
            .unwrap_or(NamespaceMode::Container as i32);
        pid != NamespaceMode::Container as i32
    }

    async fn wait_monitor(&self, record: &ContainerRecord, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, monitor::wait_exit(record.process.monitor_pid))
            .await
            .is_ok()
    }

    pub async fn stop_container(&self, id: &str, timeout: i64) -> RpcResult<()> {
        require_id("container_id", id)?;
        // Unknown IDs are fine: Stop is idempotent (newer containerd, critest).
        let Some(record) = self.find_container(id)? else {
            return Ok(());
        };
        let id = record.id.clone();
        if !matches!(
            record.state,
            ContainerState::Created | ContainerState::Running
        ) {
            return Ok(());
        }
        if !monitor::is_monitor_alive(record.process.monitor_pid, &id) {
            self.apply_exit(&id).await;
            return Ok(());
        }
        let runtime = self.runtime(&record.runtime_handler).ok_or_else(|| {
            Status::failed_precondition(format!(
                "runtime handler {:?} is gone",
                record.runtime_handler
            ))
        })?;
        if timeout > 0 && record.state == ContainerState::Running {
            let signal = if record.stop_signal.is_empty() {
                "SIGTERM".to_string()
            } else {
                record.stop_signal.clone()
            };
            match runtime.kill(&id, &signal, false).await {
                Ok(()) => {
                    if self
                        .wait_monitor(&record, Duration::from_secs(timeout as u64))
                        .await
                    {
                        self.apply_exit(&id).await;
                        return Ok(());
                    }
                }
                Err(e) => tracing::debug!(container = %id, error = %e, "stop signal not delivered"),
            }
        }
        if let Err(e) = runtime
            .kill(&id, "SIGKILL", Self::shares_pid_namespace(&record))
            .await
        {
            tracing::debug!(container = %id, error = %e, "SIGKILL not delivered");
        }
        if !self.wait_monitor(&record, KILL_GRACE).await {
            return Err(Status::deadline_exceeded(format!(
                "container {id} did not exit {KILL_GRACE:?} after SIGKILL"
            )));
        }
        self.apply_exit(&id).await;
        tracing::info!(container = %id, "container stopped");
        Ok(())
    }

    pub async fn remove_container(&self, id: &str) -> RpcResult<()> {
        require_id("container_id", id)?;
        // Unknown IDs are fine: Remove is idempotent.
        let Some(record) = self.find_container(id)? else {
            return Ok(());
        };
        let id = record.id.clone();
        if matches!(
            record.state,
            ContainerState::Created | ContainerState::Running
        ) {
            self.stop_container(&id, 0).await?;
        }
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let Some(record) = self.find_container(&id)? else {
            return Ok(());
        };
        // As containerd: a container the runtime still holds stays listed,
        // and kubelet's next RemoveContainer tries again.
        self.release_container_resources(&record)
            .await
            .map_err(|e| Status::unknown(format!("failed to remove container {id}: {e}")))?;
        self.store.delete_container(&id).map_err(internal_chain)?;
        self.forget_lock(&id);
        self.cpu_samples.lock().unwrap().remove(&id);
        tracing::info!(container = %id, "container removed");
        self.emit_container(cri::ContainerEventType::ContainerDeletedEvent, &record);
        Ok(())
    }

    pub fn container_status_proto(&self, r: &ContainerRecord) -> cri::ContainerStatus {
        let state = match r.state {
            ContainerState::Creating => cri::ContainerState::ContainerUnknown,
            ContainerState::Created => cri::ContainerState::ContainerCreated,
            ContainerState::Running => cri::ContainerState::ContainerRunning,
            ContainerState::Exited => cri::ContainerState::ContainerExited,
        };
        // As containerd: the image's first tag names it, its first repo
        // digest is the (legacy) image_ref; image_id is always the config digest.
        let mut image_spec = r.config.image.clone().unwrap_or_default();
        image_spec.image = r.image_name.clone();
        let mut image_ref = r.image_id.clone();
        if let Some(image) = self.images.resolve(&r.image_id) {
            if let Some(tag) = image.repo_tags.first() {
                image_spec.image = tag.clone();
            }
            if let Some(digest) = image.repo_digests.first() {
                image_ref = digest.clone();
            }
        }
        cri::ContainerStatus {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            state: state as i32,
            created_at: r.created_at,
            // Set ahead of the runtime's start (see start_container): a
            // created container has not started.
            started_at: if r.state == ContainerState::Created {
                0
            } else {
                r.started_at
            },
            finished_at: r.finished_at,
            exit_code: r.exit_code,
            image: Some(image_spec),
            image_ref,
            reason: r.reason.clone(),
            message: r.message.clone(),
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
            mounts: r.config.mounts.clone(),
            log_path: r.log_path.clone(),
            resources: Some(cri::ContainerResources {
                linux: r.resources.clone(),
                windows: None,
            }),
            image_id: r.image_id.clone(),
            user: Some(cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: r.uid,
                    gid: r.gid,
                    supplemental_groups: r.supplemental_groups.clone(),
                }),
            }),
        }
    }

    pub fn container_status_response(
        &self,
        id: &str,
        verbose: bool,
    ) -> RpcResult<cri::ContainerStatusResponse> {
        let record = self.container_or_not_found(id)?;
        let mut info = HashMap::new();
        if verbose {
            let spec: serde_json::Value =
                std::fs::read(self.bundle_dir(&record.id).join("config.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
            let value = serde_json::json!({
                "sandboxID": record.sandbox_id,
                "pid": record.process.pid,
                "monitorPid": record.process.monitor_pid,
                "runtimeHandler": record.runtime_handler,
                "cgroupsPath": record.cgroups_path,
                "runtimeSpec": spec,
            });
            info.insert("info".to_string(), value.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(self.container_status_proto(&record)),
            info,
        })
    }

    pub fn list_containers(&self, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
        let filter = filter.unwrap_or_default();
        self.store
            .containers()
            .into_iter()
            .filter(|r| r.state != ContainerState::Creating)
            .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
            .filter(|r| {
                filter.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&filter.pod_sandbox_id)
            })
            .map(|r| (r.sandbox_id.clone(), self.container_status_proto(&r)))
            .filter(|(_, s)| filter.state.as_ref().is_none_or(|f| f.state == s.state))
            .filter(|(_, s)| labels_match(&filter.label_selector, &s.labels))
            .map(|(pod_sandbox_id, s)| cri::Container {
                pod_sandbox_id,
                id: s.id,
                metadata: s.metadata,
                image: s.image,
                image_ref: s.image_ref,
                state: s.state,
                created_at: s.created_at,
                labels: s.labels,
                annotations: s.annotations,
                image_id: s.image_id,
            })
            .collect()
    }

    pub async fn update_container_resources(
        &self,
        req: cri::UpdateContainerResourcesRequest,
    ) -> RpcResult<()> {
        let record = self.container_or_not_found(&req.container_id)?;
        let Some(resources) = req.linux else {
            return Err(Status::invalid_argument("linux resources are required"));
        };
        if !matches!(
            record.state,
            ContainerState::Created | ContainerState::Running
        ) {
            return Err(Status::failed_precondition(format!(
                "container {} is not running: cannot update its resources",
                record.id
            )));
        }
        let runtime = self.runtime(&record.runtime_handler).ok_or_else(|| {
            Status::failed_precondition(format!(
                "runtime handler {:?} is gone",
                record.runtime_handler
            ))
        })?;
        let oci = rcrun_cri_spec::linux_resources(&resources, self.cgroup_v2);
        let json = serde_json::to_vec(&oci).map_err(super::internal)?;
        runtime
            .update(&record.id, &json)
            .await
            .map_err(|e| Status::unknown(format!("failed to update resources: {e}")))?;
        self.store
            .update_container(&record.id, |r| r.resources = Some(resources))
            .map_err(internal_chain)?;
        Ok(())
    }

    /// Asks the monitor to reopen the log and waits until the file is there
    /// again: kubelet (and critest) read the new file right after the call.
    pub async fn reopen_container_log(&self, id: &str) -> RpcResult<()> {
        let record = self.container_or_not_found(id)?;
        if record.state != ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        if !monitor::is_monitor_alive(record.process.monitor_pid, &record.id) {
            return Err(Status::failed_precondition(format!(
                "the monitor of container {} is gone",
                record.id
            )));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(record.process.monitor_pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .map_err(|e| Status::internal(format!("signalling the monitor: {e}")))?;
        if record.log_path.is_empty() {
            return Ok(());
        }
        let log = PathBuf::from(&record.log_path);
        let deadline = std::time::Instant::now() + REOPEN_WAIT;
        while !log.exists() {
            if std::time::Instant::now() > deadline {
                return Err(Status::deadline_exceeded(format!(
                    "the monitor of container {} did not reopen {} within {REOPEN_WAIT:?}",
                    record.id, record.log_path
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}
