//! Pods and containers end to end through a real rcrun-cri: several
//! containers per pod, init-container ordering, exit codes and reasons,
//! logs in the CRI format, ExecSync, stop signals and timeouts.
use std::time::{Duration, Instant};

use rcrun_proto::cri;
use rcrun_tests::daemon::{container_config, log_dir, pod_config, Daemon, DaemonOptions};

const WAIT: Duration = Duration::from_secs(20);
/// How long a request that may never have left the client gets to show
/// its work before it is sent again.
const RESEND: Duration = Duration::from_secs(3);

/// Lines of a CRI log file: (stream, tag, message), checking the timestamp.
fn parse_log(path: &std::path::Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().unwrap();
            assert!(
                chrono_like_rfc3339(ts),
                "bad timestamp {ts:?} in log line {line:?}"
            );
            let stream = parts.next().unwrap_or_default().to_string();
            let tag = parts.next().unwrap_or_default().to_string();
            let msg = parts.next().unwrap_or_default().to_string();
            (stream, tag, msg)
        })
        .collect()
}

fn chrono_like_rfc3339(ts: &str) -> bool {
    // 2026-11-23T11:08:01.123456789Z or with an offset.
    ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.as_bytes()[10] == b'T' && ts.contains(':')
}

async fn wait_log(path: &std::path::Path, needle: &str) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = parse_log(path);
        if lines.iter().any(|(_, _, m)| m.contains(needle)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in {}: {lines:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_with_two_containers_logs_exec_and_stop() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("two", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();

    let web = d
        .run_container(
            &pod_id,
            &pod,
            &container_config(
                "web",
                &image,
                &[
                    "sh",
                    "-c",
                    "echo hello-out; echo hello-err >&2; exec sleep 1000",
                ],
            ),
        )
        .await
        .unwrap();
    let side = d
        .run_container(
            &pod_id,
            &pod,
            &container_config(
                "side",
                &image,
                &[
                    "sh",
                    "-c",
                    "trap 'exit 42' TERM; while true; do sleep 0.1; done",
                ],
            ),
        )
        .await
        .unwrap();
    for id in [&web, &side] {
        let st = d.wait_running(id).await.unwrap();
        assert!(
            st.started_at > 0 && st.created_at > 0 && st.started_at >= st.created_at,
            "{st:?}"
        );
        assert_eq!(st.finished_at, 0);
    }

    // Logs in the CRI format under the pod's log directory.
    let log = logs.path().join("web/0.log");
    let lines = wait_log(&log, "hello-err").await;
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "hello-out".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "hello-err".into())),
        "{lines:?}"
    );

    // ExecSync: output, exit codes, the pod's hostname (UTS namespace).
    let r = d
        .exec_sync(&web, &["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
        .await
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );
    let r = d.exec_sync(&side, &["hostname"], 0).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), pod.hostname);

    // Both containers share the pod's network namespace but not PIDs.
    let a = d
        .exec_sync(&web, &["readlink", "/proc/1/ns/net"], 5)
        .await
        .unwrap();
    let b = d
        .exec_sync(&side, &["readlink", "/proc/1/ns/net"], 5)
        .await
        .unwrap();
    assert_eq!(a.stdout, b.stdout);
    let ps = d.exec_sync(&web, &["ps", "-o", "args"], 5).await.unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps.contains("sleep 1000") && !ps.contains("while true"),
        "{ps}"
    );

    // ExecSync output is capped at 16 MiB (kubelet's message limit).
    let r = d
        .exec_sync(
            &side,
            &["sh", "-c", "head -c 20000000 /dev/zero; echo done >&2"],
            30,
        )
        .await
        .unwrap();
    assert_eq!(r.stdout.len() + r.stderr.len(), 16 * 1024 * 1024);
    assert_eq!(r.exit_code, 0);

    // ExecSync timeout: DeadlineExceeded, and the daemon goes on.
    let started = Instant::now();
    // (In `web`, whose PID 1 is `sleep`: it never reaps orphans.)
    let err = d.exec_sync(&web, &["sleep", "31"], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The timed-out process is gone, not even a zombie (critest checks this).
    let ps = d
        .exec_sync(&web, &["ps", "-o", "stat,args"], 5)
        .await
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    // Only PID 1's `sleep 1000`: a zombie would show as `[sleep]`.
    assert_eq!(
        ps.lines().filter(|l| l.contains("sleep")).count(),
        1,
        "{ps}"
    );

    // Stop with a timeout: the stop signal (SIGTERM) reaches the container's trap.
    d.stop_container(&side, 10).await.unwrap();
    let st = d.status(&side).await.unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 42, "{st:?}");
    assert_eq!(st.reason, "Error");
    assert!(st.finished_at >= st.started_at);

    // Stop with timeout 0 kills: 137.
    d.stop_container(&web, 0).await.unwrap();
    let st = d.status(&web).await.unwrap();
    assert_eq!(st.exit_code, 137, "{st:?}");

    // Stop and remove are idempotent.
    d.stop_container(&web, 0).await.unwrap();
    d.remove_container(&web).await.unwrap();
    d.remove_container(&web).await.unwrap();
    let err = d.status(&web).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");

    d.stop_pod(&pod_id).await.unwrap();
    d.stop_pod(&pod_id).await.unwrap();
    assert_eq!(
        d.pod_status(&pod_id).await.unwrap().state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    d.remove_pod(&pod_id).await.unwrap();
    d.remove_pod(&pod_id).await.unwrap();
    assert!(
        d.mounts_under_dirs().is_empty(),
        "{:?}",
        d.mounts_under_dirs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_container_sequence_and_exit_reasons() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("init", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();

    // An init container writes into the pod's shared /dev/shm and exits 0.
    let init = d
        .run_container(
            &pod_id,
            &pod,
            &container_config(
                "init",
                &image,
                &["sh", "-c", "echo ready > /dev/shm/marker"],
            ),
        )
        .await
        .unwrap();
    let st = d
        .wait_state(&init, cri::ContainerState::ContainerExited, WAIT)
        .await
        .unwrap();
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}"
    );
    assert!(st.finished_at >= st.started_at && st.started_at > 0);

    // The next one starts only then, and sees what the first left.
    let main = d
        .run_container(
            &pod_id,
            &pod,
            &container_config("main", &image, &["sh", "-c", "cat /dev/shm/marker; exit 7"]),
        )
        .await
        .unwrap();
    let st = d
        .wait_state(&main, cri::ContainerState::ContainerExited, WAIT)
        .await
        .unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"), "{st:?}");
    let lines = wait_log(&logs.path().join("main/0.log"), "ready").await;
    assert_eq!(lines[0].2, "ready");

    // A command that does not exist: the start fails with a message.
    let bad = d
        .create(
            &pod_id,
            &pod,
            &container_config("bad", &image, &["/no/such/binary"]),
        )
        .await;
    match bad {
        Err(e) => assert!(
            e.to_string().contains("no/such/binary") || e.to_string().contains("no such file"),
            "{e:#}"
        ),
        Ok(id) => {
            let res = d.start_container(&id).await;
            let st = d
                .wait_state(&id, cri::ContainerState::ContainerExited, WAIT)
                .await
                .unwrap();
            assert!(res.is_err() || st.exit_code != 0, "{st:?}");
            assert_ne!(st.reason, "Completed");
        }
    }

    // ListContainers filters.
    let list = d
        .runtime
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerExited as i32,
                }),
                pod_sandbox_id: pod_id.clone(),
                label_selector: [("container".to_string(), "main".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, main);
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pod_sandbox_filters() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let logs = log_dir();
    let a = pod_config("list-a", logs.path());
    let b = pod_config("list-b", logs.path());
    let a_id = d.run_pod(&a).await.unwrap();
    let b_id = d.run_pod(&b).await.unwrap();
    d.stop_pod(&b_id).await.unwrap();
    let list = |filter: cri::PodSandboxFilter| {
        let mut rt = d.runtime.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_pod_sandbox(cri::ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
                .unwrap()
                .into_inner()
                .items
                .into_iter()
                .map(|p| p.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let ready = cri::PodSandboxStateValue {
        state: cri::PodSandboxState::SandboxReady as i32,
    };
    assert_eq!(
        list(cri::PodSandboxFilter {
            state: Some(ready),
            ..Default::default()
        })
        .await,
        vec![a_id.clone()]
    );
    assert_eq!(
        list(cri::PodSandboxFilter {
            id: b_id[..12].to_string(),
            ..Default::default()
        })
        .await,
        vec![b_id.clone()]
    );
    let by_label = cri::PodSandboxFilter {
        label_selector: [("test".to_string(), "list-b".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(list(by_label).await, vec![b_id.clone()]);
    let mut both = vec![a_id.clone(), b_id.clone()];
    both.sort();
    assert_eq!(list(cri::PodSandboxFilter::default()).await, both);
    // A truncated ID works for status too, as with containerd.
    assert_eq!(d.pod_status(&a_id[..12]).await.unwrap().id, a_id);
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_does_not_leave_half_made_objects() {
    // A client deadline (kubelet's, crictl's) ends the RPC but must not cut
    // the work short: the pod and the container are finished, listed and
    // removable, as with containerd.
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let config = pod_config("impatient", logs.path());
    // A 1 ms deadline can also pass before the client has sent the request
    // at all, and then the daemon never saw it: so a request is sent again
    // while nothing has appeared. That hides no dropped work, since the
    // daemon would drop each request it receives.
    let deadline = Instant::now() + WAIT;
    let mut send_at = Instant::now();
    let pod = loop {
        if Instant::now() >= send_at {
            let mut request = tonic::Request::new(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                ..Default::default()
            });
            request.set_timeout(Duration::from_millis(1));
            let gave_up = d.runtime.run_pod_sandbox(request).await;
            assert!(
                gave_up.is_err(),
                "the pod was made within 1 ms: {gave_up:?}"
            );
            send_at = Instant::now() + RESEND;
        }
        let pods = d.list_pods().await.unwrap();
        if let Some(p) = pods
            .iter()
            .find(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
        {
            break p.id.clone();
        }
        assert!(Instant::now() < deadline, "no ready pod: {pods:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let deadline = Instant::now() + WAIT;
    let mut send_at = Instant::now();
    let container = loop {
        if Instant::now() >= send_at {
            let mut request = tonic::Request::new(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config("late", &image, &["sleep", "1000"])),
                sandbox_config: Some(config.clone()),
            });
            request.set_timeout(Duration::from_millis(1));
            assert!(d.runtime.create_container(request).await.is_err());
            send_at = Instant::now() + RESEND;
        }
        let containers = d.list_containers().await.unwrap();
        if let Some(c) = containers.first() {
            break c.id.clone();
        }
        assert!(Instant::now() < deadline, "the container was never made");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    d.start_container(&container).await.unwrap();
    d.wait_running(&container).await.unwrap();

    d.stop_pod(&pod).await.unwrap();
    d.remove_pod(&pod).await.unwrap();
    assert!(d.list_pods().await.unwrap().is_empty());
    assert_eq!(d.mounts_under_dirs(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_the_runtime_cannot_delete_stays_listed_until_it_can() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let config = pod_config("stuck", logs.path());
    let pod = d.run_pod(&config).await.unwrap();
    let c = d.run_sleeper(&pod, &config, "stuck", &image).await.unwrap();
    d.stop_container(&c, 0).await.unwrap();
    // The runtime cannot read its state of the container, so its delete
    // fails: the record must stay for kubelet to retry, as with containerd.
    let state = d.run_dir.join("runtime/test").join(&c).join("state.json");
    let good = std::fs::read(&state).unwrap();
    std::fs::write(&state, b"{\"ociVersion\":").unwrap();
    let err = d.remove_container(&c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unknown, "{err:?}");
    let listed = d.list_containers().await.unwrap();
    assert!(listed.iter().any(|x| x.id == c), "{listed:?}");
    std::fs::write(&state, good).unwrap();
    d.remove_container(&c).await.unwrap();
    assert!(d.list_containers().await.unwrap().is_empty());
    d.stop_pod(&pod).await.unwrap();
    d.remove_pod(&pod).await.unwrap();
    assert_eq!(d.mounts_under_dirs(), Vec::<String>::new());
}
