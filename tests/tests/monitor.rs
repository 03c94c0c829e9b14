//! End-to-end tests of `rcrun-monitor` with a real OCI runtime: `runc` by
//! default, any runc-compatible one through `RCRUN_MONITOR_TEST_RUNTIME`
//! (e.g. the project's own `rcrun`). Each test plays the daemon: it spawns the
//! monitor with a sync pipe, runs `start` itself, and reads the CRI log, the
//! attach socket and the exit record. Runs as root, in parallel.
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcrun_tests::bins::bin;
use rcrun_tests::fixtures::busybox_rootfs;
use serde_json::{json, Value};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STDIN_CLOSE: u8 = 3;
const RESIZE: u8 = 4;
const EXIT: u8 = 5;

const WAIT: Duration = Duration::from_secs(20);

fn runtime() -> PathBuf {
    std::env::var_os("RCRUN_MONITOR_TEST_RUNTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/runc"))
}

fn unique_id(name: &str) -> String {
    rcrun_tests::bundle::unique_id(&format!("mon-{name}"))
}

/// An OCI spec like runc's default one, on the read-only busybox fixture.
fn spec(args: &[&str]) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true
        },
        "root": {"path": busybox_rootfs(), "readonly": true},
        "hostname": "monitor-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
        }
    })
}

/// One container under a monitor: its bundle, state dir, runtime root and log
/// in a temp dir. Dropping it kills the container and the monitor (by pid,
/// only if that pid still runs the monitor binary) and deletes the container.
struct Container {
    id: String,
    dir: tempfile::TempDir,
    cgroups_path: String,
    monitor_pid: Option<i32>,
}

/// The monitor's answer on the sync pipe plus the parent's exit status.
struct Spawned {
    parent_status: std::process::ExitStatus,
    reply: Value,
}

impl Container {
    fn new(name: &str, mut spec: Value) -> Container {
        let id = unique_id(name);
        let dir = tempfile::Builder::new()
            .prefix("rcrun-mon-")
            .tempdir()
            .expect("temp dir");
        fs::create_dir_all(dir.path().join("bundle")).unwrap();
        let cgroups_path = format!("/rcrun-monitor-test-{id}");
        spec["linux"]["cgroupsPath"] = json!(cgroups_path);
        fs::write(
            dir.path().join("bundle/config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        Container {
            id,
            dir,
            cgroups_path,
            monitor_pid: None,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("logs/pod/0.log")
    }

    fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("runtime-root")
    }

    fn monitor_args(&self, extra: &[&str]) -> Vec<String> {
        let path = |p: PathBuf| p.to_str().unwrap().to_string();
        let mut args = vec![
            "run".to_string(),
            "--runtime".into(),
            path(runtime()),
            "--runtime-root".into(),
            path(self.runtime_root()),
            "--id".into(),
            self.id.clone(),
            "--bundle".into(),
            path(self.dir.path().join("bundle")),
            "--state-dir".into(),
            path(self.state_dir()),
            "--log-path".into(),
            path(self.log_path()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Spawns `rcrun-monitor run` with the sync pipe on fd 3, waits for the
    /// short-lived parent and reads the sync line.
    fn spawn(&mut self, extra: &[&str]) -> Spawned {
        let mut command = Command::new(bin("rcrun-monitor"));
        command.args(self.monitor_args(extra));
        spawn_with_sync_pipe(command, |status, reply| {
            if reply["ok"] == json!(true) {
                self.monitor_pid = Some(reply["monitor_pid"].as_i64().unwrap() as i32);
            }
            Spawned {
                parent_status: status,
                reply,
            }
        })
    }

    /// Spawns and expects a successful create; returns the init pid.
    fn create(&mut self, extra: &[&str]) -> i32 {
        let spawned = self.spawn(extra);
        assert!(
            spawned.parent_status.success(),
            "monitor parent: {:?}",
            spawned.parent_status
        );
        assert_eq!(
            spawned.reply["ok"],
            json!(true),
            "sync reply: {}",
            spawned.reply
        );
        spawned.reply["pid"].as_i64().unwrap() as i32
    }

    fn runtime_cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new(runtime())
            .arg("--root")
            .arg(self.runtime_root())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the runtime")
    }

    fn start(&self) {
        let out = self.runtime_cmd(&["start", &self.id]);
        assert!(
            out.status.success(),
            "start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn kill(&self, signal: &str) {
        let out = self.runtime_cmd(&["kill", &self.id, signal]);
        assert!(
            out.status.success(),
            "kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn monitor_pid(&self) -> i32 {
        self.monitor_pid.expect("monitor started")
    }

    fn attach(&self) -> Attach {
        let stream =
            UnixStream::connect(self.state_dir().join("attach.sock")).expect("connect attach");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Attach {
            stream,
            transcript: Vec::new(),
        }
    }

    /// Waits for `exit.json` and for the monitor to end.
    fn wait_exit(&self) -> Value {
        let path = self.state_dir().join("exit.json");
        let text = wait_for(|| fs::read_to_string(&path).ok(), "exit.json");
        wait_for(
            || (!process_alive(self.monitor_pid())).then_some(()),
            "monitor exit",
        );
        serde_json::from_str(&text).expect("exit.json is JSON")
    }

    fn log_records(&self) -> Vec<LogRecord> {
        log_records(&self.log_path())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.runtime_cmd(&["delete", "--force", &self.id]);
        if let Some(pid) = self.monitor_pid {
            if is_monitor(pid) {
                // SAFETY: kill(2) on a pid we verified runs the monitor binary.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for dir in cgroup_dirs(&self.cgroups_path) {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A fresh pipe whose write end `command` gets as fd 3 (the monitor's sync
/// pipe); returns (read end, write end). Drop the write end once spawned.
fn sync_pipe_on_fd3(command: &mut Command) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just returned them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let write_fd = write.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if write_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(write_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (read, write)
}

/// Spawns `command` with the write end of a fresh pipe as fd 3, waits for it
/// and reads one JSON line from the pipe until EOF.
fn spawn_with_sync_pipe<T>(
    mut command: Command,
    done: impl FnOnce(std::process::ExitStatus, Value) -> T,
) -> T {
    let (read, write) = sync_pipe_on_fd3(&mut command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("spawn rcrun-monitor");
    drop(write);
    let output = child
        .wait_with_output()
        .expect("wait for the monitor's parent");
    let mut file = fs::File::from(read);
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "no EOF on the sync pipe; got {text:?}"
        );
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.push_str(std::str::from_utf8(&buf[..n]).unwrap()),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!("reading the sync pipe: {err}"),
        }
    }
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "one sync line, got {text:?}"
    );
    let reply = serde_json::from_str(text.trim()).expect("sync line is JSON");
    done(output.status, reply)
}

/// An attach client.
struct Attach {
    stream: UnixStream,
    /// Everything received, for failure messages.
    transcript: Vec<(u8, String)>,
}

impl Attach {
    fn send(&mut self, kind: u8, payload: &[u8]) {
        let mut frame = vec![kind];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).expect("send frame");
    }

    /// The next frame, or `None` at EOF.
    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut header = [0u8; 5];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::UnexpectedEof => return None,
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return None,
            Err(err) => panic!(
                "reading a frame: {err}; received so far: {:?}",
                self.transcript
            ),
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).expect("frame payload");
        self.transcript
            .push((header[0], String::from_utf8_lossy(&payload).into_owned()));
        Some((header[0], payload))
    }

    /// Reads frames until EOF: (stdout text, stderr text, exit code if sent).
    fn read_all(&mut self) -> (String, String, Option<String>) {
        let (mut out, mut err, mut exit) = (String::new(), String::new(), None);
        while let Some((kind, payload)) = self.frame() {
            let text = String::from_utf8_lossy(&payload).into_owned();
            match kind {
                STDOUT => out.push_str(&text),
                STDERR => err.push_str(&text),
                EXIT => exit = Some(text),
                other => panic!("unexpected frame kind {other}"),
            }
        }
        (out, err, exit)
    }

    /// Reads frames until the collected output of `kind` contains `needle`.
    fn read_until(&mut self, kind: u8, needle: &str) -> String {
        let mut seen = String::new();
        while !seen.contains(needle) {
            let (k, payload) = self
                .frame()
                .unwrap_or_else(|| panic!("EOF before {needle:?}; saw {seen:?}"));
            if k == kind {
                seen.push_str(&String::from_utf8_lossy(&payload));
            }
        }
        seen
    }
}

#[derive(Debug)]
struct LogRecord {
    time: String,
    stream: String,
    tag: String,
    msg: String,
}

fn log_records(path: &Path) -> Vec<LogRecord> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "log ends with a newline"
    );
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let record = LogRecord {
                time: parts.next().unwrap().to_string(),
                stream: parts.next().expect("stream").to_string(),
                tag: parts.next().expect("tag").to_string(),
                msg: parts.next().expect("message (maybe empty)").to_string(),
            };
            assert_rfc3339_nano_utc(&record.time);
            assert!(
                record.stream == "stdout" || record.stream == "stderr",
                "{line:?}"
            );
            assert!(record.tag == "P" || record.tag == "F", "{line:?}");
            record
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with 1 to 9 fraction digits.
fn assert_rfc3339_nano_utc(time: &str) {
    let b = time.as_bytes();
    let ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && time.ends_with('Z')
        && match &time[19..time.len() - 1] {
            "" => true,
            frac => {
                frac.starts_with('.')
                    && (2..=10).contains(&frac.len())
                    && frac[1..].bytes().all(|c| c.is_ascii_digit())
                    && !frac.ends_with('0')
            }
        };
    assert!(ok, "not an RFC3339Nano UTC time: {time:?}");
}

/// Messages of one stream as (tag, msg).
fn stream_records<'a>(records: &'a [LogRecord], stream: &str) -> Vec<(&'a str, &'a str)> {
    records
        .iter()
        .filter(|r| r.stream == stream)
        .map(|r| (r.tag.as_str(), r.msg.as_str()))
        .collect()
}

fn wait_for<T>(mut probe: impl FnMut() -> Option<T>, what: &str) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line of /proc/PID/stat: (state, ppid, session).
fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let _pgrp = fields.next()?;
    let session = fields.next()?.parse().ok()?;
    Some((state, ppid, session))
}

fn process_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

fn is_monitor(pid: i32) -> bool {
    let exe = fs::read_link(format!("/proc/{pid}/exe"));
    process_alive(pid) && exe.ok().as_deref() == Some(bin("rcrun-monitor").as_path())
}

/// The pids in /proc.
fn all_pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
}

/// Pids whose parent is `ppid`, with their states.
fn children_of(ppid: i32) -> Vec<(i32, char)> {
    let mut children = Vec::new();
    for pid in all_pids() {
        if let Some((state, parent, _)) = proc_stat(pid) {
            if parent == ppid {
                children.push((pid, state));
            }
        }
    }
    children
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for pid in all_pids() {
        if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) && process_alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(rel)];
    }
    fs::read_dir(root)
        .map(|dirs| {
            dirs.flatten()
                .map(|d| d.path().join(rel))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn smaps_rollup_kb(pid: i32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in smaps_rollup of {pid}"))
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid this test started.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

// ---------------------------------------------------------------------------

#[test]
fn exit_code_sync_reply_state_files_and_cri_log_format() {
    let script = "echo out1; echo err1 >&2; head -c 40000 /dev/zero | tr '\\0' a; echo; echo; \
                  printf 'crlf\\r\\n'; printf no-newline; exit 3";
    let mut c = Container::new("log", spec(&["sh", "-c", script]));
    let init_pid = c.create(&[]);
    let state = c.state_dir();
    let monitor_pid = c.monitor_pid();
    assert_eq!(
        fs::read_to_string(state.join("container.pid"))
            .unwrap()
            .trim(),
        init_pid.to_string()
    );
    assert_eq!(
        fs::read_to_string(state.join("monitor.pid"))
            .unwrap()
            .trim(),
        monitor_pid.to_string()
    );
    assert!(state.join("attach.sock").exists());
    // The init waits for start as the monitor's child.
    assert_eq!(proc_stat(init_pid).unwrap().1, monitor_pid);
    c.start();
    let exit = c.wait_exit();
    assert_eq!(exit["exit_code"], json!(3), "{exit}");
    assert_eq!(exit["signal"], json!(0));
    assert_eq!(exit["oom_killed"], json!(false));
    let finished_at = exit["finished_at"].as_str().unwrap();
    assert_rfc3339_nano_utc(finished_at);
    let ns = exit["finished_at_ns"].as_i64().unwrap();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        ns <= now_ns && now_ns - ns < 60_000_000_000,
        "finished_at_ns {ns} vs now {now_ns}"
    );
    for gone in ["monitor.pid", "attach.sock", "console.sock"] {
        assert!(!state.join(gone).exists(), "{gone} left behind");
    }

    let records = c.log_records();
    let a = "a".repeat(16384);
    let rest = "a".repeat(40000 - 2 * 16384);
    assert_eq!(
        stream_records(&records, "stdout"),
        [
            ("F", "out1"),
            ("P", a.as_str()),
            ("P", a.as_str()),
            ("F", rest.as_str()),
            ("F", ""),
            ("F", "crlf"),
            ("P", "no-newline"),
        ]
    );
    assert_eq!(stream_records(&records, "stderr"), [("F", "err1")]);
}

#[test]
fn killed_init_reports_128_plus_signal_and_no_oom() {
    let mut c = Container::new("kill", spec(&["sleep", "60"]));
    let init_pid = c.create(&[]);
    c.start();
    // The monitor blocks signals for its signalfd; the container must not inherit that.
    let status = wait_for(
        || {
            fs::read_to_string(format!("/proc/{init_pid}/status"))
                .ok()
                .filter(|s| s.contains("Name:\tsleep"))
        },
        "the init to exec sleep",
    );
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap()
        .trim();
    assert_eq!(
        u64::from_str_radix(blocked, 16).unwrap(),
        0,
        "container init blocks signals"
    );
    c.kill("KILL");
    let exit = c.wait_exit();
    assert_eq!(exit["exit_code"], json!(137), "{exit}");
    assert_eq!(exit["signal"], json!(9));
    assert_eq!(exit["oom_killed"], json!(false));
}

#[test]
fn failing_create_reports_the_runtime_error_and_leaves_nothing() {
    for tty in [false, true] {
        let mut config = spec(&["/no/such/binary"]);
        config["process"]["terminal"] = json!(tty);
        let mut c = Container::new("fail", config);
        let spawned = c.spawn(if tty { &["--tty"] } else { &[] });
        assert!(
            spawned.parent_status.success(),
            "the parent always exits 0 after forking"
        );
        assert_eq!(spawned.reply["ok"], json!(false), "{}", spawned.reply);
        let error = spawned.reply["error"].as_str().unwrap();
        assert!(
            error.contains("/no/such/binary"),
            "error names the command: {error}"
        );
        // The sync pipe is closed once the monitor is done; it exits right after.
        let state = c.state_dir().to_str().unwrap().to_string();
        wait_for(
            || processes_mentioning(&state).is_empty().then_some(()),
            "the failed monitor to exit",
        );
        for gone in [
            "monitor.pid",
            "attach.sock",
            "console.sock",
            "exit.json",
            "container.pid",
        ] {
            assert!(
                !c.state_dir().join(gone).exists(),
                "{gone} left behind (tty {tty})"
            );
        }
        let list = c.runtime_cmd(&["list", "-q"]);
        assert!(!String::from_utf8_lossy(&list.stdout)
            .lines()
            .any(|l| l == c.id));
    }
}

#[test]
fn a_second_monitor_for_the_same_state_dir_is_refused() {
    let mut first = Container::new("first", spec(&["sleep", "60"]));
    first.create(&[]);
    let mut args = first.monitor_args(&[]);
    args[6] = unique_id("second");
    let mut command = Command::new(bin("rcrun-monitor"));
    command.args(args);
    spawn_with_sync_pipe(command, |_, reply| {
        assert_eq!(reply["ok"], json!(false));
        let error = reply["error"].as_str().unwrap();
        let pid = first.monitor_pid().to_string();
        assert!(
            error.contains("another monitor") && error.contains(&pid),
            "{error}"
        );
    });
    // The first monitor and its files are untouched.
    let state = first.state_dir();
    assert_eq!(
        fs::read_to_string(state.join("monitor.pid"))
            .unwrap()
            .trim(),
        first.monitor_pid().to_string()
    );
    assert!(state.join("attach.sock").exists());
    assert!(state.join("container.pid").exists());
    first.start();
    first.kill("KILL");
    assert_eq!(first.wait_exit()["exit_code"], json!(137));
}

#[test]
fn bad_arguments_are_reported_on_the_sync_pipe() {
    let mut command = Command::new(bin("rcrun-monitor"));
    command.args([
        "run",
        "--runtime",
        "runc",
        "--bundle",
        "/nonexistent",
        "--state-dir",
        "/tmp/x",
    ]);
    spawn_with_sync_pipe(command, |status, reply| {
        assert_eq!(status.code(), Some(2));
        assert_eq!(reply["ok"], json!(false));
        assert!(reply["error"].as_str().unwrap().contains("--id"), "{reply}");
    });
}

#[test]
fn a_missing_runtime_is_reported() {
    let c = Container::new("noruntime", spec(&["true"]));
    let mut args = c.monitor_args(&[]);
    args[2] = "/nonexistent/runtime".into();
    let mut command = Command::new(bin("rcrun-monitor"));
    command.args(args);
    spawn_with_sync_pipe(command, |status, reply| {
        assert!(status.success());
        assert_eq!(reply["ok"], json!(false));
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains("/nonexistent/runtime"), "{error}");
    });
    let state = c.state_dir().to_str().unwrap().to_string();
    wait_for(
        || processes_mentioning(&state).is_empty().then_some(()),
        "the monitor to exit",
    );
    assert!(!c.state_dir().join("monitor.pid").exists());
}

#[test]
fn tty_output_comes_through_the_console_socket() {
    let mut config = spec(&["sh", "-c", "tty; echo tty-out; echo tty-err >&2; exit 4"]);
    config["process"]["terminal"] = json!(true);
    let mut c = Container::new("tty", config);
    c.create(&["--tty"]);
    assert!(
        !c.state_dir().join("console.sock").exists(),
        "console socket removed after create"
    );
    c.start();
    let exit = c.wait_exit();
    assert_eq!(exit["exit_code"], json!(4));
    let records = c.log_records();
    // Everything of a tty is stdout, with the pty's "\r\n" line ends stripped.
    assert_eq!(
        stream_records(&records, "stdout"),
        [("F", "/dev/pts/0"), ("F", "tty-out"), ("F", "tty-err")]
    );
    assert!(stream_records(&records, "stderr").is_empty());
}

#[test]
fn tty_resize_and_stdin_through_attach() {
    let mut config = spec(&[
        "sh",
        "-c",
        "stty -echo; echo ready; read line; stty size; echo \"got $line\"",
    ]);
    config["process"]["terminal"] = json!(true);
    let mut c = Container::new("ttyattach", config);
    c.create(&["--tty", "--stdin"]);
    let mut client = c.attach();
    c.start();
    client.read_until(STDOUT, "ready");
    let mut size = 123u16.to_be_bytes().to_vec();
    size.extend_from_slice(&45u16.to_be_bytes());
    client.send(RESIZE, &size);
    client.send(STDIN, b"hello\n");
    let (out, _, exit) = client.read_all();
    assert!(out.contains("45 123"), "stty size after resize: {out:?}");
    assert!(out.contains("got hello"), "{out:?}");
    assert_eq!(exit.as_deref(), Some("0"));
    assert_eq!(c.wait_exit()["exit_code"], json!(0));
}

#[test]
fn attach_serves_two_clients_with_stdin_and_stdin_close() {
    let script = "while read l; do echo \"out:$l\"; echo \"err:$l\" >&2; done; echo done; exit 0";
    let mut c = Container::new("attach", spec(&["sh", "-c", script]));
    c.create(&["--stdin"]);
    let mut a = c.attach();
    let mut b = c.attach();
    c.start();
    a.send(STDIN, b"one\n");
    for client in [&mut a, &mut b] {
        client.read_until(STDOUT, "out:one");
    }
    b.send(STDIN, b"two\n");
    b.read_until(STDERR, "err:two");
    a.send(STDIN_CLOSE, b"");
    for client in [&mut a, &mut b] {
        let (out, _, exit) = client.read_all();
        assert!(out.contains("done"), "{out:?}");
        assert_eq!(exit.as_deref(), Some("0"));
    }
    assert_eq!(c.wait_exit()["exit_code"], json!(0));
    let records = c.log_records();
    assert_eq!(
        stream_records(&records, "stdout"),
        [("F", "out:one"), ("F", "out:two"), ("F", "done")]
    );
    assert_eq!(
        stream_records(&records, "stderr"),
        [("F", "err:one"), ("F", "err:two")]
    );
}

#[test]
fn stdin_is_queued_while_the_container_does_not_read() {
    // The container reads nothing for a while: the pipe fills, the monitor
    // queues and stops reading the client, and nothing is lost.
    let mut c = Container::new("backlog", spec(&["sh", "-c", "sleep 1; wc -c"]));
    c.create(&["--stdin"]);
    let mut client = c.attach();
    c.start();
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..32 {
        client.send(STDIN, &chunk);
    }
    client.send(STDIN_CLOSE, b"");
    let (out, _, exit) = client.read_all();
    assert_eq!(out.trim(), (32 * 64 * 1024).to_string());
    assert_eq!(exit.as_deref(), Some("0"));
    c.wait_exit();
}

#[test]
fn stdin_once_closes_stdin_when_the_writer_leaves() {
    let mut c = Container::new("once", spec(&["sh", "-c", "cat; echo after-eof"]));
    c.create(&["--stdin", "--stdin-once"]);
    c.start();
    // A client that never wrote to stdin leaves: stdin stays open.
    drop(c.attach());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !c.state_dir().join("exit.json").exists(),
        "stdin closed by a reader leaving"
    );
    let mut writer = c.attach();
    writer.send(STDIN, b"x\n");
    writer.read_until(STDOUT, "x");
    drop(writer);
    let exit = c.wait_exit();
    assert_eq!(exit["exit_code"], json!(0));
    let records = c.log_records();
    assert_eq!(
        stream_records(&records, "stdout"),
        [("F", "x"), ("F", "after-eof")]
    );
}

#[test]
fn sigusr1_reopens_the_log_file() {
    let mut c = Container::new(
        "reopen",
        spec(&["sh", "-c", "while read l; do echo \"$l\"; done"]),
    );
    c.create(&["--stdin"]);
    let mut client = c.attach();
    c.start();
    client.send(STDIN, b"one\n");
    client.read_until(STDOUT, "one");
    let log = c.log_path();
    let rotated = log.with_extension("log.1");
    wait_for(
        || fs::read_to_string(&log).ok().filter(|t| t.contains("one")),
        "first line in the log",
    );
    fs::rename(&log, &rotated).unwrap();
    signal(c.monitor_pid(), libc::SIGUSR1);
    wait_for(|| log.exists().then_some(()), "the reopened log file");
    client.send(STDIN, b"two\n");
    client.send(STDIN_CLOSE, b"");
    assert_eq!(client.read_all().2.as_deref(), Some("0"));
    c.wait_exit();
    let msgs =
        |path: &Path| -> Vec<String> { log_records(path).into_iter().map(|r| r.msg).collect() };
    assert_eq!(msgs(&rotated), ["one"]);
    assert_eq!(msgs(&log), ["two"]);
}

#[test]
fn monitor_outlives_its_spawner() {
    let mut c = Container::new("orphan", spec(&["sh", "-c", "read x; exit 7"]));
    // The spawner: a shell that starts the monitor and stays, until killed.
    let mut shell = Command::new("/bin/sh");
    let args = c.monitor_args(&["--stdin"]);
    shell
        .arg("-c")
        .arg("\"$@\"; exec sleep 60")
        .arg("spawner")
        .arg(bin("rcrun-monitor"))
        .args(&args);
    // The shell must be observable: run it in the background and read the
    // sync pipe ourselves.
    let (read, write) = sync_pipe_on_fd3(&mut shell);
    let mut spawner = shell
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    drop(write);
    // The spawner shell (sleeping) keeps fd 3 open; read exactly one line.
    let mut line = Vec::new();
    let mut file = fs::File::from(read);
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        assert_eq!(
            file.read(&mut byte).unwrap(),
            1,
            "sync line: {:?}",
            String::from_utf8_lossy(&line)
        );
        line.push(byte[0]);
    }
    let reply: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let monitor_pid = reply["monitor_pid"].as_i64().unwrap() as i32;
    c.monitor_pid = Some(monitor_pid);
    let (_, ppid, session) = proc_stat(monitor_pid).unwrap();
    assert_ne!(
        ppid,
        spawner.id() as i32,
        "the monitor is not the spawner's child"
    );
    assert_ne!(ppid, std::process::id() as i32);
    assert_eq!(session, monitor_pid, "the monitor leads its own session");
    // The spawner dies; the container is started and ends afterwards.
    spawner.kill().unwrap();
    spawner.wait().unwrap();
    c.start();
    let mut client = c.attach();
    client.send(STDIN, b"go\n");
    let exit = c.wait_exit();
    assert_eq!(exit["exit_code"], json!(7), "{exit}");
}

#[test]
fn oom_kill_is_reported() {
    /// How the monitor is told the container's cgroup.
    #[derive(Debug, Clone, Copy)]
    enum CgroupArg {
        /// The OCI cgroupsPath (cgroupfs form).
        CgroupsPath,
        /// The memory cgroup's directory (v1 memory hierarchy or v2).
        Directory,
        /// Nothing: the monitor looks at the init's cgroup.
        None,
    }
    for how in [
        CgroupArg::CgroupsPath,
        CgroupArg::Directory,
        CgroupArg::None,
    ] {
        let mut config = spec(&["tail", "/dev/zero"]);
        let limit = 16 * 1024 * 1024;
        config["linux"]["resources"]["memory"] = json!({"limit": limit, "swap": limit});
        let mut c = Container::new("oom", config);
        let rel = c.cgroups_path.trim_start_matches('/').to_string();
        let root = Path::new("/sys/fs/cgroup");
        let memory_dir = if root.join("cgroup.controllers").exists() {
            root.join(&rel)
        } else {
            root.join("memory").join(&rel)
        };
        let arg = match how {
            CgroupArg::CgroupsPath => Some(c.cgroups_path.clone()),
            CgroupArg::Directory => Some(memory_dir.to_str().unwrap().to_string()),
            CgroupArg::None => None,
        };
        let extra: Vec<&str> = match &arg {
            Some(arg) => vec!["--cgroup-path", arg],
            None => vec![],
        };
        c.create(&extra);
        assert!(memory_dir.is_dir(), "{} exists", memory_dir.display());
        c.start();
        let exit = c.wait_exit();
        assert_eq!(
            exit["oom_killed"],
            json!(true),
            "cgroup given as {how:?}: {exit}"
        );
        assert_eq!(exit["exit_code"], json!(137));
        assert_eq!(exit["signal"], json!(9));
    }
}

#[test]
fn orphans_are_reaped_no_zombies() {
    // Without a PID namespace, the init's orphans are reparented to the monitor.
    let mut config = spec(&[
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do (sleep 1 &); done; exec sleep 60",
    ]);
    config["linux"]["namespaces"] = json!([{"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    let mut c = Container::new("reap", config);
    let init_pid = c.create(&[]);
    c.start();
    let monitor_pid = c.monitor_pid();
    // The five orphaned sleeps become the monitor's children...
    wait_for(
        || (children_of(monitor_pid).len() == 6).then_some(()),
        "the orphans to be adopted by the monitor",
    );
    // ...and are reaped when they end: no zombie stays behind.
    wait_for(
        || (children_of(monitor_pid) == [(init_pid, 'S')]).then_some(()),
        "the orphans to be reaped",
    );
    c.kill("KILL");
    assert_eq!(c.wait_exit()["exit_code"], json!(137));
}

#[test]
fn a_slow_attach_client_is_cut_off_without_blocking_the_container() {
    let mut c = Container::new(
        "slow",
        spec(&["sh", "-c", "seq 1 300000; echo end; exec sleep 60"]),
    );
    c.create(&[]);
    // Connects and does not read while the container writes about 2 MB.
    let mut lazy = c.attach();
    c.start();
    let log = c.log_path();
    wait_for(
        || {
            fs::read_to_string(&log)
                .ok()
                .filter(|t| t.ends_with(" stdout F end\n"))
        },
        "all output in the log",
    );
    assert_eq!(c.log_records().len(), 300001);
    // The container still runs, yet the lazy client already got EOF: it was
    // disconnected instead of having megabytes buffered for it.
    let (out, _, exit_frame) = lazy.read_all();
    assert_eq!(exit_frame, None);
    assert!(
        out.len() < 1_900_000,
        "{} bytes kept for a client that did not read",
        out.len()
    );
    assert!(!c.state_dir().join("exit.json").exists());
    c.kill("KILL");
    assert_eq!(c.wait_exit()["exit_code"], json!(137));
}

#[test]
fn pause_mode_runs_from_an_empty_rootfs_reaps_and_stops_on_sigterm() {
    let rootfs = tempfile::Builder::new()
        .prefix("rcrun-pause-")
        .tempdir()
        .unwrap();
    for dir in ["proc", "dev"] {
        fs::create_dir(rootfs.path().join(dir)).unwrap();
    }
    for file in ["pause", "busybox"] {
        fs::write(rootfs.path().join(file), b"").unwrap();
    }
    let mut config = spec(&["/pause"]);
    config["root"]["path"] = json!(rootfs.path());
    let mounts = config["mounts"].as_array_mut().unwrap();
    mounts.truncate(2); // /proc and /dev only
    mounts.push(json!({"destination": "/pause", "type": "bind", "source": bin("rcrun-monitor"), "options": ["bind", "ro"]}));
    // busybox only for the orphan below, not for pause itself.
    mounts.push(json!({"destination": "/busybox", "type": "bind", "source": busybox_rootfs().join("bin/busybox"), "options": ["bind", "ro"]}));
    let mut c = Container::new("pause", config);
    let init_pid = c.create(&[]);
    c.start();
    wait_for(
        || (fs::read_link(format!("/proc/{init_pid}/exe")).is_ok()).then_some(()),
        "pause running",
    );
    // An orphan inside the pod's PID namespace becomes pause's child; it must be reaped.
    // (busybox sh runs its last command by exec: `true` ends at once and leaves the
    // sleep behind in the pod's PID namespace; `exec -d` because a non-detached
    // runc exec kills what its process leaves behind.)
    let status = Command::new(runtime())
        .arg("--root")
        .arg(c.runtime_root())
        .args([
            "exec",
            "-d",
            &c.id,
            "/busybox",
            "sh",
            "-c",
            "/busybox sleep 1 & /busybox true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "exec: {status}");
    // The orphan is pause's child until it ends; then it must be reaped.
    wait_for(
        || (children_of(init_pid).len() == 1).then_some(()),
        "pause to adopt the orphan",
    );
    wait_for(
        || children_of(init_pid).is_empty().then_some(()),
        "pause to reap its orphan",
    );
    assert!(process_alive(init_pid), "pause keeps running");
    c.kill("TERM");
    let exit = c.wait_exit();
    assert_eq!(exit["exit_code"], json!(0), "{exit}");
    assert_eq!(exit["signal"], json!(0));
}

#[test]
fn monitor_memory_footprint() {
    let mut containers: Vec<Container> = (0..4)
        .map(|_| Container::new("rss", spec(&["sleep", "60"])))
        .collect();
    for c in &mut containers {
        c.create(&[]);
        c.start();
    }
    // Let the monitors settle in their poll loop.
    std::thread::sleep(Duration::from_millis(300));
    for c in &containers {
        let pid = c.monitor_pid();
        let (rss, pss) = (smaps_rollup_kb(pid, "Rss"), smaps_rollup_kb(pid, "Pss"));
        let (anon, private_dirty) = (
            smaps_rollup_kb(pid, "Anonymous"),
            smaps_rollup_kb(pid, "Private_Dirty"),
        );
        println!("monitor {pid}: Rss {rss} kB, Pss {pss} kB, Anonymous {anon} kB, Private_Dirty {private_dirty} kB");
        assert!(rss < 4096, "monitor RSS {rss} kB");
        assert!(anon < 1024, "monitor anonymous memory {anon} kB");
    }
    for c in &containers {
        c.kill("KILL");
    }
    for c in &containers {
        assert_eq!(c.wait_exit()["exit_code"], json!(137));
    }
}

#[test]
fn help_and_usage_errors() {
    let help = Command::new(bin("rcrun-monitor"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--runtime-root"));
    let bad = Command::new(bin("rcrun-monitor"))
        .arg("frobnicate")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("frobnicate"));
}
