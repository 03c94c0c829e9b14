//! GetContainerEvents: created/started/stopped/deleted for containers and
//! sandboxes, in order, with the statuses attached.
use std::time::Duration;

use futures::StreamExt;
use rcrun_proto::cri;
use rcrun_proto::cri::ContainerEventType as E;
use rcrun_tests::daemon::{container_config, log_dir, pod_config, Daemon, DaemonOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_stream() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let mut stream = d
        .runtime
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let logs = log_dir();
    let pod = pod_config("events", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let id = d
        .run_container(
            &pod_id,
            &pod,
            &container_config("short", &image, &["sh", "-c", "exit 3"]),
        )
        .await
        .unwrap();
    d.wait_state(
        &id,
        cri::ContainerState::ContainerExited,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    d.remove_container(&id).await.unwrap();
    d.stop_pod(&pod_id).await.unwrap();
    d.remove_pod(&pod_id).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 8 {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("missing events; got {seen:?}"))
            .unwrap()
            .unwrap();
        let kind = E::try_from(event.container_event_type).unwrap();
        assert!(event.created_at > 0);
        if event.container_id == id {
            let status = &event.containers_statuses[0];
            assert_eq!(status.id, id);
            if kind == E::ContainerStoppedEvent {
                assert_eq!(status.exit_code, 3);
            }
            assert_eq!(event.pod_sandbox_status.as_ref().unwrap().id, pod_id);
            seen.push(("container", kind));
        } else if event.container_id == pod_id {
            assert_eq!(event.pod_sandbox_status.as_ref().unwrap().id, pod_id);
            seen.push(("sandbox", kind));
        }
    }
    assert_eq!(
        seen,
        vec![
            ("sandbox", E::ContainerCreatedEvent),
            ("sandbox", E::ContainerStartedEvent),
            ("container", E::ContainerCreatedEvent),
            ("container", E::ContainerStartedEvent),
            ("container", E::ContainerStoppedEvent),
            ("container", E::ContainerDeletedEvent),
            ("sandbox", E::ContainerStoppedEvent),
            ("sandbox", E::ContainerDeletedEvent),
        ]
    );

    // A subscriber still connected does not hold up a graceful stop; its stream ends.
    let started = std::time::Instant::now();
    let status = d.sigterm().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none() || end.unwrap().is_err());
}
