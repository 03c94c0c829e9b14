//! Version, Status, RuntimeConfig and UpdateRuntimeConfig.
use std::collections::HashMap;

use rcrun_proto::cri;

use crate::daemon::Daemon;

/// The CRI API version we speak.
const CRI_API_VERSION: &str = "v1";
/// Where the pod CIDR from UpdateRuntimeConfig is kept, in the state dir.
const POD_CIDR_FILE: &str = "pod-cidr";
/// kubelet's legacy "version" field.
const KUBE_RUNTIME_API_VERSION: &str = "0.1.0";

/// Runtimes that join a pod's user namespace by path with its mappings in
/// the spec, and set up a rootfs inside it (devices bind-mounted, sysfs of
/// a network namespace the user namespace owns): rcrun, runc and crun.
fn joins_user_namespaces(runtime: &std::path::Path) -> bool {
    runtime
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| matches!(n, "rcrun" | "runc" | "crun"))
}

/// Whether the kernel can create user namespaces here (built with them,
/// and not limited to none by `user.max_user_namespaces`).
fn kernel_has_user_namespaces() -> bool {
    std::path::Path::new("/proc/self/ns/user").exists()
        && std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|max| max > 0)
}

impl Daemon {
    pub fn version(&self) -> cri::VersionResponse {
        cri::VersionResponse {
            version: KUBE_RUNTIME_API_VERSION.into(),
            runtime_name: "rcrun-cri".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }
    }

    /// Network readiness: CNI's status, or ready when CNI is switched off
    /// (pods then get a netns with only `lo`).
    pub fn network_condition(&self) -> cri::RuntimeCondition {
        let mut cond = cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            ..Default::default()
        };
        if self.config.cni.enabled {
            if let Err(message) = self.cni.status() {
                cond.status = false;
                cond.reason = "NetworkPluginNotReady".into();
                cond.message = format!("Network plugin returns error: {message}");
            }
        }
        cond
    }

    pub fn status(&self, verbose: bool) -> cri::StatusResponse {
        let runtime = cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            ..Default::default()
        };
        let mut info = HashMap::new();
        if verbose {
            let config = serde_json::json!({
                "defaultRuntime": self.config.default_runtime,
                "runtimes": self.config.runtimes,
                "cni": self.config.cni,
                "cgroupV2": self.cgroup_v2,
                // Where containers' writable layers live (containerd's
                // field name: critest checks idmap support of its parent's
                // filesystem before it runs user-namespaced pods).
                "stateDir": self.config.state_dir,
                "streamingAddress": self.streaming.get().map(|s| s.local_addr().to_string()),
            });
            info.insert("config".to_string(), config.to_string());
        }
        let userns_kernel = kernel_has_user_namespaces();
        let runtime_handlers = self
            .config
            .runtimes
            .iter()
            .flat_map(|(name, handler)| {
                // Recursive read-only mounts need the runtime's `rro` option:
                // rcrun has it; an old runc (1.1) does not, so only claim it for rcrun.
                let rro = handler.path.file_name().is_some_and(|n| n == "rcrun");
                let features = Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: rro,
                    user_namespaces: userns_kernel && joins_user_namespaces(&handler.path),
                });
                let mut out = vec![cri::RuntimeHandler {
                    name: name.clone(),
                    features,
                }];
                // kubelet asks for the default handler by the empty name.
                if *name == self.config.default_runtime {
                    out.push(cri::RuntimeHandler {
                        name: String::new(),
                        features,
                    });
                }
                out
            })
            .collect();
        cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime, self.network_condition()],
            }),
            info,
            runtime_handlers,
            // The spec generator honours Merge and Strict (rcrun-cri-spec's
            // user module), and ContainerStatus reports the groups it chose.
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }
    }

    pub fn runtime_config(&self) -> cri::RuntimeConfigResponse {
        cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }
    }

    pub fn update_runtime_config(&self, req: cri::UpdateRuntimeConfigRequest) {
        let cidr = req
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            self.cni.set_pod_cidr(&cidr);
            // Kept across restarts: kubelet only sends it when it changes.
            let path = self.config.state_dir.join(POD_CIDR_FILE);
            if let Err(e) = crate::store::write_atomic(&path, cidr.as_bytes()) {
                tracing::warn!(path = %path.display(), error = %e, "persisting the pod CIDR");
            }
        }
    }

    /// Hands the pod CIDR of a previous run to CNI.
    pub fn restore_pod_cidr(&self) {
        if let Ok(cidr) = std::fs::read_to_string(self.config.state_dir.join(POD_CIDR_FILE)) {
            if !cidr.trim().is_empty() {
                self.cni.set_pod_cidr(cidr.trim());
            }
        }
    }
}
