//! A container cannot write the rcrun binary (CVE-2019-5736). Its command
//! can make the kernel run rcrun's own image inside the container
//! (`#!/proc/self/exe`); the container's root then holds that image through
//! `/proc/PID/exe` and, once no rcrun runs, tries to append to it. rcrun
//! runs from a read-only overlayfs image of itself (or, where overlayfs
//! refuses, a sealed memfd copy), so the write must fail and the binary
//! stay as it was.
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rcrun_tests::bins::bin;
use rcrun_tests::bundle::{default_spec, poll_until, Rcrun};
use rcrun_tests::fixtures::busybox_rootfs;

/// PID 1 of the attacking container: waits for a process that runs
/// anything but busybox, holds its binary through /proc/PID/exe, and then
/// tries, for up to 10 s (while rcrun still runs the kernel says "busy"),
/// to append one byte to it.
const ATTACK: &str = r#"
while :; do
  for p in /proc/[0-9]*; do
    l=$(readlink $p/exe 2>/dev/null) || continue
    [ "$l" = /bin/busybox ] && continue
    exec 3<$p/exe 2>/dev/null && break 2
  done
done
echo "grabbed $l"
i=0
while [ $i -lt 100 ]; do
  if err=$( (printf x >> /proc/self/fd/3) 2>&1 ); then echo WRITTEN; exit 0; fi
  case "$err" in *busy*) ;; *) echo "refused: $err"; exit 0;; esac
  i=$((i+1)); sleep 0.1
done
echo "still busy"
"#;

#[test]
fn a_container_cannot_write_rcrun_through_its_read_only_image() {
    let binary_dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let outcome = attack(binary_dir.path(), root);
    assert!(
        outcome.contains("refused: ") && outcome.contains("Read-only file system"),
        "expected the read-only overlayfs image to refuse the write:\n{outcome}"
    );
}

#[test]
fn a_container_cannot_write_rcrun_through_its_sealed_memfd_copy() {
    let binary_dir = tempfile::tempdir().unwrap();
    // A state root inside the binary's directory: overlayfs refuses layers
    // that overlap, so rcrun falls back to the memfd copy.
    let root = tempfile::tempdir_in(binary_dir.path()).unwrap();
    let outcome = attack(binary_dir.path(), root);
    assert!(
        outcome.contains("grabbed /memfd:rcrun"),
        "expected rcrun to run from its memfd copy:\n{outcome}"
    );
    assert!(
        outcome.contains("refused: "),
        "expected the sealed copy to refuse the write:\n{outcome}"
    );
}

/// Runs the attack against a copy of rcrun in `binary_dir`, with state in
/// `root`; checks that the attack reached rcrun's image and that the copy
/// did not change, and returns what the attacker reported.
fn attack(binary_dir: &Path, root: tempfile::TempDir) -> String {
    let binary = binary_dir.join("rcrun");
    std::fs::copy(bin("rcrun"), &binary).unwrap();
    let size = std::fs::metadata(&binary).unwrap().len();
    let rootfs = tempfile::tempdir().unwrap();
    attacker_rootfs(rootfs.path(), &binary);
    let bundle = tempfile::tempdir().unwrap();
    // The attacker is the container's root with runc's default spec's
    // three capabilities and no new privileges: owning the binary is enough.
    let spec = default_spec(rootfs.path(), &["sh", "-c", ATTACK]);
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();

    let rcrun = Rcrun::with_binary(binary.clone(), root);
    let id = rcrun.tracked_id("sealed");
    let output = tempfile::NamedTempFile::new().unwrap();
    let status = rcrun
        .cmd(&["create", "--bundle", bundle.path().to_str().unwrap(), &id])
        .stdout(output.reopen().unwrap())
        .stderr(output.reopen().unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "create failed: {}", read(output.path()));
    assert!(rcrun.cmd(&["start", &id]).status().unwrap().success());

    // `rcrun --help` blocks writing to a full pipe: the attacker has all
    // the time it needs to find the process.
    let (help_out, help_in) = full_pipe();
    let mut exec = rcrun
        .cmd(&["exec", &id, "/evil"])
        .stdout(Stdio::from(help_in))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let grabbed = poll_until(Duration::from_secs(30), || {
        read(output.path()).contains("grabbed")
    });
    assert!(
        grabbed,
        "the attacker never saw rcrun's image: {}",
        read(output.path())
    );
    drain(help_out);
    exec.wait().unwrap();
    let finished = poll_until(Duration::from_secs(30), || {
        let out = read(output.path());
        out.contains("refused") || out.contains("WRITTEN") || out.contains("still busy")
    });
    assert!(
        finished,
        "the attacker did not finish: {}",
        read(output.path())
    );

    let outcome = read(output.path());
    assert!(
        !outcome.contains("WRITTEN"),
        "the container wrote the rcrun binary:\n{outcome}"
    );
    assert_eq!(
        std::fs::metadata(&binary).unwrap().len(),
        size,
        "the rcrun binary changed:\n{outcome}"
    );
    outcome
}

/// A copy of the busybox rootfs with what a dynamically linked rcrun needs
/// to start (its loader and libraries, as `ldd` lists them), and `/evil`,
/// a script whose interpreter is the process's own binary.
fn attacker_rootfs(rootfs: &Path, binary: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", busybox_rootfs().display()))
        .arg(rootfs)
        .status()
        .unwrap();
    assert!(status.success(), "copy the busybox rootfs");
    let ldd = Command::new("ldd").arg(binary).output().expect("run ldd");
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let target = rootfs.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(lib, &target).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
    let evil = rootfs.join("evil");
    std::fs::write(&evil, "#!/proc/self/exe --help\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A pipe whose buffer is already full: (read end, write end).
fn full_pipe() -> (OwnedFd, OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    fcntl(write_end.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let chunk = [b'.'; 4096];
    while nix::unistd::write(&write_end, &chunk).is_ok() {}
    fcntl(write_end.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty())).unwrap();
    (read_end, write_end)
}

fn drain(read_end: OwnedFd) {
    let mut file = std::fs::File::from(read_end);
    let mut sink = Vec::new();
    file.read_to_end(&mut sink).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
