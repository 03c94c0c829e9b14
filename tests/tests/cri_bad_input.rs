//! Bad input gets the right gRPC code and a clear message, leaves nothing
//! behind, and the daemon keeps serving.
use std::time::Duration;

use rcrun_proto::cri;
use rcrun_tests::daemon::{
    container_config, log_dir, pod_config, ContainerConfigExt, Daemon, DaemonOptions,
};
use tonic::Code;

/// RunPodSandbox of `config` with the default runtime handler.
fn run_pod_request(config: cri::PodSandboxConfig) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} ({needle:?}), got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(needle),
                "{needle:?} not in {:?}",
                status.message()
            );
        }
    }
}

/// Entries under a dir (recursively), to check that nothing was left.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            out.push(e.path().to_string_lossy().into_owned());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sandbox_requests() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let logs = log_dir();
    let before = entries(&d.run_dir);

    let rt = &mut d.runtime;
    assert_code(
        rt.run_pod_sandbox(cri::RunPodSandboxRequest::default())
            .await,
        Code::InvalidArgument,
        "config",
    );
    let mut no_name = pod_config("noname", logs.path());
    no_name.metadata.as_mut().unwrap().name.clear();
    assert_code(
        rt.run_pod_sandbox(run_pod_request(no_name)).await,
        Code::InvalidArgument,
        "metadata.name",
    );
    let mut slash = pod_config("slash", logs.path());
    slash.metadata.as_mut().unwrap().name = "a/../b".into();
    assert_code(
        rt.run_pod_sandbox(run_pod_request(slash)).await,
        Code::InvalidArgument,
        "invalid character",
    );
    assert_code(
        rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("handler", logs.path())),
            runtime_handler: "no-such-handler".into(),
        })
        .await,
        Code::InvalidArgument,
        "no-such-handler",
    );
    let mut long_host = pod_config("host", logs.path());
    long_host.hostname = "h".repeat(65);
    assert_code(
        rt.run_pod_sandbox(run_pod_request(long_host)).await,
        Code::InvalidArgument,
        "hostname",
    );
    let mut sysctl = pod_config("sysctl", logs.path());
    sysctl
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("vm.swappiness".into(), "10".into());
    assert_code(
        rt.run_pod_sandbox(run_pod_request(sysctl)).await,
        Code::InvalidArgument,
        "vm.swappiness",
    );

    // A duplicate name: AlreadyExists naming the owner, like containerd.
    let pod = pod_config("dup", logs.path());
    let id = d.run_pod(&pod).await.unwrap();
    assert_code(
        d.runtime
            .run_pod_sandbox(run_pod_request(pod.clone()))
            .await,
        Code::AlreadyExists,
        &format!("is reserved for \"{id}\""),
    );

    // Unknown IDs: NotFound for status, OK for the idempotent stop/remove.
    assert_code(
        d.runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: "f00d".repeat(16),
                verbose: false,
            })
            .await,
        Code::NotFound,
        "not found",
    );
    assert_code(
        d.runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest::default())
            .await,
        Code::InvalidArgument,
        "pod_sandbox_id",
    );
    d.stop_pod(&"f00d".repeat(16)).await.unwrap();
    d.remove_pod("../../etc").await.unwrap();
    assert_code(
        d.runtime
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: "beef".repeat(16),
            })
            .await,
        Code::NotFound,
        "not found",
    );

    d.stop_pod(&id).await.unwrap();
    d.remove_pod(&id).await.unwrap();
    // Failed requests left nothing: the run dir looks as before.
    let after: Vec<String> = entries(&d.run_dir)
        .into_iter()
        .filter(|e| !e.contains("/runtime"))
        .collect();
    let before: Vec<String> = before
        .into_iter()
        .filter(|e| !e.contains("/runtime"))
        .collect();
    let leftover: Vec<&String> = after
        .iter()
        .filter(|e| !before.contains(e) && !e.ends_with("/pod"))
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
    let pods = d.list_pods().await.unwrap();
    assert!(pods.is_empty(), "{pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_container_requests() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("badctr", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let create = |config: cri::ContainerConfig, sandbox: &str| cri::CreateContainerRequest {
        pod_sandbox_id: sandbox.to_string(),
        config: Some(config),
        sandbox_config: Some(pod.clone()),
    };

    assert_code(
        d.runtime
            .create_container(create(
                container_config("x", &image, &["true"]),
                &"ab".repeat(32),
            ))
            .await,
        Code::NotFound,
        "not found",
    );
    assert_code(
        d.runtime
            .create_container(create(
                container_config("x", "no-such-image:1", &["true"]),
                &pod_id,
            ))
            .await,
        Code::NotFound,
        "no-such-image",
    );
    assert_code(
        d.runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "config",
    );
    let mut escape = container_config("escape", &image, &["true"]);
    escape.log_path = "../../etc/evil.log".into();
    assert_code(
        d.runtime.create_container(create(escape, &pod_id)).await,
        Code::InvalidArgument,
        "log_path",
    );

    let mut missing_mount = container_config("mnt", &image, &["true"]);
    missing_mount.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: "/no/such/host/path".into(),
        ..Default::default()
    });
    assert_code(
        d.runtime
            .create_container(create(missing_mount, &pod_id))
            .await,
        Code::NotFound,
        "/no/such/host/path",
    );

    let seccomp = container_config("seccomp", &image, &["true"])
        .with_seccomp_profile("/no/such/profile.json");
    assert_code(
        d.runtime.create_container(create(seccomp, &pod_id)).await,
        Code::NotFound,
        "profile",
    );

    // A duplicate container name.
    let first = d
        .create(
            &pod_id,
            &pod,
            &container_config("same", &image, &["sleep", "100"]),
        )
        .await
        .unwrap();
    assert_code(
        d.runtime
            .create_container(create(container_config("same", &image, &["true"]), &pod_id))
            .await,
        Code::AlreadyExists,
        &first,
    );

    // Unknown container IDs.
    let unknown = "cd".repeat(32);
    assert_code(
        d.runtime
            .start_container(cri::StartContainerRequest {
                container_id: unknown.clone(),
            })
            .await,
        Code::NotFound,
        "not found",
    );
    assert_code(
        d.runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: unknown.clone(),
                verbose: false,
            })
            .await,
        Code::NotFound,
        "not found",
    );
    assert_code(
        d.exec_sync(&unknown, &["true"], 0).await,
        Code::NotFound,
        "not found",
    );
    d.stop_container(&unknown, 0).await.unwrap();
    d.remove_container(&unknown).await.unwrap();

    // ExecSync in a container that is not running; starting twice.
    assert_code(
        d.exec_sync(&first, &["true"], 0).await,
        Code::FailedPrecondition,
        "not running",
    );
    d.start_container(&first).await.unwrap();
    assert_code(
        d.runtime
            .start_container(cri::StartContainerRequest {
                container_id: first.clone(),
            })
            .await,
        Code::FailedPrecondition,
        "created",
    );
    assert_code(
        d.exec_sync(&first, &[], 0).await,
        Code::InvalidArgument,
        "cmd",
    );

    // A container in a stopped pod.
    d.stop_pod(&pod_id).await.unwrap();
    let st = d.status(&first).await.unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_code(
        d.runtime
            .create_container(create(container_config("late", &image, &["true"]), &pod_id))
            .await,
        Code::FailedPrecondition,
        "not ready",
    );

    // Nothing of the failed creates is listed or left on disk.
    let list = d.list_containers().await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let ctr_dirs: Vec<_> = std::fs::read_dir(d.run_dir.join("ctr"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(ctr_dirs.len(), 1, "{ctr_dirs:?}");
    let scratch: Vec<_> = std::fs::read_dir(d.state_dir.join("ctr"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(scratch.len(), 1, "{scratch:?}");
    d.remove_all_pods().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_requests_do_not_hurt_the_daemon() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    // 16 MiB of garbage as a gRPC message, straight over HTTP/2.
    let channel = rcrun_tests::daemon::connect(&d.socket).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let garbage: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/runtime.v1.RuntimeService/RunPodSandbox",
    );
    let result: Result<tonic::Response<cri::RunPodSandboxResponse>, tonic::Status> = grpc
        .unary(tonic::Request::new(RawBytes(garbage)), path, RawCodec)
        .await;
    let status = result.unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::Internal | Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
        ),
        "{status:?}"
    );
    // Still serving.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = d.version().await.unwrap();
    assert_eq!(v.runtime_name, "rcrun-cri");
    let pods = d.list_pods().await.unwrap();
    assert!(pods.is_empty());
}

/// A request body sent as is.
struct RawBytes(Vec<u8>);

#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = RawBytes;
    type Decode = cri::RunPodSandboxResponse;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = RawBytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: RawBytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use rcrun_proto::prost::bytes::BufMut;
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = cri::RunPodSandboxResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, tonic::Status> {
        use rcrun_proto::prost::bytes::Buf;
        use rcrun_proto::prost::Message;
        let bytes = src.copy_to_bytes(src.remaining());
        cri::RunPodSandboxResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[test]
fn a_run_dir_too_long_for_sockets_is_refused_at_start() {
    let tmp = tempfile::Builder::new()
        .prefix("rcri")
        .tempdir_in("/tmp")
        .unwrap();
    let long = tmp.path().join("r".repeat(90));
    let out = std::process::Command::new(rcrun_tests::bins::bin("rcrun-cri"))
        .arg("--socket")
        .arg(tmp.path().join("cri.sock"))
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--run-dir")
        .arg(&long)
        .arg("--no-cni")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too long") && err.contains("run_dir"), "{err}");
}
