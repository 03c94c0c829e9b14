//! Pods on a real CNI bridge network (Debian's plugins), with the daemon in
//! a private "node" network namespace: pod IPs, pod-to-pod traffic, host
//! network pods, release of IPs on stop, and after a daemon kill -9.
use rcrun_proto::cri;
use rcrun_proto::cri::NamespaceMode;
use rcrun_tests::cni::PLUGIN_DIR;
use rcrun_tests::daemon::{log_dir, pod_config, pong_server, CniNode, Daemon, DaemonOptions};

async fn pod_ip(d: &mut Daemon, pod_id: &str) -> String {
    d.pod_status(pod_id).await.unwrap().network.unwrap().ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_ips_talk_and_release_them() {
    if !std::path::Path::new(PLUGIN_DIR).join("bridge").exists() {
        panic!("{PLUGIN_DIR}/bridge is missing: apt-get install containernetworking-plugins");
    }
    let cni = CniNode::create();
    let mut d = Daemon::start(cni.daemon_options()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();

    let ready = d.condition("NetworkReady").await.unwrap();
    assert!(ready.status, "{ready:?}");

    let server_pod = pod_config("server", logs.path());
    let server_id = d.run_pod(&server_pod).await.unwrap();
    let client_pod = pod_config("client", logs.path());
    let client_id = d.run_pod(&client_pod).await.unwrap();
    let server_ip = pod_ip(&mut d, &server_id).await;
    let client_ip = pod_ip(&mut d, &client_id).await;
    assert!(
        server_ip.starts_with("10.237.") && client_ip.starts_with("10.237."),
        "{server_ip} {client_ip}"
    );
    assert_ne!(server_ip, client_ip);
    assert_eq!(cni.net.allocated_ips().len(), 2);

    let server = d
        .run_container(&server_id, &server_pod, &pong_server("srv", &image, 8080))
        .await
        .unwrap();
    let client = d
        .run_sleeper(&client_id, &client_pod, "cli", &image)
        .await
        .unwrap();
    d.wait_running(&server).await.unwrap();
    let answer = d.ask_pong_server(&client, &server_ip, 8080).await;
    assert!(
        answer.contains("pong"),
        "no answer from {server_ip}: {answer:?}"
    );
    let r = d.exec_sync(&client, &["ip", "addr"], 5).await;
    if let Ok(r) = r {
        // busybox may lack `ip`; when it has it, the pod's address is there.
        if r.exit_code == 0 {
            assert!(String::from_utf8_lossy(&r.stdout).contains(&client_ip));
        }
    }

    // A hostNetwork pod skips CNI.
    let mut host = pod_config("host", logs.path());
    host.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = NamespaceMode::Node as i32;
    let host_id = d.run_pod(&host).await.unwrap();
    assert_eq!(pod_ip(&mut d, &host_id).await, "");
    assert_eq!(cni.net.allocated_ips().len(), 2);

    // Stop releases the IP (DEL); a killed and restarted daemon still releases the others.
    d.stop_pod(&client_id).await.unwrap();
    assert_eq!(cni.net.allocated_ips().len(), 1);
    d.kill9();
    d.restart().await;
    let ready = d
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.status.unwrap().conditions.iter().all(|c| c.status));
    assert_eq!(pod_ip(&mut d, &server_id).await, server_ip);
    d.remove_all_pods().await.unwrap();
    assert!(
        cni.net.allocated_ips().is_empty(),
        "{:?}",
        cni.net.allocated_ips()
    );
    let links = cni
        .node
        .exec(&["ip", "-o", "link", "show", "type", "veth"])
        .unwrap();
    assert!(links.trim().is_empty(), "veths left: {links}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_teardown_keeps_the_network_for_a_retried_stop() {
    let cni = CniNode::create();
    let bins = tempfile::tempdir().unwrap();
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        std::os::unix::fs::symlink(
            std::path::Path::new(PLUGIN_DIR).join(plugin),
            bins.path().join(plugin),
        )
        .unwrap();
    }
    let mut d = Daemon::start(DaemonOptions {
        cni_bin_dirs: vec![bins.path().to_path_buf()],
        ..cni.daemon_options()
    })
    .await;
    let logs = log_dir();
    let pod = pod_config("teardown", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    assert_eq!(cni.net.allocated_ips().len(), 1);
    // The plugins vanish: DEL cannot run, Stop fails and keeps the netns.
    let hidden = bins.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::rename(bins.path().join("bridge"), hidden.join("bridge")).unwrap();
    let err = d.stop_pod(&pod_id).await.unwrap_err();
    assert!(err.message().contains("tear down"), "{err:?}");
    assert_eq!(cni.net.allocated_ips().len(), 1);
    let err = d.remove_pod(&pod_id).await.unwrap_err();
    assert!(err.message().contains("tear down"), "{err:?}");
    // A restart meanwhile, whose own DEL fails too, still owes the release.
    d.kill9();
    d.restart().await;
    assert_eq!(cni.net.allocated_ips().len(), 1);
    // Back again: the retried Stop releases the IP, Remove finishes.
    std::fs::rename(hidden.join("bridge"), bins.path().join("bridge")).unwrap();
    d.stop_pod(&pod_id).await.unwrap();
    assert!(
        cni.net.allocated_ips().is_empty(),
        "{:?}",
        cni.net.allocated_ips()
    );
    d.remove_pod(&pod_id).await.unwrap();
}
