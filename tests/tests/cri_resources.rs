//! Resources and what the daemon reports about them: OOMKilled, stats,
//! UpdateContainerResources, ReopenContainerLog, and the runtime's status.
use std::time::Duration;

use rcrun_proto::cri;
use rcrun_tests::daemon::{
    container_config, log_dir, pod_config, ContainerConfigExt, Daemon, DaemonOptions,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_killed_is_reported() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("oom", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    // Doubling a shell string until the 16 MiB limit is hit.
    let hog = container_config(
        "hog",
        &image,
        &["sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done"],
    )
    .with_resources(cri::LinuxContainerResources {
        memory_limit_in_bytes: 16 * 1024 * 1024,
        memory_swap_limit_in_bytes: 16 * 1024 * 1024,
        ..Default::default()
    });
    let id = d.run_container(&pod_id, &pod, &hog).await.unwrap();
    let st = d
        .wait_state(&id, cri::ContainerState::ContainerExited, WAIT)
        .await
        .unwrap();
    assert_eq!(
        (st.reason.as_str(), st.exit_code),
        ("OOMKilled", 137),
        "{st:?}"
    );
    assert_eq!(
        st.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        16 * 1024 * 1024
    );

    // A plain SIGKILL is no OOM.
    let id = d
        .run_sleeper(&pod_id, &pod, "killed", &image)
        .await
        .unwrap();
    d.stop_container(&id, 0).await.unwrap();
    let st = d.status(&id).await.unwrap();
    assert_eq!((st.reason.as_str(), st.exit_code), ("Error", 137), "{st:?}");
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_update_and_log_reopen() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("stats", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    // Writes 3 MiB into its writable layer, then burns a little CPU and waits.
    let c = container_config(
        "busy",
        &image,
        &["sh", "-c", "dd if=/dev/zero of=/big bs=1024 count=3072 2>/dev/null; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo ready; exec sleep 1000"],
    );
    let id = d.run_container(&pod_id, &pod, &c).await.unwrap();
    let log = logs.path().join("busy/0.log");
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "container never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = d
        .runtime
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(stats.attributes.as_ref().unwrap().id, id);
    let cpu = stats.cpu.unwrap();
    assert!(
        cpu.usage_core_nano_seconds.unwrap().value > 1_000_000,
        "{cpu:?}"
    );
    let mem = stats.memory.unwrap();
    assert!(mem.working_set_bytes.unwrap().value > 0, "{mem:?}");
    let fs = stats.writable_layer.unwrap();
    assert!(fs.used_bytes.unwrap().value >= 3 * 1024 * 1024, "{fs:?}");
    assert!(fs.inodes_used.unwrap().value >= 1);

    // A second sample gives a rate.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let list = d
        .runtime
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(list.len(), 1);
    assert!(list[0].cpu.as_ref().unwrap().usage_nano_cores.is_some());

    let pod_stats = d
        .runtime
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = pod_stats.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.memory.unwrap().working_set_bytes.unwrap().value > 0);
    let all = d
        .runtime
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);

    // UpdateContainerResources reaches the cgroup and the status.
    let update = cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 * 1024 * 1024,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        ..Default::default()
    };
    d.runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(update.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let st = d.status(&id).await.unwrap();
    assert_eq!(
        st.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        64 * 1024 * 1024
    );
    let r = d
        .exec_sync(
            &id,
            &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
            5,
        )
        .await
        .unwrap();
    let v2 = d
        .exec_sync(&id, &["cat", "/sys/fs/cgroup/memory.max"], 5)
        .await
        .unwrap();
    let limit = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&v2.stdout)
    );
    assert_eq!(limit.trim(), (64 * 1024 * 1024).to_string(), "{r:?} {v2:?}");

    // ReopenContainerLog: after a rotation, new output goes to a new file.
    let rotated = logs.path().join("busy/0.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    d.runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    // The new file is there when the call returns (kubelet reads it next).
    assert!(log.exists(), "the log was not reopened");
    // Not running: FailedPrecondition.
    d.stop_container(&id, 0).await.unwrap();
    let err = d
        .runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = d
        .runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(update),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_status_and_runtime_config() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let v = d.version().await.unwrap();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("rcrun-cri", "v1")
    );
    let s = d
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conditions = s.status.unwrap().conditions;
    let get = |t: &str| conditions.iter().find(|c| c.r#type == t).cloned().unwrap();
    assert!(get("RuntimeReady").status);
    // CNI is off in this daemon: pods get loopback only, and the network is ready.
    assert!(get("NetworkReady").status);
    assert!(s.info.contains_key("config"));
    // kubelet only sends SupplementalGroupsPolicy Strict to runtimes that say so.
    assert!(
        s.features
            .as_ref()
            .is_some_and(|f| f.supplemental_groups_policy),
        "{:?}",
        s.features
    );
    let names: Vec<&str> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    assert!(
        names.contains(&"test") && names.contains(&"runc") && names.contains(&""),
        "{names:?}"
    );
    let rc = d
        .runtime
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
    d.runtime
        .update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: "10.88.0.0/16".into(),
                }),
            }),
        })
        .await
        .unwrap();
    // Kept across restarts.
    assert_eq!(
        std::fs::read_to_string(d.state_dir.join("pod-cidr")).unwrap(),
        "10.88.0.0/16"
    );
    let err = d
        .runtime
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("not supported"));

    // With CNI on but no network config: NetworkReady false with a reason,
    // and a non-hostNetwork pod is refused like containerd does.
    let empty = tempfile::tempdir().unwrap();
    let mut cni = Daemon::start(DaemonOptions {
        cni_conf_dir: Some(empty.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let net = cni.condition("NetworkReady").await.unwrap();
    assert!(
        !net.status && !net.reason.is_empty() && !net.message.is_empty(),
        "{net:?}"
    );
    let logs = log_dir();
    let err = cni
        .run_pod(&pod_config("nocni", logs.path()))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("network plugin is not ready"),
        "{err:#}"
    );

    // --print-config shows the effective config.
    let out = d.command().arg("--print-config").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("default_runtime = \"test\"")
            && text.contains(&d.socket.to_string_lossy().to_string()),
        "{text}"
    );
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: i64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_stay_small() {
    let mut d = Daemon::start(DaemonOptions {
        log_level: "info".into(),
        ..Default::default()
    })
    .await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let mut rss = Vec::new();
    for i in 0..10 {
        let pod = pod_config(&format!("rss{i}"), logs.path());
        let pod_id = d.run_pod(&pod).await.unwrap();
        let c = container_config(
            "c",
            &image,
            &["sh", "-c", "while true; do echo tick; sleep 0.05; done"],
        );
        let id = d.run_container(&pod_id, &pod, &c).await.unwrap();
        let info = d.container_info(&id).await.unwrap();
        rss.push(info["monitorPid"].as_i64().unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sizes: Vec<u64> = rss.iter().map(|pid| rss_kib(*pid)).collect();
    let mean = sizes.iter().sum::<u64>() / sizes.len() as u64;
    println!("monitor RSS (KiB) with 10 logging containers: {sizes:?}, mean {mean}");
    // The goal is 1 MiB; this bound catches regressions (a leak, a big dependency).
    assert!(mean < 2048, "monitor RSS {sizes:?} KiB");
    d.remove_all_pods().await.unwrap();
}
