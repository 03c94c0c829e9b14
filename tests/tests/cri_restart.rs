//! Restart safety: the daemon killed with -9 (or stopped with SIGTERM) while
//! containers run, exit and are being created comes back with everything:
//! running containers still run, exits carry their true code and time,
//! half-created things are gone, nothing leaks.
use std::time::{Duration, Instant};

use rcrun_proto::cri;
use rcrun_tests::daemon::{
    container_config, log_dir, pod_config, sleeper, Daemon, DaemonOptions, PodConfigExt,
};

const WAIT: Duration = Duration::from_secs(20);

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Dir names under `dir`.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// When a handler's runtime command takes its 2 extra seconds.
enum Slow {
    /// Before the command runs.
    Before(&'static str),
    /// After the command has done its work, before it returns.
    After(&'static str),
}

/// A daemon with a runtime handler `slow`: the real runtime, with one command
/// taking 2 s more (the daemon can be killed in the middle of it). The
/// script lives as long as the returned dir.
async fn daemon_with_slow_handler(slow: Slow) -> (Daemon, tempfile::TempDir) {
    let scripts = tempfile::tempdir().unwrap();
    let path = scripts.path().join("slow-runtime");
    let real = rcrun_tests::daemon::default_runtime().display().to_string();
    let step = match slow {
        Slow::Before(command) => format!("[ \"$a\" = {command} ] && sleep 2"),
        Slow::After(command) => {
            format!("[ \"$a\" = {command} ] && {{ {real} \"$@\"; rc=$?; sleep 2; exit $rc; }}")
        }
    };
    std::fs::write(
        &path,
        format!("#!/bin/sh\nfor a in \"$@\"; do {step}; done\nexec {real} \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(DaemonOptions {
        extra_toml: format!("[runtimes.slow]\npath = {:?}\n", path.to_string_lossy()),
        ..Default::default()
    })
    .await;
    (d, scripts)
}

/// Runs a pod on the `slow` handler of [`daemon_with_slow_handler`].
async fn run_slow_pod(d: &mut Daemon, pod: &cri::PodSandboxConfig) -> String {
    d.runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: "slow".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_and_sigterm_keep_containers_and_record_true_exits() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("restart", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let running = d
        .run_sleeper(&pod_id, &pod, "running", &image)
        .await
        .unwrap();
    let exiting = d
        .run_container(
            &pod_id,
            &pod,
            &container_config("exiting", &image, &["sh", "-c", "sleep 2; exit 5"]),
        )
        .await
        .unwrap();
    let created = d
        .create(
            &pod_id,
            &pod,
            &container_config("created", &image, &["sh", "-c", "exit 0"]),
        )
        .await
        .unwrap();
    d.wait_running(&running).await.unwrap();
    let pid_before = d
        .exec_sync(&running, &["cat", "/proc/1/stat"], 5)
        .await
        .unwrap()
        .stdout;

    // An exec session in flight when the daemon dies does not outlive it.
    let mut rt = d.runtime.clone();
    let id = running.clone();
    let session = tokio::spawn(async move {
        rt.exec_sync(cri::ExecSyncRequest {
            container_id: id,
            cmd: vec!["sleep".into(), "777".into()],
            timeout: 0,
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.kill9();
    let killed_at = now_ns();
    let _ = session.await;
    // `exiting` ends while no daemon is there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.restart().await;

    let st = d.status(&running).await.unwrap();
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    let ps = d
        .exec_sync(&running, &["ps", "-o", "args"], 5)
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("sleep 777"),
        "{ps:?}"
    );
    assert_eq!(
        d.exec_sync(&running, &["cat", "/proc/1/stat"], 5)
            .await
            .unwrap()
            .stdout,
        pid_before
    );
    let st = d
        .wait_state(&exiting, cri::ContainerState::ContainerExited, WAIT)
        .await
        .unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (5, "Error"), "{st:?}");
    assert!(
        st.finished_at > killed_at && st.finished_at < now_ns(),
        "{st:?} killed at {killed_at}"
    );
    assert!(st.finished_at - st.started_at >= 1_900_000_000, "{st:?}");
    let st = d.status(&created).await.unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
    d.start_container(&created).await.unwrap();
    let st = d
        .wait_state(&created, cri::ContainerState::ContainerExited, WAIT)
        .await
        .unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));

    // A second instance on the same state dir refuses to start.
    let out = d.command().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") && err.contains("lock"),
        "{err}"
    );

    // SIGTERM: graceful; the container keeps running; a new daemon sees it.
    let status = d.sigterm().unwrap();
    assert!(status.success(), "{status:?}\n{}", d.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.restart().await;
    let st = d.status(&running).await.unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    // Exits after the restart are still seen. `sleep` as PID 1 ignores
    // SIGTERM, so the stop escalates to SIGKILL after the timeout.
    let started = Instant::now();
    d.stop_container(&running, 1).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    let st = d.status(&running).await.unwrap();
    assert_eq!(st.exit_code, 137, "{st:?}");
    let pods = d.list_pods().await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_creation_leaves_nothing_half_done() {
    let mut d = Daemon::start(DaemonOptions {
        log_level: "info".into(),
        ..Default::default()
    })
    .await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    for (round, delay_ms) in [5u64, 20, 40, 80, 150].into_iter().enumerate() {
        let pod = pod_config(&format!("half{round}"), logs.path());
        let pod_id = d.run_pod(&pod).await.unwrap();
        // Kill while a container and another pod are being created.
        let mut rt = d.runtime.clone();
        let (p, img) = (pod.clone(), image.clone());
        let pid = pod_id.clone();
        let create = tokio::spawn(async move {
            rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pid,
                config: Some(sleeper("c", &img)),
                sandbox_config: Some(p),
            })
            .await
        });
        let mut rt = d.runtime.clone();
        let other = pod_config(&format!("halfpod{round}"), logs.path());
        let run = tokio::spawn(async move {
            rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(other),
                runtime_handler: String::new(),
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        d.kill9();
        let _ = create.await;
        let _ = run.await;
        d.restart().await;

        // Whatever is listed is whole; whatever is not left no trace.
        let containers = d.list_containers().await.unwrap();
        let pods = d.list_pods().await.unwrap();
        let mut ids: Vec<String> = containers.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        // Run dirs are named by the first 16 characters of the ID.
        let short = |ids: &[String]| ids.iter().map(|i| i[..16].to_string()).collect::<Vec<_>>();
        assert_eq!(names(&d.run_dir.join("ctr")), short(&ids), "round {round}");
        assert_eq!(names(&d.state_dir.join("ctr")), ids, "round {round}");
        let mut pod_ids: Vec<String> = pods.iter().map(|p| p.id.clone()).collect();
        pod_ids.sort();
        assert_eq!(
            names(&d.run_dir.join("pod")),
            short(&pod_ids),
            "round {round}"
        );
        for c in &containers {
            let st = d.status(&c.id).await.unwrap();
            assert_eq!(
                st.state,
                cri::ContainerState::ContainerCreated as i32,
                "{st:?}"
            );
            d.start_container(&c.id).await.unwrap();
            let r = d.exec_sync(&c.id, &["true"], 5).await.unwrap();
            assert_eq!(r.exit_code, 0);
        }
        for p in &pods {
            assert_eq!(p.state, cri::PodSandboxState::SandboxReady as i32);
        }
        // Every mount under the daemon's dirs belongs to a listed object.
        for m in d.mounts_under_dirs() {
            assert!(
                ids.iter()
                    .chain(pod_ids.iter())
                    .any(|id| m.contains(&id[..16])),
                "mount {m} belongs to nothing listed (round {round})"
            );
        }
        d.remove_all_pods().await.unwrap();
        assert!(
            d.mounts_under_dirs().is_empty(),
            "{:?}",
            d.mounts_under_dirs()
        );
    }
    let started = Instant::now();
    d.version().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_monitor_takes_its_container_down_and_reports_it() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("monitorkill", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let id = d.run_sleeper(&pod_id, &pod, "c", &image).await.unwrap();
    let info = d.container_info(&id).await.unwrap();
    let (pid, monitor) = (
        info["pid"].as_i64().unwrap() as i32,
        info["monitorPid"].as_i64().unwrap() as i32,
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = d
        .wait_state(&id, cri::ContainerState::ContainerExited, WAIT)
        .await
        .unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (255, "Error"), "{st:?}");
    assert!(st.message.contains("monitor"), "{st:?}");
    // No unsupervised process is left running.
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|cg| cg.contains(&id)) {
        assert!(
            Instant::now() < deadline,
            "container process {pid} survived its monitor"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_the_runtime_creates_leaves_no_container() {
    // A handler whose `create` takes 2 s: the daemon dies in the middle of it.
    let (mut d, _scripts) = daemon_with_slow_handler(Slow::Before("create")).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("slowcreate", logs.path());
    let pod_id = run_slow_pod(&mut d, &pod).await;
    let mut rt = d.runtime.clone();
    let (p, img, pid) = (pod.clone(), image.clone(), pod_id.clone());
    let create = tokio::spawn(async move {
        rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pid,
            config: Some(container_config("c", &img, &["sleep", "4141"])),
            sandbox_config: Some(p),
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    d.kill9();
    assert!(create.await.unwrap().is_err());
    d.restart().await;
    // Give an interrupted `create` every chance to finish behind our back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let containers = d.list_containers().await.unwrap();
    assert!(containers.is_empty(), "{containers:?}");
    assert!(names(&d.run_dir.join("ctr")).is_empty());
    assert!(names(&d.state_dir.join("ctr")).is_empty());
    assert!(
        names(&d.run_dir.join("runtime/slow")).is_empty(),
        "{:?}",
        names(&d.run_dir.join("runtime/slow"))
    );
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("sleep 4141"),
        "the container runs on"
    );
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_the_runtime_started_a_container_reports_it_running() {
    // A handler whose `start` returns 2 s after the container started: the
    // daemon dies before it could record the start.
    let (mut d, _scripts) = daemon_with_slow_handler(Slow::After("start")).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("slowstart", logs.path());
    let pod_id = run_slow_pod(&mut d, &pod).await;
    let id = d
        .create(
            &pod_id,
            &pod,
            &container_config("c", &image, &["sleep", "4242"]),
        )
        .await
        .unwrap();
    let before = now_ns();
    let mut rt = d.runtime.clone();
    let cid = id.clone();
    let start = tokio::spawn(async move {
        rt.start_container(cri::StartContainerRequest { container_id: cid })
            .await
    });
    // Once the runtime has started it (the handler still holds the reply
    // back for 2 s), the daemon dies.
    let root = d.run_dir.join("runtime/slow");
    let deadline = Instant::now() + WAIT;
    loop {
        let state = std::process::Command::new(rcrun_tests::daemon::default_runtime())
            .arg("--root")
            .arg(&root)
            .args(["state", &id])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&state.stdout).contains("\"running\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the runtime never started it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill9();
    assert!(start.await.unwrap().is_err());
    d.restart().await;
    let status = d.status(&id).await.unwrap();
    assert_eq!(
        status.state,
        cri::ContainerState::ContainerRunning as i32,
        "{status:?}"
    );
    assert!(
        status.started_at >= before && status.started_at <= now_ns(),
        "{status:?}"
    );
    d.stop_container(&id, 0).await.unwrap();
    let status = d.status(&id).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert!(status.started_at >= before, "{status:?}");
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_the_pod_infra_is_made_leaves_no_process() {
    // A handler whose `create` takes 2 s: the daemon dies while RunPodSandbox
    // waits for the infra process, before it could record the pids.
    let (mut d, _scripts) = daemon_with_slow_handler(Slow::Before("create")).await;
    let logs = log_dir();
    // A shared PID namespace: the pod gets an infra process.
    let pod = pod_config("slowinfra", logs.path()).with_namespaces(cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    });
    let mut rt = d.runtime.clone();
    let run = tokio::spawn(async move {
        rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod),
            runtime_handler: "slow".into(),
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    d.kill9();
    assert!(run.await.unwrap().is_err());
    d.restart().await;
    // Give an interrupted `create` every chance to finish behind our back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = d.list_pods().await.unwrap();
    assert!(pods.is_empty(), "{pods:?}");
    assert!(
        names(&d.run_dir.join("runtime/slow")).is_empty(),
        "{:?}",
        names(&d.run_dir.join("runtime/slow"))
    );
    // No monitor or infra of this daemon's is left: they all name its run dir.
    let run_dir = d.run_dir.to_string_lossy().into_owned();
    let own = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() || pid == own || Some(pid.parse().unwrap()) == d.pid() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&run_dir),
            "left running: {pid} {:?}",
            String::from_utf8_lossy(&cmdline)
        );
    }
}
