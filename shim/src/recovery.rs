//! Start-up recovery: rebuild the daemon's view from its store, the monitors
//! still alive and their exit records; finish or clean up whatever a crash
//! interrupted; remove leftovers no record owns.
use std::collections::HashSet;
use std::sync::Arc;

use crate::daemon::{dir_name, Daemon};
use crate::monitor;
use crate::pinns;
use crate::store::{ContainerRecord, ContainerState, SandboxState};

pub async fn recover(daemon: &Arc<Daemon>) {
    for sandbox in daemon.store.sandboxes() {
        match sandbox.state {
            SandboxState::Creating => {
                tracing::info!(sandbox = %sandbox.id, "cleaning up a sandbox whose creation was interrupted");
                if let Err(e) = daemon
                    .release_sandbox_resources_checked(&sandbox, true)
                    .await
                {
                    // Its IP is not released yet: the record stays, NotReady,
                    // for kubelet's removal of stale sandboxes to retry.
                    tracing::warn!(sandbox = %sandbox.id, error = %e, "keeping a half-created sandbox whose network could not be torn down");
                    let _ = daemon.store.update_sandbox(&sandbox.id, |r| {
                        r.state = SandboxState::NotReady;
                        r.infra = None;
                    });
                    continue;
                }
                let _ = crate::sandbox_files::remove_tree(&daemon.pod_dir(&sandbox.id));
                if let Err(e) = daemon.store.delete_sandbox(&sandbox.id) {
                    tracing::error!(sandbox = %sandbox.id, error = %format!("{e:#}"), "deleting a half-created sandbox");
                }
            }
            SandboxState::Ready => {
                let ns_gone = daemon
                    .pinned_namespaces(&sandbox)
                    .iter()
                    .any(|ns| !pinns::is_pinned(ns));
                let infra_gone = sandbox
                    .infra
                    .as_ref()
                    .is_some_and(|i| !monitor::is_monitor_alive(i.monitor_pid, &sandbox.id));
                if ns_gone || infra_gone {
                    tracing::warn!(sandbox = %sandbox.id, ns_gone, infra_gone, "sandbox lost its namespaces; marking it NotReady");
                    let _ = daemon
                        .store
                        .update_sandbox(&sandbox.id, |r| r.state = SandboxState::NotReady);
                } else if let Some(infra) = &sandbox.infra {
                    daemon
                        .clone()
                        .watch_infra(sandbox.id.clone(), infra.monitor_pid);
                }
            }
            SandboxState::NotReady => {
                // A Stop interrupted half-way still owes its releases.
                if sandbox.network_attached || sandbox.shm_mounted || sandbox.infra.is_some() {
                    let released = daemon
                        .release_sandbox_resources_checked(&sandbox, true)
                        .await;
                    if let Err(e) = &released {
                        tracing::warn!(sandbox = %sandbox.id, error = %e, "the pod network is still attached; the next Stop tries again");
                    }
                    let _ = daemon.store.update_sandbox(&sandbox.id, |r| {
                        // A failed CNI DEL keeps its IP: the next Stop retries.
                        r.network_attached = released.is_err();
                        r.shm_mounted = r.shm_mounted && released.is_err();
                        r.infra = None;
                    });
                }
            }
        }
    }
    for container in daemon.store.containers() {
        match container.state {
            ContainerState::Creating => {
                tracing::info!(container = %container.id, "cleaning up a container whose creation was interrupted");
                if let Some(runtime) = daemon.runtime(&container.runtime_handler) {
                    let _ = runtime.kill(&container.id, "SIGKILL", true).await;
                }
                // The record holds no monitor pid yet: find it from its pid file.
                let pid = std::fs::read_to_string(
                    daemon.container_run_dir(&container.id).join("monitor.pid"),
                )
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .unwrap_or(0);
                // The runtime's `create` may still be at work in the monitor's
                // session: end all of it, not just the monitor.
                if monitor::is_monitor_alive(pid, &container.id) {
                    monitor::kill_session(pid);
                }
                // Best effort: the record goes, as it never described a
                // container kubelet knew.
                let _ = daemon.release_container_resources(&container).await;
                if let Err(e) = daemon.store.delete_container(&container.id) {
                    tracing::error!(container = %container.id, error = %format!("{e:#}"), "deleting a half-created container");
                }
            }
            ContainerState::Created | ContainerState::Running => {
                if container.state == ContainerState::Created && container.started_at != 0 {
                    settle_interrupted_start(daemon, &container).await;
                }
                if monitor::is_monitor_alive(container.process.monitor_pid, &container.id) {
                    daemon
                        .clone()
                        .watch_exit(container.id.clone(), container.process.monitor_pid);
                } else {
                    daemon.apply_exit(&container.id).await;
                }
            }
            ContainerState::Exited => {}
        }
    }
    for container in daemon.store.containers() {
        kill_leftover_execs(&daemon.container_run_dir(&container.id), &container.id);
    }
    remove_orphans(daemon).await;
}

/// A StartContainer the daemon did not finish: the record is Created with
/// the start time written ahead. The runtime tells whether the start
/// happened; a started container is recorded Running from that time (its
/// exit, if any, is then applied as usual), one never started stays Created.
async fn settle_interrupted_start(daemon: &Arc<Daemon>, container: &ContainerRecord) {
    let Some(runtime) = daemon.runtime(&container.runtime_handler) else {
        return;
    };
    let started = match runtime.status(&container.id).await {
        Ok(status) => status != "created",
        // Gone from the runtime: its monitor's exit record decides.
        Err(_) => return,
    };
    let result = daemon.store.update_container(&container.id, |r| {
        if started {
            r.state = ContainerState::Running;
        } else {
            r.started_at = 0;
        }
    });
    if let Err(e) = result {
        tracing::error!(container = %container.id, error = %format!("{e:#}"), "settling an interrupted start");
    }
}

/// Exec sessions do not survive the daemon: their runtime clients died with
/// it (PDEATHSIG), and what they started in the container is killed here,
/// found by the pid files they left (checked against the container's cgroup,
/// so a reused pid is never hit).
fn kill_leftover_execs(dir: &std::path::Path, id: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("exec-") && name.ends_with(".pid")) {
            continue;
        }
        let pid = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let in_container = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .map(|cg| cg.contains(id))
                .unwrap_or(false);
            if in_container {
                tracing::info!(container = %id, pid, "killing an exec session left by the previous daemon");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// Dirs under the run and state dirs that no record owns: a crash between
/// creating them and recording them (or between removing the record and them).
async fn remove_orphans(daemon: &Arc<Daemon>) {
    let known: HashSet<String> = daemon
        .store
        .containers()
        .into_iter()
        .map(|c| c.id)
        .chain(daemon.store.sandboxes().into_iter().map(|s| s.id))
        .collect();
    let owned = |short: &str| known.iter().any(|id| dir_name(id) == short);
    // Full IDs the runtimes and the writable layers still know.
    let mut candidates: Vec<String> = dir_names(&daemon.config.state_dir.join("ctr"));
    // A runtime root may be shared with other tools: only what has our run
    // dir is ours.
    let has_run_dir =
        |id: &str| daemon.container_run_dir(id).exists() || daemon.pod_dir(id).exists();
    for name in daemon.config.runtimes.keys() {
        if let Some(runtime) = daemon.runtime(name) {
            candidates.extend(
                dir_names(runtime.root())
                    .into_iter()
                    .filter(|id| has_run_dir(id)),
            );
        }
    }
    candidates.retain(|id| !known.contains(id));
    candidates.sort();
    candidates.dedup();
    for id in &candidates {
        tracing::info!(id = %id, "removing leftovers of an unknown container or pod");
        kill_in_runtimes(daemon, id).await;
        let rootfs = daemon.bundle_dir(id).join("rootfs");
        let scratch = daemon.scratch_dir(id);
        let _ = daemon.images.release_rootfs(id, &rootfs, &scratch);
        crate::sandbox_files::unmount_all(&rootfs);
        let _ = crate::sandbox_files::remove_tree(&scratch);
    }
    // Run dirs are named by ID prefix: whatever no record owns goes.
    let run_ctr = daemon.config.run_dir.join("ctr");
    for short in dir_names(&run_ctr) {
        if owned(&short) {
            continue;
        }
        let dir = run_ctr.join(&short);
        crate::sandbox_files::unmount_all(&dir.join("bundle/rootfs"));
        let _ = crate::sandbox_files::remove_tree(&dir);
    }
    let run_pod = daemon.config.run_dir.join("pod");
    for short in dir_names(&run_pod) {
        if owned(&short) {
            continue;
        }
        tracing::info!(sandbox = %short, "removing leftovers of an unknown sandbox");
        let dir = run_pod.join(&short);
        for ns in ["user", "net", "ipc", "uts"] {
            pinns::unpin(&dir.join("ns").join(ns));
        }
        crate::sandbox_files::unmount_all(&dir.join("shm"));
        let _ = crate::sandbox_files::remove_tree(&dir);
    }
}

/// Kills and deletes `id` in every runtime root that holds it.
async fn kill_in_runtimes(daemon: &Arc<Daemon>, id: &str) {
    for name in daemon.config.runtimes.keys() {
        if let Some(runtime) = daemon.runtime(name) {
            if runtime.root().join(id).exists() {
                let _ = runtime.kill(id, "SIGKILL", true).await;
                let _ = runtime.delete(id).await;
            }
        }
    }
}

fn dir_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
