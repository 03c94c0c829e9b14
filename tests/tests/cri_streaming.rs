//! Exec, attach and port-forward through the daemon's streaming server
//! (WebSocket `v5.channel.k8s.io` / `portforward.k8s.io`) into real containers.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rcrun_proto::cri;
use rcrun_tests::daemon::{
    container_config, log_dir, pod_config, pong_server, Daemon, DaemonOptions,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str, protocol: &str) -> Ws {
    let url = url.replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket upgrade");
    ws
}

async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
    let mut frame = vec![channel];
    frame.extend_from_slice(data);
    ws.send(Message::Binary(frame.into())).await.unwrap();
}

/// Everything received per channel until the server closes.
async fn collect(ws: &mut Ws) -> BTreeMap<u8, Vec<u8>> {
    let mut out: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("stream stalled");
        match msg {
            Some(Ok(Message::Binary(data))) if !data.is_empty() => out
                .entry(data[0])
                .or_default()
                .extend_from_slice(&data[1..]),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return out,
            _ => {}
        }
    }
}

/// Connects to the URL ExecRequest `request` gets (remotecommand v5).
async fn exec_session(d: &mut Daemon, request: cri::ExecRequest) -> Ws {
    let url = d.runtime.exec(request).await.unwrap().into_inner().url;
    ws_connect(&url, "v5.channel.k8s.io").await
}

/// The status on the error channel (3) at the end of a remotecommand session.
fn session_status(out: &BTreeMap<u8, Vec<u8>>) -> serde_json::Value {
    serde_json::from_str(&text(out, 3)).unwrap()
}

fn text(out: &BTreeMap<u8, Vec<u8>>, channel: u8) -> String {
    String::from_utf8_lossy(out.get(&channel).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_and_port_forward() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let image = d.import_fixture("busybox");
    let logs = log_dir();
    let pod = pod_config("stream", logs.path());
    let pod_id = d.run_pod(&pod).await.unwrap();
    let mut echo = container_config(
        "echo",
        &image,
        &["sh", "-c", "while read l; do echo \"got:$l\"; done"],
    );
    echo.stdin = true;
    let echo = d.run_container(&pod_id, &pod, &echo).await.unwrap();
    let server = d
        .run_container(&pod_id, &pod, &pong_server("srv", &image, 7070))
        .await
        .unwrap();
    d.wait_running(&server).await.unwrap();

    // exec with stdin, stdout, stderr and a non-zero exit code.
    let mut ws = exec_session(
        &mut d,
        cri::ExecRequest {
            container_id: echo.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "cat; echo oops >&2; exit 4".into(),
            ],
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        },
    )
    .await;
    send(&mut ws, 0, b"through stdin\n").await;
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let out = collect(&mut ws).await;
    assert_eq!(text(&out, 1), "through stdin\n");
    assert_eq!(text(&out, 2), "oops\n");
    let status = session_status(&out);
    assert_eq!(status["details"]["causes"][0]["message"], "4", "{status}");

    // exec with a tty, resized before the command looks.
    let mut ws = exec_session(
        &mut d,
        cri::ExecRequest {
            container_id: echo.clone(),
            cmd: vec!["sh".into(), "-c".into(), "sleep 1; stty size; tty".into()],
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        },
    )
    .await;
    send(&mut ws, 4, br#"{"Width":123,"Height":45}"#).await;
    let out = collect(&mut ws).await;
    let stdout = text(&out, 1);
    assert!(
        stdout.contains("45 123") && stdout.contains("/dev/pts/"),
        "{stdout:?} {out:?}"
    );
    let status = session_status(&out);
    assert_eq!(status["status"], "Success", "{status}");

    // attach to the container's own stdin/stdout; detaching leaves it running.
    let url = d
        .runtime
        .attach(cri::AttachRequest {
            container_id: echo.clone(),
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    send(&mut ws, 0, b"hello\n").await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("got:hello") {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("no attach output")
        {
            Some(Ok(Message::Binary(data))) if data.first() == Some(&1) => {
                seen.extend_from_slice(&data[1..])
            }
            Some(Ok(_)) => {}
            other => panic!("attach ended early: {other:?}"),
        }
    }
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = d.status(&echo).await.unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);

    // port-forward dials inside the pod's network namespace (a URL is
    // single-use: each attempt asks for a new one while nc starts up).
    let mut answer = String::new();
    for _ in 0..30 {
        let url = d
            .runtime
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod_id.clone(),
                port: vec![7070],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let mut ws = ws_connect(&url, "portforward.k8s.io").await;
        send(&mut ws, 0, b"ping\n").await;
        let out = collect(&mut ws).await;
        // Each channel starts with the port number (2 bytes, little endian).
        let data = out.get(&0).cloned().unwrap_or_default();
        assert_eq!(data.get(..2), Some(&7070u16.to_le_bytes()[..]), "{out:?}");
        answer = String::from_utf8_lossy(&data[2..]).into_owned();
        if answer.contains("pong") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answer.contains("pong"), "{answer:?}");

    // Streaming requests for a stopped container are refused up front.
    d.stop_container(&echo, 0).await.unwrap();
    let err = d
        .runtime
        .exec(cri::ExecRequest {
            container_id: echo.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    d.remove_all_pods().await.unwrap();
}
