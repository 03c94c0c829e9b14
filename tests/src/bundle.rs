//! OCI bundles on the busybox fixture rootfs, and driving the `rcrun` binary
//! on them with a private `--root`, with checks that nothing is left behind.
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bins::bin;
use crate::fixtures::busybox_rootfs;

/// A container ID unique across parallel tests and test processes.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bundle directory with a `config.json` whose rootfs is the shared
/// busybox fixture (read-only, so tests cannot change it).
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub spec: Value,
}

impl Bundle {
    /// A bundle running `args` with runc's usual namespaces, mounts and
    /// masked paths, no terminal, and a tmpfs on /tmp.
    pub fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("rcrun-bundle-")
            .tempdir()
            .expect("bundle dir");
        let spec = default_spec(&busybox_rootfs(), args);
        let b = Bundle { dir, spec };
        b.write();
        b
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes the spec with `change` and writes it.
    pub fn edit(mut self, change: impl FnOnce(&mut Value)) -> Bundle {
        change(&mut self.spec);
        self.write();
        self
    }

    /// Writes `spec` to `config.json` (call after changing it).
    pub fn write(&self) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&self.spec).unwrap(),
        )
        .expect("write config.json");
    }
}

/// The spec [`Bundle::new`] writes.
pub fn default_spec(rootfs: &Path, args: &[&str]) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "rcrun-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// `rcrun` with its own `--root`; deletes (with `--force`) every container
/// it was told about when dropped, so failed tests leave nothing behind.
pub struct Rcrun {
    pub root: tempfile::TempDir,
    binary: PathBuf,
    ids: std::sync::Mutex<Vec<String>>,
}

impl Default for Rcrun {
    fn default() -> Self {
        Self::new()
    }
}

impl Rcrun {
    pub fn new() -> Rcrun {
        let root = tempfile::Builder::new()
            .prefix("rcrun-root-")
            .tempdir()
            .expect("root dir");
        Rcrun::with_binary(bin("rcrun"), root)
    }

    /// Another rcrun binary (a copy, an older build) with the root `root`.
    pub fn with_binary(binary: PathBuf, root: tempfile::TempDir) -> Rcrun {
        Rcrun {
            root,
            binary,
            ids: Default::default(),
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Remembers a container for the final `delete --force`.
    pub fn track(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }

    /// A command `rcrun --root <root> <args>` with null stdin.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(self.root.path()).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs rcrun to completion, capturing output. Output goes through
    /// files, not pipes: a detached container inherits rcrun's stdio and
    /// would keep a pipe open.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut out = tempfile::tempfile().expect("stdout file");
        let mut err = tempfile::tempfile().expect("stderr file");
        let mut child = self
            .cmd(args)
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .spawn()
            .expect("spawn rcrun");
        let status = wait_or_report_hang(&mut child, args);
        let read = |f: &mut std::fs::File| {
            use std::io::{Read, Seek};
            let mut v = Vec::new();
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.read_to_end(&mut v).unwrap();
            v
        };
        Output {
            status,
            stdout: read(&mut out),
            stderr: read(&mut err),
        }
    }

    /// Runs rcrun and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rcrun {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs rcrun, asserts failure with a one-line error; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "rcrun {args:?} should fail; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "error is not one line: {err:?}"
        );
        err
    }

    /// A new unique container ID, tracked for the final `delete --force`.
    pub fn tracked_id(&self, prefix: &str) -> String {
        let id = unique_id(prefix);
        self.track(&id);
        id
    }

    /// `run -d` a container on a bundle; returns its ID (tracked).
    pub fn run_detached(&self, prefix: &str, bundle: &Bundle) -> String {
        let id = self.tracked_id(prefix);
        self.ok(&["run", "-d", "-b", bundle.path().to_str().unwrap(), &id]);
        id
    }

    /// `create` a container on a bundle (not started); returns its ID (tracked).
    pub fn create(&self, prefix: &str, bundle: &Bundle) -> String {
        let id = self.tracked_id(prefix);
        self.ok(&["create", "-b", bundle.path().to_str().unwrap(), &id]);
        id
    }

    /// `run` a container in the foreground as a child process and waits
    /// until it runs; returns its ID (tracked) and the `rcrun run` process.
    pub fn spawn_running(&self, prefix: &str, bundle: &Bundle) -> (String, Child) {
        let id = self.tracked_id(prefix);
        let child = self
            .cmd(&["run", "-b", bundle.path().to_str().unwrap(), &id])
            .spawn()
            .expect("spawn rcrun run");
        self.wait_status(&id, "running");
        (id, child)
    }

    /// `state <id>` as JSON.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state JSON")
    }

    pub fn pid(&self, id: &str) -> i32 {
        self.state(id)["pid"].as_i64().expect("pid") as i32
    }

    /// The container's status, or "" while it does not exist (yet).
    pub fn status(&self, id: &str) -> String {
        let out = self.run(&["state", id]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["status"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// Waits until the container reaches `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status(id) != status {
            assert!(Instant::now() < deadline, "{id} never became {status}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a container in the foreground and returns (exit code, stdout, stderr).
    pub fn run_fg(&self, bundle: &Bundle, id: &str) -> (i32, String, String) {
        self.track(id);
        let out = self.run(&["run", "-b", bundle.path().to_str().unwrap(), id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a container in the foreground, asserts it exits 0; returns its stdout.
    pub fn run_fg_ok(&self, bundle: &Bundle, prefix: &str) -> String {
        let (code, out, err) = self.run_fg(bundle, &unique_id(prefix));
        assert_eq!(code, 0, "stderr: {err}");
        out
    }
}

impl Drop for Rcrun {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let _ = self.cmd(&["delete", "--force", id]).output();
        }
    }
}

/// Cgroup directories a container with the default cgroups path would have.
pub fn cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(rel)];
    }
    let mut dirs = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !e.file_type().map(|t| t.is_symlink()).unwrap_or(false) {
                dirs.push(p.join(rel));
            }
        }
    }
    dirs
}

/// The directory of one controller's cgroup (v1), or the cgroup (v2).
pub fn cgroup_dir(cgroups_path: &str, controller: &str) -> PathBuf {
    let rel = cgroups_path.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.join(rel)
    } else {
        root.join(controller).join(rel)
    }
}

/// Asserts that no trace of a container is left: state, record, cgroup, or
/// processes in its cgroup.
pub fn assert_no_leftovers(rcrun: &Rcrun, id: &str, cgroups_path: &str) {
    let root = rcrun.root();
    assert!(!root.join(id).exists(), "state dir of {id} left behind");
    assert!(
        !root.join(".bundles").join(id).exists(),
        "record of {id} left behind"
    );
    for d in cgroup_dirs(cgroups_path) {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    let needle = format!("{}\n", cgroups_path);
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Ok(cg) = std::fs::read_to_string(e.path().join("cgroup")) {
                assert!(
                    !cg.lines()
                        .any(|l| format!("{}\n", l.splitn(3, ':').nth(2).unwrap_or("")) == needle),
                    "process {name} still in cgroup {cgroups_path}"
                );
            }
        }
    }
    let list = rcrun.ok(&["list", "-q"]);
    assert!(!list.lines().any(|l| l == id), "{id} still listed");
}

/// The default cgroups path rcrun gives a container without one.
pub fn default_cgroups_path(id: &str) -> String {
    format!("/rcrun/{id}")
}

/// A console socket: a unix listener that receives the pty master.
pub struct ConsoleSocket {
    pub dir: tempfile::TempDir,
    listener: std::os::unix::net::UnixListener,
}

impl Default for ConsoleSocket {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleSocket {
    pub fn new() -> ConsoleSocket {
        let (dir, listener) = listen_in_temp_dir("console.sock");
        ConsoleSocket { dir, listener }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("console.sock")
    }

    /// Accepts the runtime's connection and returns the fd it sent.
    pub fn receive(&self) -> OwnedFd {
        let (stream, _) = self.listener.accept().expect("accept");
        let (_, fds) = recv_with_fds(stream.as_raw_fd());
        fds.into_iter()
            .next()
            .expect("no fd received on the console socket")
    }
}

/// A seccomp notify listener (`linux.seccomp.listenerPath`): a unix socket
/// that receives the container's state and its seccomp notify fd.
pub struct SeccompListener {
    pub dir: tempfile::TempDir,
    listener: std::os::unix::net::UnixListener,
}

impl Default for SeccompListener {
    fn default() -> Self {
        Self::new()
    }
}

impl SeccompListener {
    pub fn new() -> SeccompListener {
        let (dir, listener) = listen_in_temp_dir("seccomp.sock");
        SeccompListener { dir, listener }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("seccomp.sock")
    }

    /// Accepts one connection; returns the state sent and the number of fds
    /// received. The fds are closed, so the pending syscall fails (ENOSYS).
    pub fn receive(&self) -> (Value, usize) {
        let (stream, _) = self.listener.accept().expect("accept");
        let (data, fds) = recv_with_fds(stream.as_raw_fd());
        let state = serde_json::from_slice(&data).expect("state JSON");
        (state, fds.len())
    }
}

/// A unix socket `name` listening in a new temp dir.
fn listen_in_temp_dir(name: &str) -> (tempfile::TempDir, std::os::unix::net::UnixListener) {
    let dir = tempfile::tempdir().expect("socket dir");
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join(name)).expect("bind");
    (dir, listener)
}

/// One message on a unix socket: its bytes and the fds that came with it.
fn recv_with_fds(sock: RawFd) -> (Vec<u8>, Vec<OwnedFd>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 8192];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::empty()).expect("recvmsg");
    let mut fds = Vec::new();
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel installed these fds for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let len = msg.bytes;
    (buf[..len].to_vec(), fds)
}

/// Reads from a pty master until `needle` shows up or the timeout passes.
pub fn read_until(master: &OwnedFd, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let mut fds = [libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll on one valid fd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
        if n <= 0 {
            continue;
        }
        // SAFETY: read into a stack buffer of the given length.
        let r = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..r as usize]);
        if String::from_utf8_lossy(&out).contains(needle) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SeccompListener {
    /// A seccomp profile that allows everything but sends `syscalls` to
    /// this listener, with `metadata` as `listenerMetadata`.
    pub fn notify_profile(&self, metadata: &str, syscalls: &[&str]) -> Value {
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "listenerPath": self.path(),
            "listenerMetadata": metadata,
            "syscalls": [{"names": syscalls, "action": "SCMP_ACT_NOTIFY"}]
        })
    }
}

/// The PID in a `--pid-file`.
pub fn read_pid(path: &Path) -> i32 {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

/// Makes `cmd` start with `gids` as its supplementary groups: what rcrun
/// inherits from its caller and must not pass on.
pub fn set_supplementary_groups(cmd: &mut Command, gids: &[u32]) {
    let gids: Vec<nix::unistd::Gid> = gids
        .iter()
        .map(|&g| nix::unistd::Gid::from_raw(g))
        .collect();
    // SAFETY: only setgroups(2) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            nix::unistd::setgroups(&gids).map_err(std::io::Error::from)
        });
    }
}

impl Rcrun {
    /// Runs `script` with `sh -e` in a private mount namespace with `$RCRUN`
    /// (rcrun with this root), `$BUNDLE` and `$ID` (tracked) set; asserts it
    /// succeeds and returns its stdout.
    pub fn in_private_mount_ns(&self, bundle: &Bundle, id: &str, script: &str) -> String {
        self.track(id);
        let rcrun = format!("{} --root {}", self.binary.display(), self.root().display());
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-ec", script])
            .env("RCRUN", rcrun)
            .env("BUNDLE", bundle.path())
            .env("ID", id)
            .stdin(Stdio::null())
            .output()
            .expect("run unshare");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A host directory holding `bad`, an executable script whose interpreter
/// does not exist: its execve fails only in the container's process.
pub fn script_with_a_missing_interpreter() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "#!/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Polls `done` every 50 ms until it holds or `timeout` has passed; tells
/// whether it held.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until process `pid` has a handler for each of `signals` (its
/// `SigCgt`). A container's PID 1 drops the signals it has no handler for,
/// so a test that signals a shell's `trap` must wait for the trap first.
pub fn wait_for_signal_handlers(pid: i32, signals: &[i32]) {
    let want: u64 = signals
        .iter()
        .map(|s| 1u64 << (s - 1))
        .fold(0, |a, b| a | b);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(0);
        if caught & want == want {
            return;
        }
        if Instant::now() >= deadline {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_else(|e| format!("(unreadable: {e})"));
            let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
            panic!(
                "process {pid} has no handlers for signals {signals:?}; its status:\n{status}\
                 its kernel stack:\n{stack}processes:\n{}",
                hang_report()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long one rcrun command may take before the test reports it as hung:
/// `RCRUN_TEST_TIMEOUT` seconds, default 300 (the emulated cgroup v2 VM is
/// slow, but not that slow).
fn command_timeout() -> Duration {
    let secs = std::env::var("RCRUN_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// Waits for an rcrun command. One that hangs fails the test with what the
/// machine's processes were waiting in, instead of hanging the whole run.
fn wait_or_report_hang(child: &mut Child, args: &[&str]) -> std::process::ExitStatus {
    let deadline = Instant::now() + command_timeout();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("wait for rcrun") {
            return status;
        }
        if Instant::now() >= deadline {
            let report = hang_report();
            let _ = child.kill();
            let _ = child.wait();
            panic!("rcrun {args:?} hung; processes:\n{report}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Every process with what it waits in (wchan) and, for the runtime's own,
/// its kernel stack.
fn hang_report() -> String {
    let mut report = String::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return report;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).unwrap_or_default();
        let cmdline = read("cmdline").replace('\0', " ");
        if cmdline.is_empty() {
            continue;
        }
        let comm = read("comm");
        report.push_str(&format!(
            "{name} {} [{}] {}\n",
            comm.trim(),
            read("wchan"),
            cmdline.trim()
        ));
        if comm.starts_with("rcrun") || comm.starts_with("youki") {
            for line in read("stack").lines().take(12) {
                report.push_str(&format!("    {line}\n"));
            }
        }
    }
    report
}
