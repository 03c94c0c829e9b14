//! Pod-level features: shared PID namespace with the infra process, an
//! ephemeral container in the target's PID namespace, host namespaces,
//! hostname/DNS files, sysctls and the per-pod /dev/shm.
use std::time::Duration;

use rcrun_proto::cri;
use rcrun_proto::cri::NamespaceMode;
use rcrun_tests::daemon::{
    container_config, log_dir, pod_config, sleeper, ContainerConfigExt, Daemon, DaemonOptions,
    PodConfigExt,
};

const WAIT: Duration = Duration::from_secs(20);

/// Namespace options with only the PID namespace shared by the pod.
fn pod_pid_namespace() -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// Namespace options that put the PID namespace in `target`'s.
fn target_pid_namespace(target: String) -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: NamespaceMode::Target as i32,
        target_id: target,
        ..Default::default()
    }
}

fn out(r: &cri::ExecSyncResponse) -> String {
    String::from_utf8_lossy(&r.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_container_sees_the_target_processes() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("ephemeral", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let target = d
        .run_container(
            &pod_id,
            &pod,
            &container_config("target", &image, &["sh", "-c", "exec sleep 4242"]),
        )
        .await
        .unwrap();
    d.wait_running(&target).await.unwrap();
    let debug = sleeper("debugger", &image).with_namespaces(target_pid_namespace(target.clone()));
    let debugger = d.run_container(&pod_id, &pod, &debug).await.unwrap();
    let ps = d
        .exec_sync(&debugger, &["ps", "-o", "pid,args"], 5)
        .await
        .unwrap();
    assert!(out(&ps).contains("sleep 4242"), "{}", out(&ps));
    // And the target does not see into a pod-shared namespace it is not in.
    let mut other = sleeper("other", &image);
    other.metadata.as_mut().unwrap().attempt = 1;
    let other = d.run_container(&pod_id, &pod, &other).await.unwrap();
    let ps = d.exec_sync(&other, &["ps", "-o", "args"], 5).await.unwrap();
    assert!(!out(&ps).contains("sleep 4242"), "{}", out(&ps));

    // TARGET without a running target is refused.
    let bad = container_config("bad-debugger", &image, &["true"])
        .with_namespaces(target_pid_namespace("00".repeat(32)));
    let err = d.create(&pod_id, &pod, &bad).await.unwrap_err();
    assert!(err.to_string().contains("target container"), "{err:#}");
    d.remove_all_pods().await.unwrap();
}

/// A container's root must not lift its own limits: the cgroup files are
/// read-only for an unprivileged container, on cgroup v1 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_cannot_write_its_cgroup() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("cgroup-ro", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let id = d
        .run_sleeper(&pod_id, &pod, "sleeper", &image)
        .await
        .unwrap();
    d.wait_running(&id).await.unwrap();
    // v1: the pids hierarchy's limit; v2: the (only) hierarchy's.
    let script = "for f in /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max; do \
                    [ -f $f ] || continue; echo found; echo 1000000 > $f && echo wrote; \
                  done";
    let r = d.exec_sync(&id, &["sh", "-c", script], 5).await.unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(out(&r), "found\n", "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_shared_pid_namespace_has_an_infra_process() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("sharedpid", logs.path()).with_namespaces(pod_pid_namespace());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let a = container_config("a", &image, &["sleep", "3131"]).with_namespaces(pod_pid_namespace());
    let b = sleeper("b", &image).with_namespaces(pod_pid_namespace());
    let a = d.run_container(&pod_id, &pod, &a).await.unwrap();
    let b = d.run_container(&pod_id, &pod, &b).await.unwrap();
    d.wait_running(&a).await.unwrap();
    let ps = d.exec_sync(&b, &["ps", "-o", "pid,args"], 5).await.unwrap();
    let text = out(&ps);
    assert!(text.contains("sleep 3131"), "{text}");
    // PID 1 is the infra process, not a container.
    let first = text.lines().nth(1).unwrap_or_default();
    assert!(
        first.trim_start().starts_with("1 ") && first.contains("pause"),
        "{text}"
    );
    // Stopping one container leaves the others and the infra alone.
    d.stop_container(&a, 0).await.unwrap();
    let ps = d.exec_sync(&b, &["ps", "-o", "args"], 5).await.unwrap();
    assert!(!out(&ps).contains("sleep 3131"), "{}", out(&ps));
    let info = d.pod_info(&pod_id).await.unwrap();
    let infra_pid = info["pid"].as_i64().unwrap();
    assert!(infra_pid > 0, "{info}");
    assert!(std::path::Path::new(&format!("/proc/{infra_pid}")).exists());
    d.stop_pod(&pod_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !std::path::Path::new(&format!("/proc/{infra_pid}/ns")).exists(),
        "infra {infra_pid} survived Stop"
    );

    // When the infra process dies, the pod is NotReady (kubelet then recreates it).
    let pod2 = pod_config("sharedpid2", logs.path()).with_namespaces(pod_pid_namespace());
    let pod2_id = d.run_pod(&pod2).await.unwrap();
    let infra_pid = d.pod_info(&pod2_id).await.unwrap()["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(infra_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let state = d.pod_status(&pod2_id).await.unwrap().state;
        if state == cri::PodSandboxState::SandboxNotready as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pod stayed Ready without its infra process"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_dns_sysctls_shm_and_host_namespaces() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let mut pod = pod_config("files", logs.path());
    pod.hostname = "my-pod-host".into();
    pod.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["ns.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let linux = pod.linux.as_mut().unwrap();
    linux
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "77".into());
    linux.sysctls.insert("kernel.shmmni".into(), "1234".into());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let c = d.run_sleeper(&pod_id, &pod, "c", &image).await.unwrap();
    let r = d
        .exec_sync(&c, &["cat", "/etc/resolv.conf", "/etc/hostname"], 5)
        .await
        .unwrap();
    let text = out(&r);
    assert!(text.contains("nameserver 10.96.0.10"), "{text}");
    assert!(text.contains("search ns.svc.cluster.local"), "{text}");
    assert!(text.contains("options ndots:5"), "{text}");
    assert!(text.contains("my-pod-host"), "{text}");
    let r = d.exec_sync(&c, &["hostname"], 5).await.unwrap();
    assert_eq!(out(&r).trim(), "my-pod-host");
    let r = d
        .exec_sync(
            &c,
            &[
                "cat",
                "/proc/sys/net/ipv4/ip_unprivileged_port_start",
                "/proc/sys/kernel/shmmni",
            ],
            5,
        )
        .await
        .unwrap();
    assert_eq!(out(&r), "77\n1234\n");
    // A private 64 MiB tmpfs on /dev/shm, shared by the pod.
    let r = d
        .exec_sync(
            &c,
            &[
                "sh",
                "-c",
                "grep ' /dev/shm ' /proc/mounts; df -k /dev/shm | tail -1",
            ],
            5,
        )
        .await
        .unwrap();
    let text = out(&r);
    assert!(text.contains("tmpfs") && text.contains("65536"), "{text}");
    // Only loopback in the pod's network namespace (no CNI configured), and it is up.
    let r = d
        .exec_sync(
            &c,
            &[
                "sh",
                "-c",
                "ls /sys/class/net; cat /sys/class/net/lo/operstate",
            ],
            5,
        )
        .await
        .unwrap();
    assert!(out(&r).starts_with("lo\n"), "{}", out(&r));
    let host_netns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let r = d
        .exec_sync(&c, &["readlink", "/proc/self/ns/net"], 5)
        .await
        .unwrap();
    assert_ne!(out(&r).trim(), host_netns.to_string_lossy());

    // A hostNetwork + hostIPC + hostPID pod sees the node's namespaces.
    let host = pod_config("hostns", logs.path()).with_namespaces(cri::NamespaceOption {
        network: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Node as i32,
        pid: NamespaceMode::Node as i32,
        ..Default::default()
    });
    let host_id = d.run_pod(&host).await.unwrap();
    let h = d.run_sleeper(&host_id, &host, "h", &image).await.unwrap();
    let r = d
        .exec_sync(
            &h,
            &[
                "sh",
                "-c",
                "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc",
            ],
            5,
        )
        .await
        .unwrap();
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    assert_eq!(
        out(&r),
        format!(
            "{}\n{}\n",
            host_netns.to_string_lossy(),
            host_ipc.to_string_lossy()
        )
    );
    // hostPID: the node's PID 1 is visible.
    let r = d.exec_sync(&h, &["cat", "/proc/1/comm"], 5).await.unwrap();
    assert_eq!(out(&r), std::fs::read_to_string("/proc/1/comm").unwrap());
    let r = d.exec_sync(&h, &["hostname"], 5).await.unwrap();
    assert_eq!(
        out(&r).trim(),
        nix::unistd::gethostname().unwrap().to_string_lossy()
    );
    let status = d.pod_status(&host_id).await.unwrap();
    let ns = status.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(
        (ns.network, ns.ipc),
        (NamespaceMode::Node as i32, NamespaceMode::Node as i32)
    );
    assert_eq!(status.metadata, host.metadata);
    assert_eq!(status.labels, host.labels);
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_profiles_apply_to_the_container_and_to_exec() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("seccomp", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let profile_dir = tempfile::tempdir().unwrap();
    let profile = profile_dir.path().join("block-hostname.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let c = container_config(
        "blocked",
        &image,
        &["sh", "-c", "hostname from-init 2>/dev/null && echo init-could || echo init-blocked; exec sleep 1000"],
    )
    .with_added_capabilities(&["SYS_ADMIN"])
    .with_seccomp_profile(&profile.to_string_lossy());
    let id = d.run_container(&pod_id, &pod, &c).await.unwrap();
    let log = logs.path().join("blocked/0.log");
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("init-")
    {
        assert!(std::time::Instant::now() < deadline, "no output");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("init-blocked"));
    let r = d
        .exec_sync(&id, &["hostname", "from-exec"], 5)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "sethostname was allowed in exec: {r:?}");
    d.remove_all_pods().await.unwrap();
}
