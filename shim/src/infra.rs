//! A pod's infra process, for pods that share one PID namespace
//! (`shareProcessNamespace`): `rcrun-monitor pause` run as a container in an
//! empty rootfs, under its own monitor, with the sandbox's ID.
use std::path::PathBuf;
use std::sync::Arc;

use rcrun_proto::cri;
use std::time::Duration;

use tonic::Status;

use crate::daemon::Daemon;
use crate::monitor::{self, MonitorSpec};
use crate::server::RpcResult;
use crate::store::{ProcessIds, SandboxRecord, SandboxState};

impl Daemon {
    pub(crate) fn infra_dir(&self, sandbox_id: &str) -> PathBuf {
        self.pod_dir(sandbox_id).join("infra")
    }

    pub async fn start_infra(&self, record: &SandboxRecord) -> RpcResult<ProcessIds> {
        let runtime = self.runtime(&record.runtime_handler).ok_or_else(|| {
            Status::failed_precondition(format!(
                "runtime handler {:?} is gone",
                record.runtime_handler
            ))
        })?;
        let dir = self.infra_dir(&record.id);
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| Status::internal(format!("creating {}: {e}", rootfs.display())))?;
        // In the pod's user namespace the runtime creates the mount points
        // (/proc, /dev, /sys) as the pod's root: the empty rootfs is its.
        // Only the dir: the `/pause` link below shares its inode with the
        // daemon's monitor binary.
        if let Some(owner) = crate::server::sandbox::pod_namespaces(&record.config).user_root() {
            crate::sandbox_files::give_to_pod_root(&rootfs, owner)
                .map_err(crate::server::internal_chain)?;
        }
        let info = self.sandbox_info(record);
        let cgroups_path =
            rcrun_cri_spec::container_cgroups_path(&record.cgroup_parent, &record.id);
        // The infra binary is the monitor itself (`rcrun-monitor pause`, static).
        let pause = rootfs.join("pause");
        if std::fs::hard_link(self.config.monitor_path(), &pause).is_err() {
            std::fs::copy(self.config.monitor_path(), &pause)
                .map_err(|e| Status::internal(format!("installing the infra binary: {e}")))?;
        }
        let args = ["/pause".to_string(), "pause".to_string()];
        let input = rcrun_cri_spec::InfraSpecInput {
            sandbox: &info,
            sandbox_config: &record.config,
            rootfs: &rootfs,
            args: &args,
            cgroups_path: &cgroups_path,
            min_oom_score_adj: self.min_oom_score_adj,
            cgroup_v2: self.cgroup_v2,
        };
        let spec = rcrun_cri_spec::sandbox_infra_spec(&input)
            .map_err(|e| Status::internal(format!("generating the infra process spec: {e}")))?;
        let json = serde_json::to_vec_pretty(&spec).map_err(crate::server::internal)?;
        crate::store::write_volatile(&bundle.join("config.json"), &json)
            .map_err(|e| Status::internal(format!("writing the infra config.json: {e}")))?;
        let monitor_path = self.config.monitor_path().to_path_buf();
        let id = record.id.clone();
        let rt = runtime.clone();
        let ids = tokio::task::spawn_blocking(move || {
            monitor::spawn(&MonitorSpec {
                monitor: &monitor_path,
                runtime: &rt,
                id: &id,
                bundle: &bundle,
                state_dir: &dir,
                log_path: std::path::Path::new("/dev/null"),
                tty: false,
                stdin: false,
                stdin_once: false,
                memory_cgroup: None,
            })
        })
        .await
        .map_err(crate::server::internal)?
        .map_err(|e| Status::unknown(format!("creating the pod's infra process: {e:#}")))?;
        // Persist the pids before starting, so a failure below is cleaned up.
        let _ = self
            .store
            .update_sandbox(&record.id, |r| r.infra = Some(ids.clone()));
        runtime
            .start(&record.id)
            .await
            .map_err(|e| Status::unknown(format!("starting the pod's infra process: {e}")))?;
        Ok(ids)
    }

    /// Marks the pod NotReady if its infra process dies (its shared PID
    /// namespace is gone), as containerd does when a pause container exits.
    pub fn watch_infra(self: Arc<Self>, sandbox_id: String, monitor_pid: i32) {
        tokio::spawn(async move {
            monitor::wait_exit(monitor_pid).await;
            let lock = self.lock_for(&sandbox_id);
            let _guard = lock.lock().await;
            let Ok(Some(record)) = self.store.sandbox(&sandbox_id) else {
                return;
            };
            let same = record
                .infra
                .as_ref()
                .is_some_and(|i| i.monitor_pid == monitor_pid);
            if record.state != SandboxState::Ready || !same {
                return;
            }
            tracing::warn!(sandbox = %sandbox_id, "the pod's infra process ended; the pod is NotReady");
            if let Ok(Some(updated)) = self
                .store
                .update_sandbox(&sandbox_id, |r| r.state = SandboxState::NotReady)
            {
                self.emit_sandbox(cri::ContainerEventType::ContainerStoppedEvent, &updated);
            }
        });
    }

    /// Kills and deletes the infra process. Idempotent.
    pub async fn stop_infra(&self, record: &SandboxRecord) {
        let Some(runtime) = self.runtime(&record.runtime_handler) else {
            return;
        };
        if let Some(infra) = &record.infra {
            if monitor::is_monitor_alive(infra.monitor_pid, &record.id) {
                let _ = runtime.kill(&record.id, "SIGKILL", true).await;
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    monitor::wait_exit(infra.monitor_pid),
                )
                .await;
            }
        } else {
            // A daemon killed while the infra was being made never recorded
            // its pids: the monitor left its own in its state dir. The
            // runtime's `create` may still run in the monitor's session.
            let pid = std::fs::read_to_string(self.infra_dir(&record.id).join("monitor.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .unwrap_or(0);
            if monitor::is_monitor_alive(pid, &record.id) {
                monitor::kill_session(pid);
            }
            let _ = runtime.kill(&record.id, "SIGKILL", true).await;
        }
        if let Err(e) = runtime.delete(&record.id).await {
            tracing::warn!(sandbox = %record.id, error = %e, "deleting the infra process");
        }
        let _ = crate::sandbox_files::remove_tree(&self.infra_dir(&record.id));
    }
}
