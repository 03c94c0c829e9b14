//! Pods in their own user namespace (kubelet's `hostUsers: false`): the
//! mappings a container sees, its writable rootfs, the pinned user
//! namespace shared by the pod's containers, NODE mode, the refusals of
//! RunPodSandbox and the release of the pinned namespace.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcrun_proto::cri;
use rcrun_proto::cri::NamespaceMode;
use rcrun_tests::daemon::{
    container_config, log_dir, pod_config, pong_server, sleeper, CniNode, ContainerConfigExt,
    Daemon, DaemonOptions, PodConfigExt,
};

/// The host ID the pods' root maps to, and the mapping's length (critest's).
const HOST_ROOT: u32 = 1000;
const LENGTH: u32 = 100000;

fn mapping(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id,
        host_id,
        length,
    }
}

fn userns(mode: NamespaceMode, uids: Vec<cri::IdMapping>) -> cri::UserNamespace {
    cri::UserNamespace {
        mode: mode as i32,
        gids: uids.clone(),
        uids,
    }
}

/// Namespace options of a `hostUsers: false` pod: its own user namespace
/// (0 → 1000, 100000 IDs) and, as in critest, the pod's PID namespace
/// shared (so the infra process runs in the user namespace too).
fn pod_userns_options() -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        userns_options: Some(userns(
            NamespaceMode::Pod,
            vec![mapping(0, HOST_ROOT, LENGTH)],
        )),
        ..Default::default()
    }
}

fn out(r: &cri::ExecSyncResponse) -> String {
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// Runs `sh -c script` in `id`; fails the test with stderr unless it exits 0.
async fn sh(d: &mut Daemon, id: &str, script: &str) -> String {
    let r = d.exec_sync(id, &["sh", "-c", script], 10).await.unwrap();
    assert_eq!(
        r.exit_code,
        0,
        "{script}: {}{}",
        out(&r),
        String::from_utf8_lossy(&r.stderr)
    );
    out(&r)
}

/// `uid_map` text with its column padding squeezed: `0 1000 100000\n`.
fn squeeze(map: &str) -> String {
    map.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .map(|l| l + "\n")
        .collect()
}

/// Whether `path` is a mount point (a pinned namespace is an nsfs bind mount).
fn is_mounted(path: &Path) -> bool {
    let wanted = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*wanted))
}

/// The pinned user namespace the verbose PodSandboxStatus reports.
async fn pinned_userns(d: &mut Daemon, pod_id: &str) -> Option<PathBuf> {
    let info = d.pod_info(pod_id).await.unwrap();
    info["userns"].as_str().map(PathBuf::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_user_namespace_maps_root_and_owns_the_writable_layer() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let mut pod = pod_config("userns", logs.path()).with_namespaces(pod_userns_options());
    // Set by the pinning helper as root of the new user namespace, in the
    // network and IPC namespaces it owns.
    pod.linux.as_mut().unwrap().sysctls = [
        ("net.ipv4.ip_unprivileged_port_start", "0"),
        ("kernel.shmmni", "2048"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let pod_id = d.run_pod(&pod).await.unwrap();
    let status = d.pod_status(&pod_id).await.unwrap();
    let reported = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .and_then(|o| o.userns_options)
        .expect("the pod's user namespace options are reported");
    assert_eq!(reported.mode, NamespaceMode::Pod as i32);
    assert_eq!(reported.uids, vec![mapping(0, HOST_ROOT, LENGTH)]);

    // Root of the pod's user namespace, with the capabilities to
    // administer the pod's namespaces (they give no power over the host's).
    let a = d
        .run_container(
            &pod_id,
            &pod,
            &sleeper("a", &image)
                .with_namespaces(pod_userns_options())
                .with_added_capabilities(&["NET_ADMIN", "SYS_ADMIN"]),
        )
        .await
        .unwrap();
    // A container that leaves its namespace options out follows its pod.
    let b = d
        .run_container(&pod_id, &pod, &sleeper("b", &image))
        .await
        .unwrap();
    d.wait_running(&a).await.unwrap();
    d.wait_running(&b).await.unwrap();

    for map in ["uid_map", "gid_map"] {
        let text = sh(&mut d, &a, &format!("cat /proc/self/{map}")).await;
        assert_eq!(squeeze(&text), format!("0 {HOST_ROOT} {LENGTH}\n"), "{map}");
    }
    // Both containers (and the infra process) are in one user namespace,
    // which is not the host's.
    let ns_a = sh(&mut d, &a, "readlink /proc/self/ns/user").await;
    let ns_b = sh(&mut d, &b, "readlink /proc/self/ns/user").await;
    assert_eq!(ns_a, ns_b);
    let host_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
    assert_ne!(ns_a.trim(), host_ns.to_string_lossy());
    let infra = d.pod_info(&pod_id).await.unwrap()["pid"].as_i64().unwrap();
    let infra_ns = std::fs::read_link(format!("/proc/{infra}/ns/user")).unwrap();
    assert_eq!(ns_a.trim(), infra_ns.to_string_lossy());
    assert_eq!(
        sh(
            &mut d,
            &a,
            "hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni"
        )
        .await,
        "userns\n0\n2048\n"
    );
    // The network namespace is the pod's, owned by its user namespace: root
    // in the container administers it.
    let net_a = sh(&mut d, &a, "readlink /proc/self/ns/net").await;
    let net_b = sh(&mut d, &b, "readlink /proc/self/ns/net").await;
    assert_eq!(net_a, net_b);
    sh(
        &mut d,
        &a,
        "ip link set lo mtu 1500 && hostname userns-renamed",
    )
    .await;
    assert_eq!(sh(&mut d, &b, "hostname").await.trim(), "userns-renamed");

    // The image's files belong to the container's root (idmapped layers),
    // and root writes its rootfs: a new file, a file in a directory of the
    // image, a copied-up file.
    let owners = sh(&mut d, &a, "stat -c %u:%g / /etc /etc/passwd /bin/sh").await;
    assert!(owners.lines().all(|l| l == "0:0"), "{owners}");
    sh(
        &mut d,
        &a,
        "touch /tmp/x && echo hi > /etc/new-file && echo 'extra:x:4242:4242::/:/bin/sh' >> /etc/passwd",
    )
    .await;
    assert_eq!(sh(&mut d, &a, "stat -c %u:%g /tmp/x").await.trim(), "0:0");
    let upper = d.state_dir.join("ctr").join(&a).join("upper");
    for file in ["tmp/x", "etc/new-file", "etc/passwd"] {
        let meta = std::fs::metadata(upper.join(file)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (HOST_ROOT, HOST_ROOT),
            "{file} on the host"
        );
    }
    // The image's layers on the host stay root's.
    let owners_in_b = sh(
        &mut d,
        &b,
        "stat -c %u /etc/passwd; ls /etc/new-file || true",
    )
    .await;
    assert!(owners_in_b.starts_with("0\n"), "{owners_in_b}");
    assert!(!owners_in_b.contains("/etc/new-file\n"), "{owners_in_b}");

    // The pod's shared files and /dev/shm belong to the pod's root.
    sh(
        &mut d,
        &a,
        "echo '10.0.0.1 extra' >> /etc/hosts && echo '# x' >> /etc/resolv.conf && touch /dev/shm/x",
    )
    .await;
    assert_eq!(sh(&mut d, &b, "stat -c %u /dev/shm/x").await.trim(), "0");
    assert!(sh(&mut d, &b, "cat /etc/hosts").await.contains("extra"));

    // Host root, outside the mapping, is the overflow ID in here.
    assert_eq!(
        sh(&mut d, &a, "stat -c %u /sys/kernel").await.trim(),
        "65534"
    );
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_prints_its_mapping_and_exits() {
    // critest's check: `cat /proc/self/uid_map` as the whole container,
    // in a pod whose PID namespace is not shared.
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let options = cri::NamespaceOption {
        pid: NamespaceMode::Container as i32,
        ..pod_userns_options()
    };
    let pod = pod_config("usernscat", logs.path()).with_namespaces(options.clone());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let id = d
        .run_container(
            &pod_id,
            &pod,
            &container_config("cat", &image, &["cat", "/proc/self/uid_map"])
                .with_namespaces(options),
        )
        .await
        .unwrap();
    let status = d
        .wait_state(
            &id,
            cri::ContainerState::ContainerExited,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(status.exit_code, 0, "{status:?}");
    let log = std::fs::read_to_string(logs.path().join("cat/0.log")).unwrap();
    let line = log.lines().next().unwrap_or_default();
    let message = line.splitn(4, ' ').nth(3).unwrap_or_default();
    assert_eq!(
        squeeze(message),
        format!("0 {HOST_ROOT} {LENGTH}\n"),
        "{log}"
    );
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_user_namespace_is_the_hosts() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let options = cri::NamespaceOption {
        pid: NamespaceMode::Container as i32,
        userns_options: Some(userns(NamespaceMode::Node, vec![])),
        ..Default::default()
    };
    let pod = pod_config("usernsnode", logs.path()).with_namespaces(options.clone());
    let pod_id = d.run_pod(&pod).await.unwrap();
    assert_eq!(pinned_userns(&mut d, &pod_id).await, None);
    let id = d
        .run_container(
            &pod_id,
            &pod,
            &sleeper("n", &image).with_namespaces(options),
        )
        .await
        .unwrap();
    d.wait_running(&id).await.unwrap();
    let inside = sh(&mut d, &id, "cat /proc/self/uid_map").await;
    let host = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    assert_eq!(squeeze(&inside), squeeze(&host));
    let ns = sh(&mut d, &id, "readlink /proc/self/ns/user").await;
    assert_eq!(
        ns.trim(),
        std::fs::read_link("/proc/self/ns/user")
            .unwrap()
            .to_string_lossy()
    );
    // A container may not ask for a user namespace its pod does not have.
    let bad = sleeper("bad", &image).with_namespaces(pod_userns_options());
    let err = d.create(&pod_id, &pod, &bad).await.unwrap_err();
    assert!(err.to_string().contains("userns_options"), "{err:#}");
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_user_namespace_options_leave_nothing_behind() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let logs = log_dir();
    let field = "config.linux.security_context.namespace_options.userns_options";
    let pod_ns = |u: cri::UserNamespace| cri::NamespaceOption {
        pid: NamespaceMode::Container as i32,
        userns_options: Some(u),
        ..Default::default()
    };
    let cases: Vec<(&str, cri::NamespaceOption, &str)> = vec![
        (
            "two mappings",
            pod_ns(userns(
                NamespaceMode::Pod,
                vec![mapping(0, 1000, 100000), mapping(0, 2000, 100000)],
            )),
            "exactly one mapping",
        ),
        (
            "container ID 0 unmapped",
            pod_ns(userns(NamespaceMode::Pod, vec![mapping(1, 1000, 100000)])),
            "container ID 0 must be mapped",
        ),
        (
            "CONTAINER",
            pod_ns(userns(NamespaceMode::Container, vec![])),
            "CONTAINER is not supported",
        ),
        (
            "TARGET",
            pod_ns(userns(NamespaceMode::Target, vec![])),
            "TARGET is not supported",
        ),
        (
            "no mappings",
            pod_ns(userns(NamespaceMode::Pod, vec![])),
            "got 0",
        ),
        (
            "zero length",
            pod_ns(userns(NamespaceMode::Pod, vec![mapping(0, 1000, 0)])),
            "must not be 0",
        ),
        (
            "overflow",
            pod_ns(userns(
                NamespaceMode::Pod,
                vec![mapping(0, u32::MAX - 100, 1000)],
            )),
            "run past the last valid ID",
        ),
        (
            "NODE with mappings",
            pod_ns(userns(NamespaceMode::Node, vec![mapping(0, 1000, 10)])),
            "takes no mappings",
        ),
        (
            "host network",
            cri::NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..pod_userns_options()
            },
            "host's network namespace",
        ),
    ];
    for (what, options, reason) in cases {
        let pod = pod_config("usernsbad", logs.path()).with_namespaces(options);
        let err = d
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(field), "{what}: {}", err.message());
        assert!(err.message().contains(reason), "{what}: {}", err.message());
        assert!(
            d.list_pods().await.unwrap().is_empty(),
            "{what}: a pod is listed"
        );
        let pod_dirs: Vec<_> = std::fs::read_dir(d.run_dir.join("pod"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(pod_dirs.is_empty(), "{what}: pod dirs left: {pod_dirs:?}");
        assert!(
            d.mounts_under_dirs().is_empty(),
            "{what}: mounts left (pinned namespaces): {:?}",
            d.mounts_under_dirs()
        );
    }
    // Nor a cgroup: a refused pod never gets one.
    let cgroups = std::fs::read_dir("/sys/fs/cgroup/memory/rcrun-test")
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains("usernsbad"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(cgroups, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_remove_release_the_pinned_user_namespace() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("usernsrm", logs.path()).with_namespaces(pod_userns_options());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let pinned = pinned_userns(&mut d, &pod_id)
        .await
        .expect("a pinned user namespace");
    assert!(is_mounted(&pinned), "{} is not pinned", pinned.display());
    // The pod's network namespace belongs to it (NS_GET_USERNS would say
    // so; its uid_map through a process in it is simpler: the infra's).
    let infra = d.pod_info(&pod_id).await.unwrap()["pid"].as_i64().unwrap();
    assert_eq!(
        squeeze(&std::fs::read_to_string(format!("/proc/{infra}/uid_map")).unwrap()),
        format!("0 {HOST_ROOT} {LENGTH}\n")
    );
    let id = d
        .run_container(&pod_id, &pod, &sleeper("s", &image))
        .await
        .unwrap();
    d.wait_running(&id).await.unwrap();
    d.stop_pod(&pod_id).await.unwrap();
    assert!(
        !is_mounted(&pinned),
        "Stop left {} pinned",
        pinned.display()
    );
    assert!(!pinned.exists());
    d.stop_pod(&pod_id).await.unwrap();
    d.remove_pod(&pod_id).await.unwrap();
    d.remove_pod(&pod_id).await.unwrap();
    assert!(
        d.mounts_under_dirs().is_empty(),
        "{:?}",
        d.mounts_under_dirs()
    );
    // The writable layer and its idmapped layer mounts are gone too.
    assert!(!d.state_dir.join("ctr").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_handlers_announce_user_namespaces() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let status = d
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let kernel = Path::new("/proc/self/ns/user").exists();
    for name in ["", "test", "rcrun", "runc"] {
        let handler = status
            .runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no handler {name:?}"));
        assert_eq!(
            handler.features.unwrap().user_namespaces,
            kernel,
            "handler {name:?}"
        );
    }
    let config: serde_json::Value =
        serde_json::from_str(&status.info["config"]).expect("config JSON");
    assert_eq!(
        config["stateDir"].as_str().map(PathBuf::from),
        Some(d.state_dir.clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespaced_pods_run_below_a_private_dir() {
    use std::os::unix::fs::PermissionsExt;
    // The root of the pod's user namespace is an ordinary user on the host:
    // the daemon lets it search (never list) the dirs down to the pod's.
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let logs = log_dir();
    let pod = pod_config("usernsprivate", logs.path()).with_namespaces(pod_userns_options());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let mode = std::fs::metadata(&d.dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o701, "search permission only");
    let id = d
        .run_container(&pod_id, &pod, &sleeper("p", &image))
        .await
        .unwrap();
    d.wait_running(&id).await.unwrap();
    assert_eq!(sh(&mut d, &id, "id -u").await.trim(), "0");
    d.remove_all_pods().await.unwrap();
}

/// Whether the tests' runtime makes idmapped mounts (its `features`).
fn runtime_idmaps_mounts() -> bool {
    let out = std::process::Command::new(rcrun_tests::daemon::default_runtime())
        .arg("features")
        .output()
        .unwrap();
    let features: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    features["linux"]["mountExtensions"]["idmap"]["enabled"].as_bool() == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_idmapped_when_the_runtime_can() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("file"), "host\n").unwrap();
    let pod = pod_config("usernsvol", logs.path()).with_namespaces(pod_userns_options());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let mut config = sleeper("v", &image);
    config.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: volume.path().to_string_lossy().into_owned(),
        ..Default::default()
    });
    let id = d.run_container(&pod_id, &pod, &config).await.unwrap();
    d.wait_running(&id).await.unwrap();
    let spec = d.container_info(&id).await.unwrap()["runtimeSpec"].clone();
    let data = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap()
        .clone();
    let idmapped = data["options"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "idmap");
    assert_eq!(idmapped, runtime_idmaps_mounts(), "{data}");
    if idmapped {
        // Host root's files are the container root's, and what it writes
        // is host root's on the volume.
        assert_eq!(
            sh(&mut d, &id, "stat -c %u:%g /data/file").await.trim(),
            "0:0"
        );
        sh(
            &mut d,
            &id,
            "echo container >> /data/file && touch /data/new",
        )
        .await;
        let meta = std::fs::metadata(volume.path().join("new")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
    } else {
        // A plain bind mount: host root is nobody in the pod.
        assert_eq!(
            sh(&mut d, &id, "stat -c %u /data/file").await.trim(),
            "65534"
        );
    }
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_runs_user_namespaced_pods_too() {
    // runc joins the pinned user namespace by path and checks the spec's
    // mappings against it.
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("usernsrunc", logs.path()).with_namespaces(pod_userns_options());
    let pod_id = d
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: "runc".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let id = d
        .run_container(&pod_id, &pod, &sleeper("r", &image))
        .await
        .unwrap();
    d.wait_running(&id).await.unwrap();
    let map = sh(&mut d, &id, "cat /proc/self/uid_map").await;
    assert_eq!(squeeze(&map), format!("0 {HOST_ROOT} {LENGTH}\n"));
    sh(&mut d, &id, "touch /etc/x").await;
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_keeps_or_releases_the_pinned_user_namespace() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let kept = pod_config("usernskept", logs.path()).with_namespaces(pod_userns_options());
    let kept_id = d.run_pod(&kept).await.unwrap();
    let ctr = d
        .run_container(&kept_id, &kept, &sleeper("k", &image))
        .await
        .unwrap();
    d.wait_running(&ctr).await.unwrap();
    let lost = pod_config("usernslost", logs.path()).with_namespaces(pod_userns_options());
    let lost_id = d.run_pod(&lost).await.unwrap();
    let kept_ns = pinned_userns(&mut d, &kept_id).await.unwrap();
    let lost_ns = pinned_userns(&mut d, &lost_id).await.unwrap();

    d.kill9();
    // While the daemon is down, one pod loses its pinned user namespace.
    nix::mount::umount2(&lost_ns, nix::mount::MntFlags::MNT_DETACH).unwrap();
    d.restart().await;

    let ready = cri::PodSandboxState::SandboxReady as i32;
    assert_eq!(d.pod_status(&kept_id).await.unwrap().state, ready);
    assert!(is_mounted(&kept_ns));
    let map = sh(&mut d, &ctr, "cat /proc/self/uid_map").await;
    assert_eq!(squeeze(&map), format!("0 {HOST_ROOT} {LENGTH}\n"));
    assert_ne!(
        d.pod_status(&lost_id).await.unwrap().state,
        ready,
        "a pod without its user namespace is not ready"
    );
    d.remove_all_pods().await.unwrap();
    assert!(!is_mounted(&kept_ns) && !kept_ns.exists());
    assert!(!lost_ns.exists());
    assert!(
        d.mounts_under_dirs().is_empty(),
        "{:?}",
        d.mounts_under_dirs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_attaches_a_user_namespaced_pod() {
    // CNI's plugins run as host root and enter the pod's network namespace,
    // which the pod's user namespace owns.
    let cni = CniNode::create();
    let mut d = Daemon::start(cni.daemon_options()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let server_pod = pod_config("usernssrv", logs.path()).with_namespaces(pod_userns_options());
    let server_id = d.run_pod(&server_pod).await.unwrap();
    let server_ip = d.pod_status(&server_id).await.unwrap().network.unwrap().ip;
    assert!(!server_ip.is_empty());
    let server = d
        .run_container(&server_id, &server_pod, &pong_server("srv", &image, 8080))
        .await
        .unwrap();
    d.wait_running(&server).await.unwrap();
    let client_pod = pod_config("usernscli", logs.path());
    let client_id = d.run_pod(&client_pod).await.unwrap();
    let client = d
        .run_container(&client_id, &client_pod, &sleeper("cli", &image))
        .await
        .unwrap();
    let answer = d.ask_pong_server(&client, &server_ip, 8080).await;
    assert!(
        answer.contains("pong"),
        "no answer from {server_ip}: {answer:?}"
    );
    d.remove_all_pods().await.unwrap();
    assert!(
        cni.net.allocated_ips().is_empty(),
        "{:?}",
        cni.net.allocated_ips()
    );
}
