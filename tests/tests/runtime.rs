//! rcrun on real containers: what the process sees inside, and the
//! lifecycle commands seen from outside.
use std::time::Duration;

use rcrun_tests::bundle::{
    assert_no_leftovers, cgroup_dir, default_cgroups_path, unique_id, wait_for_signal_handlers,
    Bundle, ConsoleSocket, Rcrun,
};
use serde_json::{json, Value};

fn sh(script: &str) -> Bundle {
    Bundle::new(&["sh", "-c", script])
}

#[test]
fn run_prints_output_and_exits_with_the_containers_code() {
    let r = Rcrun::new();
    let b = sh("echo hello; exit 7");
    let id = unique_id("exit");
    let (code, out, err) = r.run_fg(&b, &id);
    assert_eq!(code, 7, "stderr: {err}");
    assert_eq!(out, "hello\n");
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn process_is_pid_1_with_hostname_and_only_loopback() {
    let r = Rcrun::new();
    let b = sh("echo pid=$$; hostname; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    let out = r.run_fg_ok(&b, "ns");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["pid=1", "rcrun-test", "lo"], "{out}");
}

#[test]
fn domainname_is_set() {
    let r = Rcrun::new();
    let b = sh("cat /proc/sys/kernel/domainname").edit(|spec| {
        spec["domainname"] = json!("example.test");
    });
    let out = r.run_fg_ok(&b, "dom");
    assert_eq!(out.trim(), "example.test");
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .trim()
}

#[test]
fn user_group_additional_gids_and_umask() {
    let r = Rcrun::new();
    let b = sh("cat /proc/self/status; touch /tmp/f; stat -c %a /tmp/f").edit(|spec| {
        spec["process"]["user"] =
            json!({"uid": 1000, "gid": 1001, "additionalGids": [20, 30], "umask": 63});
    });
    let out = r.run_fg_ok(&b, "user");
    assert_eq!(status_field(&out, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(&out, "Gid"), "1001\t1001\t1001\t1001");
    assert_eq!(status_field(&out, "Groups"), "20 30");
    // umask 077: a new file gets 0600 (touch asks for 0666).
    assert_eq!(out.lines().last().unwrap(), "600");
}

#[test]
fn capability_sets_are_what_the_config_asks() {
    let r = Rcrun::new();
    let mut b = sh("grep ^Cap /proc/self/status");
    // CAP_CHOWN = bit 0, CAP_KILL = bit 5, CAP_NET_RAW = bit 13.
    b.spec["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_KILL"]
    });
    b.spec["process"]["noNewPrivileges"] = json!(false);
    b.write();
    let bnd = format!("{:016x}", 1 | 1 << 5 | 1 << 13);
    let kill = format!("{:016x}", 1 << 5);
    // As root, execve grants the whole bounding set (the kernel's rules).
    let out = r.run_fg_ok(&b, "caps");
    assert_eq!(status_field(&out, "CapBnd"), bnd);
    assert_eq!(status_field(&out, "CapEff"), bnd);
    assert_eq!(status_field(&out, "CapInh"), kill);
    assert_eq!(status_field(&out, "CapAmb"), kill);
    // As another user, only the ambient set survives execve.
    b.spec["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.write();
    let out = r.run_fg_ok(&b, "caps");
    assert_eq!(status_field(&out, "CapBnd"), bnd);
    assert_eq!(status_field(&out, "CapEff"), kill);
    assert_eq!(status_field(&out, "CapPrm"), kill);
    assert_eq!(status_field(&out, "CapInh"), kill);
    assert_eq!(status_field(&out, "CapAmb"), kill);
}

#[test]
fn no_new_privileges_is_set() {
    let r = Rcrun::new();
    let b = sh("grep ^NoNewPrivs /proc/self/status");
    let out = r.run_fg_ok(&b, "nnp");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
}

#[test]
fn masked_paths_are_unreadable_and_readonly_paths_unwritable() {
    let r = Rcrun::new();
    let b = sh(
        "echo kcore=$(cat /proc/kcore | wc -c); echo acpi=$(ls -A /proc/acpi | wc -l); \
         if echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null; then echo sys=rw; else echo sys=ro; fi; \
         if touch /etc/newfile 2>/dev/null; then echo root=rw; else echo root=ro; fi",
    );
    let out = r.run_fg_ok(&b, "mask");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["kcore=0", "acpi=0", "sys=ro", "root=ro"],
        "{out}"
    );
}

/// What a container sees of its cgroups at /sys/fs/cgroup: a line for each
/// mount of a hierarchy (`cgroup`, or `cgroup2` at /sys/fs/cgroup itself)
/// with its mount point under /sys/fs/cgroup, the cgroup it shows,
/// whether the container's root can write there and the mount's own `ro`
/// or `rw`; on v1 whether the tmpfs
/// under them is writable and its symlinks; then /proc/self/cgroup.
const CGROUP_VIEW: &str = r#"
grep ' /sys/fs/cgroup' /proc/self/mountinfo | while read -r _ _ _ root point opts _; do
  case "$point" in /sys/fs/cgroup) [ -f "$point/cgroup.procs" ] || continue ;; esac
  if touch "$point/cgroup.procs" 2>/dev/null; then w=rw; else w=ro; fi
  echo "mount ${point#/sys/fs/cgroup} $root $w ${opts%%,*}"
done
if [ ! -f /sys/fs/cgroup/cgroup.procs ]; then
  if touch /sys/fs/cgroup/new 2>/dev/null; then echo "tmpfs rw"; else echo "tmpfs ro"; fi
  for l in /sys/fs/cgroup/*; do [ -L "$l" ] && echo "link ${l#/sys/fs/cgroup/} $(readlink "$l")"; done
fi
cat /proc/self/cgroup
"#;

/// The `cgroup` mount runc's and containerd's specs have.
fn with_cgroup_mount<'a>(options: &'a [&'a str]) -> impl FnOnce(&mut Value) + 'a {
    move |spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": options
        }));
    }
}

/// Adds a new namespace of `kind` to the spec.
fn with_namespace(kind: &str) -> impl FnOnce(&mut Value) + '_ {
    move |spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "type": kind }));
    }
}

/// The fields after `tag` of the lines of [`CGROUP_VIEW`]'s output that
/// start with it.
fn view_lines<'a>(out: &'a str, tag: &str) -> Vec<Vec<&'a str>> {
    out.lines()
        .filter_map(|l| l.strip_prefix(tag)?.strip_prefix(' '))
        .map(|l| l.split(' ').collect())
        .collect()
}

/// Whether every hierarchy mount of [`CGROUP_VIEW`]'s output is `access`
/// (`ro`, `rw`), both as tried and as mounted.
fn all_mounts_are(out: &str, access: &str) -> bool {
    let mounts = view_lines(out, "mount");
    !mounts.is_empty() && mounts.iter().all(|f| f[2] == access && f[3] == access)
}

#[test]
fn the_cgroup_mount_shows_the_containers_cgroups_as_the_mount_asks() {
    let r = Rcrun::new();
    let v1 = !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let ro = sh(CGROUP_VIEW).edit(with_cgroup_mount(&["nosuid", "noexec", "nodev", "ro"]));
    let out = r.run_fg_ok(&ro, "cgview");
    assert!(all_mounts_are(&out, "ro"), "{out}");
    if v1 {
        assert_eq!(view_lines(&out, "tmpfs"), [["ro"]], "{out}");
        // Each hierarchy shows the container's own cgroup in it
        // (`4:memory:/rcrun/<id>` at /sys/fs/cgroup/memory).
        let mounts = view_lines(&out, "mount");
        let shown = mounts.iter().find(|f| f[0] == "/memory").map(|f| f[1]);
        let own = out.lines().find_map(|l| Some(l.split_once(":memory:")?.1));
        assert!(shown.is_some() && shown == own, "{out}");
        // Co-mounted controllers are reachable by each name, as runc links
        // them (`cpu -> cpu,cpuacct`).
        let links = view_lines(&out, "link");
        for m in mounts.iter().filter(|f| f[0].contains(',')) {
            let name = &m[0][1..];
            for part in name.split(',') {
                assert!(links.contains(&vec![part, name]), "{out}");
            }
        }
    }

    // Without `ro` (a privileged container's), the container may write.
    let rw = sh(CGROUP_VIEW).edit(with_cgroup_mount(&["nosuid", "noexec", "nodev"]));
    let out = r.run_fg_ok(&rw, "cgview");
    assert!(all_mounts_are(&out, "rw"), "{out}");

    // With a cgroup namespace, libcontainer mounts the hierarchies:
    // read-only all the same.
    let ns = sh(CGROUP_VIEW)
        .edit(with_cgroup_mount(&["ro"]))
        .edit(with_namespace("cgroup"));
    let out = r.run_fg_ok(&ns, "cgview");
    assert!(all_mounts_are(&out, "ro"), "{out}");

    // And with a user namespace, where the host's cgroup files are not the
    // container root's to write anyway: the mounts say `ro`.
    let userns = sh(CGROUP_VIEW)
        .edit(with_cgroup_mount(&["ro"]))
        .edit(with_namespace("user"))
        .edit(|spec| {
            let ids = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            spec["linux"]["uidMappings"] = ids.clone();
            spec["linux"]["gidMappings"] = ids;
        });
    let out = r.run_fg_ok(&userns, "cgview");
    let mounts = view_lines(&out, "mount");
    assert!(
        !mounts.is_empty() && mounts.iter().all(|f| f[3] == "ro"),
        "{out}"
    );
}

#[test]
fn rlimits_env_and_cwd() {
    let r = Rcrun::new();
    let b = sh("ulimit -Sn; ulimit -Hn; echo $GREETING; pwd").edit(|spec| {
        spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]);
        spec["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("GREETING=hi there"));
        spec["process"]["cwd"] = json!("/tmp");
    });
    let out = r.run_fg_ok(&b, "rlim");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["123", "456", "hi there", "/tmp"]
    );
}

#[test]
fn seccomp_denied_syscall_returns_the_configured_errno() {
    let r = Rcrun::new();
    let b = sh("mkdir /tmp/d; echo rc=$?").edit(|spec| {
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        });
    });
    let (code, out, err) = r.run_fg(&b, &unique_id("seccomp"));
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.trim(), "rc=1");
    // errno 13 is EACCES.
    assert!(err.contains("Permission denied"), "stderr: {err}");
}

#[test]
fn sysctl_and_oom_score_adj() {
    let r = Rcrun::new();
    let b = sh("cat /proc/sys/net/ipv4/ip_forward; cat /proc/self/oom_score_adj").edit(|spec| {
        spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        spec["process"]["oomScoreAdj"] = json!(500);
    });
    let out = r.run_fg_ok(&b, "sysctl");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["1", "500"]);
}

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    let r = Rcrun::new();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("log");
    let b = sh("echo main >> /hooklog/log").edit(|spec| {
        let host_hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} >> {}", log.display())]});
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/hooklog", "type": "bind", "source": logdir.path(), "options": ["rbind", "rw"]
        }));
        spec["hooks"] = json!({
            "prestart": [
                {"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/state.json; echo prestart >> {}", logdir.path().display(), log.display())]},
                // Exits without reading its state: must not break the runtime.
                {"path": "/bin/true", "args": ["true"]}
            ],
            "createRuntime": [host_hook("createRuntime")],
            "createContainer": [host_hook("createContainer")],
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer >> /hooklog/log"]}],
            "poststart": [host_hook("poststart")],
            "poststop": [host_hook("poststop")]
        });
    });
    let id = unique_id("hooks");
    let (code, _, err) = r.run_fg(&b, &id);
    assert_eq!(code, 0, "stderr: {err}");
    let got = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = got.lines().collect();
    // poststart runs after the process started; it may or may not finish
    // before the process writes its line.
    let mut ordered = lines.clone();
    ordered.retain(|l| *l != "main");
    assert_eq!(
        ordered,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{got}"
    );
    assert!(lines.contains(&"main"));
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(logdir.path().join("state.json")).unwrap())
            .unwrap();
    assert_eq!(state["id"], id.as_str());
    assert!(state["pid"].as_i64().unwrap() > 0);
    assert_eq!(state["status"], "creating");
}

#[test]
fn failing_hook_fails_create_and_leaves_nothing() {
    let r = Rcrun::new();
    let b = sh("true").edit(|spec| {
        spec["hooks"] = json!({"createRuntime": [{"path": "/bin/false", "args": ["false"]}]});
    });
    let id = unique_id("badhook");
    r.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn hook_timeout_is_enforced() {
    let r = Rcrun::new();
    let b = sh("true").edit(|spec| {
        spec["hooks"] =
            json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    });
    let id = unique_id("hooktimeout");
    let start = std::time::Instant::now();
    let err = r.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "timeout not enforced"
    );
    assert!(err.contains("timeout"), "{err}");
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn create_start_state_list_and_delete() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.create("life", &b);
    let st = r.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(
        st["bundle"],
        b.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert!(st["rootfs"].as_str().unwrap().ends_with("rootfs/busybox"));
    assert!(st["created"].as_str().unwrap().ends_with('Z'));
    assert!(st.get("owner").is_some());
    assert!(st["ociVersion"].as_str().unwrap().starts_with("1."));
    let pid = st["pid"].as_i64().unwrap();
    // The init waits for `start` without running the command yet.
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!cmdline.starts_with("sleep"), "{cmdline}");

    r.ok(&["start", &id]);
    r.wait_status(&id, "running");
    let list: Value = serde_json::from_str(&r.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["owner"], "root");
    let table = r.ok(&["list"]);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with(&id));
    assert_eq!(r.ok(&["list", "-q"]).trim(), id);

    let err = r.fails(&["start", &id]);
    assert!(err.contains("running"), "{err}");
    let err = r.fails(&["delete", &id]);
    assert!(err.contains("not stopped"), "{err}");
    assert_eq!(r.status(&id), "running");

    r.ok(&["kill", &id, "KILL"]);
    r.wait_status(&id, "stopped");
    assert_eq!(r.state(&id)["pid"], 0);
    let err = r.fails(&["kill", &id]);
    assert!(err.contains("not running"), "{err}");
    let err = r.fails(&["start", &id]);
    assert!(err.contains("stopped"), "{err}");
    r.ok(&["delete", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
    assert_eq!(r.ok(&["list", "--format", "json"]).trim(), "null");
}

#[test]
fn pid_file_is_written() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.tracked_id("pidfile");
    let pf = b.path().join("init.pid");
    r.ok(&[
        "create",
        "--pid-file",
        pf.to_str().unwrap(),
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let pid: i64 = std::fs::read_to_string(&pf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, r.state(&id)["pid"].as_i64().unwrap());
}

#[test]
fn kill_takes_signal_names_and_numbers() {
    let r = Rcrun::new();
    let b = sh("trap 'exit 42' USR1; trap 'exit 43' HUP; while true; do sleep 0.05; done");
    for (sig, code) in [("USR1", 42), ("SIGUSR1", 42), ("10", 42), ("hup", 43)] {
        let (id, mut child) = r.spawn_running("sig", &b);
        // The container's PID 1 would drop a signal it has no trap for yet.
        wait_for_signal_handlers(r.pid(&id), &[libc::SIGUSR1, libc::SIGHUP]);
        r.ok(&["kill", &id, sig]);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "signal {sig}");
        assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
    }
    let err = r.fails(&["kill", "nonexistent-container", "KILL"]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn run_exits_128_plus_signal_when_killed() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let (id, mut child) = r.spawn_running("sigexit", &b);
    r.ok(&["kill", &id, "SIGKILL"]);
    assert_eq!(child.wait().unwrap().code(), Some(137));
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn run_forwards_signals_to_the_container() {
    let r = Rcrun::new();
    let b = sh("trap 'exit 44' TERM; while true; do sleep 0.05; done");
    let (id, mut child) = r.spawn_running("fwd", &b);
    wait_for_signal_handlers(r.pid(&id), &[libc::SIGTERM]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(44));
}

/// A detached container without a PID namespace (the init's death would
/// not take the others) whose shell has forked two children.
fn three_process_container(r: &Rcrun, prefix: &str) -> String {
    let b = sh("sleep 1000 & sleep 1000 & wait").edit(|spec| {
        spec["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]);
    });
    let id = r.run_detached(prefix, &b);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while processes(r, &id).len() != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            processes(r, &id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    id
}

/// The container's processes, from `ps`.
fn processes(r: &Rcrun, id: &str) -> Vec<i32> {
    serde_json::from_str(&r.ok(&["ps", "--format", "json", id])).unwrap()
}

/// Waits until no process is left in the container's cgroup.
fn wait_no_processes(r: &Rcrun, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !processes(r, id).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "processes survived kill --all: {:?}",
            processes(r, id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_all_signals_every_process() {
    let r = Rcrun::new();
    let id = three_process_container(&r, "killall");
    let cg = default_cgroups_path(&id);
    r.ok(&["kill", "--all", &id, "KILL"]);
    r.wait_status(&id, "stopped");
    wait_no_processes(&r, &id);
    r.ok(&["delete", &id]);
    assert_no_leftovers(&r, &id, &cg);
}

#[test]
fn kill_all_leaves_a_paused_container_paused_until_resumed() {
    let r = Rcrun::new();
    let id = three_process_container(&r, "killpaused");
    let cg = default_cgroups_path(&id);
    r.ok(&["pause", &id]);
    // The cgroup stays frozen: on v1 the signal waits in the frozen
    // processes until `resume`; v2 lets a fatal signal through at once, and
    // the container stops while paused.
    r.ok(&["kill", "--all", &id, "TERM"]);
    let freezer = cgroup_dir(&cg, "freezer");
    let read = |f: &str| std::fs::read_to_string(freezer.join(f)).unwrap();
    if freezer.join("freezer.state").exists() {
        assert_eq!(read("freezer.state").trim(), "FROZEN");
        assert_eq!(r.status(&id), "paused");
        assert_eq!(processes(&r, &id).len(), 3);
        r.ok(&["resume", &id]);
    } else {
        assert_eq!(read("cgroup.freeze").trim(), "1");
    }
    r.wait_status(&id, "stopped");
    wait_no_processes(&r, &id);
    r.ok(&["delete", &id]);
    assert_no_leftovers(&r, &id, &cg);
}

#[test]
fn pause_and_resume_freeze_the_cgroup() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("pause", &b);
    let cg = default_cgroups_path(&id);
    r.ok(&["pause", &id]);
    assert_eq!(r.status(&id), "paused");
    let freezer = cgroup_dir(&cg, "freezer");
    if freezer.join("freezer.state").exists() {
        assert_eq!(
            std::fs::read_to_string(freezer.join("freezer.state"))
                .unwrap()
                .trim(),
            "FROZEN"
        );
    }
    let pid = r.pid(&id);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.contains(") D ") || stat.contains(") S "), "{stat}");
    let err = r.fails(&["pause", &id]);
    assert!(err.contains("paused"), "{err}");
    r.ok(&["resume", &id]);
    assert_eq!(r.status(&id), "running");
    let err = r.fails(&["resume", &id]);
    assert!(err.contains("not paused"), "{err}");
    // A paused container can be force-deleted.
    r.ok(&["pause", &id]);
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &cg);
}

#[test]
fn exec_runs_in_the_container_with_its_options() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("exec", &b);
    let out = r.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1");
    assert_eq!(lines[1].trim(), "sleep 1000");
    assert_eq!(lines[2], "rcrun-test");

    let out = r.ok(&[
        "exec",
        "--env",
        "A=b",
        "--cwd",
        "/tmp",
        "--user",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "echo $A; pwd; id -u; id -g",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["b", "/tmp", "1000", "1000"]
    );

    let out = r.ok(&[
        "exec",
        "--cap",
        "CAP_NET_RAW",
        &id,
        "grep",
        "^CapEff",
        "/proc/self/status",
    ]);
    let eff = u64::from_str_radix(out.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_ne!(eff & (1 << 13), 0, "{out}");

    let code = r.run(&["exec", &id, "sh", "-c", "exit 5"]).status.code();
    assert_eq!(code, Some(5));

    let pf = b.path().join("exec.pid");
    r.ok(&[
        "exec",
        "-d",
        "--pid-file",
        pf.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    let pid: i32 = std::fs::read_to_string(&pf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids: Vec<i32> = serde_json::from_str(&r.ok(&["ps", "-f", "json", &id])).unwrap();
    assert!(pids.contains(&pid), "{pids:?} lacks {pid}");

    let process = b.path().join("process.json");
    std::fs::write(
        &process,
        serde_json::to_vec(&json!({
            "user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh", "-c", "echo from-process-json"],
            "env": ["PATH=/bin"]
        }))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        r.ok(&["exec", "--process", process.to_str().unwrap(), &id]),
        "from-process-json\n"
    );

    let err = r.fails(&["exec", &id, "no-such-command"]);
    assert!(err.contains("no-such-command"), "{err}");
}

#[test]
fn ps_lists_the_containers_processes() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("ps", &b);
    let pid = r.pid(&id);
    let table = r.ok(&["ps", &id]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().contains("PID"));
    let row = lines.next().unwrap();
    assert!(
        row.contains(&pid.to_string()) && row.contains("sleep 1000"),
        "{table}"
    );
    let json: Vec<i32> = serde_json::from_str(&r.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(json, [pid]);
    let custom = r.ok(&["ps", &id, "-o", "pid,comm"]);
    assert!(
        custom
            .lines()
            .any(|l| l.trim().starts_with(&pid.to_string())),
        "{custom}"
    );
}

#[test]
fn update_changes_the_memory_limit() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("update", &b);
    let cg = default_cgroups_path(&id);
    r.ok(&["update", "--memory", "64m", &id]);
    let mem = cgroup_dir(&cg, "memory");
    let limit_file = if mem.join("memory.max").exists() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let read = |f: &str| {
        std::fs::read_to_string(mem.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read(limit_file), (64 << 20).to_string());

    let res = b.path().join("res.json");
    std::fs::write(
        &res,
        r#"{"memory": {"limit": 100663296}, "pids": {"limit": 77}}"#,
    )
    .unwrap();
    r.ok(&["update", "-r", res.to_str().unwrap(), &id]);
    assert_eq!(read(limit_file), (96 << 20).to_string());
    let pids = cgroup_dir(&cg, "pids");
    assert_eq!(
        std::fs::read_to_string(pids.join("pids.max"))
            .unwrap()
            .trim(),
        "77"
    );
    r.ok(&["update", "--pids-limit", "88", "--cpu-share", "512", &id]);
    assert_eq!(
        std::fs::read_to_string(pids.join("pids.max"))
            .unwrap()
            .trim(),
        "88"
    );
    // Earlier settings stay.
    assert_eq!(read(limit_file), (96 << 20).to_string());

    // -1 lifts a limit.
    r.ok(&["update", "--pids-limit", "-1", &id]);
    assert_eq!(
        std::fs::read_to_string(pids.join("pids.max"))
            .unwrap()
            .trim(),
        "max"
    );
    let err = r.fails(&["update", "--memory", "lots", &id]);
    assert!(err.contains("memory"), "{err}");
}

#[test]
fn events_stats_reports_the_cgroup() {
    let r = Rcrun::new();
    let b = sh("dd if=/dev/zero of=/tmp/fill bs=1M count=8 2>/dev/null; sleep 1000");
    let id = r.run_detached("events", &b);
    // Poll until the 8 MiB file is written (slow machines take a while).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = r.ok(&["events", "--stats", &id]);
        let ev: Value = serde_json::from_str(&out).unwrap();
        let usage = ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
        if usage >= 8 << 20 || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(out.lines().count(), 1);
    let ev: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    let data = &ev["data"];
    let usage = data["memory"]["usage"]["usage"].as_u64().unwrap();
    // The 8 MiB file lives in the container's tmpfs, charged to its cgroup.
    assert!(usage >= 8 << 20, "memory usage {usage}");
    assert!(data["pids"]["current"].as_u64().unwrap() >= 1);
    assert!(data["cpu"]["usage"]["total"].as_u64().unwrap() > 0);

    // Without --stats: a stream at the interval.
    let mut child = r
        .cmd(&["events", "--interval", "100ms", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        let ev: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(ev["type"], "stats");
    }
    r.ok(&["kill", &id, "KILL"]);
    // The stream ends when the container stops.
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn console_socket_receives_the_pty_master() {
    let r = Rcrun::new();
    let b = sh("tty; echo console-ok; sleep 1000").edit(|spec| {
        spec["process"]["terminal"] = json!(true);
    });
    let sock = ConsoleSocket::new();
    let id = r.tracked_id("tty");
    r.ok(&[
        "create",
        "--console-socket",
        sock.path().to_str().unwrap(),
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let master = sock.receive();
    r.ok(&["start", &id]);
    let out = rcrun_tests::bundle::read_until(&master, "console-ok", Duration::from_secs(10));
    assert!(out.contains("console-ok"), "{out:?}");
    assert!(
        out.contains("/dev/pts/") || out.contains("/dev/console"),
        "{out:?}"
    );
    // Without a console socket, a terminal container cannot be created detached.
    let err = r.fails(&[
        "create",
        "-b",
        b.path().to_str().unwrap(),
        &unique_id("tty2"),
    ]);
    assert!(err.contains("console-socket"), "{err}");
}

#[test]
fn exec_with_tty_sends_the_pty_master() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("exectty", &b);
    let sock = ConsoleSocket::new();
    r.ok(&[
        "exec",
        "-d",
        "-t",
        "--console-socket",
        sock.path().to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "tty; echo exec-tty-ok; sleep 5",
    ]);
    let master = sock.receive();
    let out = rcrun_tests::bundle::read_until(&master, "exec-tty-ok", Duration::from_secs(10));
    assert!(
        out.contains("exec-tty-ok") && out.contains("/dev/pts/"),
        "{out:?}"
    );
}

#[test]
fn delete_force_removes_a_running_container() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("force", &b);
    let pid = r.pid(&id);
    r.ok(&["delete", "--force", &id]);
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true),
        "init {pid} survived"
    );
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn created_container_can_be_deleted_and_its_init_dies() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.create("crdel", &b);
    r.ok(&["delete", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn run_keep_leaves_a_stopped_container() {
    let r = Rcrun::new();
    let b = sh("exit 0");
    let id = r.tracked_id("keep");
    r.ok(&["run", "--keep", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(r.status(&id), "stopped");
    r.ok(&["delete", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn absolute_and_relative_cgroups_paths() {
    let r = Rcrun::new();
    let id = unique_id("cgpath");
    let mut b = Bundle::new(&["sleep", "1000"]);
    let abs = format!("/rcrun-test-abs/{id}");
    b.spec["linux"]["cgroupsPath"] = json!(abs);
    b.write();
    r.track(&id);
    r.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    let pid = r.pid(&id);
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.lines().any(|l| l.ends_with(&abs)), "{own}");
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &abs);
    for d in rcrun_tests::bundle::cgroup_dirs("/rcrun-test-abs") {
        let _ = std::fs::remove_dir(d);
    }

    let id = unique_id("cgrel");
    b.spec["linux"]["cgroupsPath"] = json!(format!("rel/{id}"));
    b.write();
    r.track(&id);
    r.ok(&["run", "-d", "-b", b.path().to_str().unwrap(), &id]);
    let pid = r.pid(&id);
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want = format!("/rcrun/rel/{id}");
    assert!(own.lines().any(|l| l.ends_with(&want)), "{own}");
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &want);
    // The parent is shared by parallel runs: remove it only if empty.
    for d in rcrun_tests::bundle::cgroup_dirs("/rcrun/rel") {
        let _ = std::fs::remove_dir(d);
    }
}

#[test]
fn joins_a_network_namespace_by_path() {
    let r = Rcrun::new();
    // A namespace held by a first container, joined by a second.
    let holder = Bundle::new(&["sleep", "1000"]);
    let hid = r.run_detached("netholder", &holder);
    let hpid = r.pid(&hid);
    let want = std::fs::read_link(format!("/proc/{hpid}/ns/net")).unwrap();
    let b = sh("readlink /proc/self/ns/net").edit(|spec| {
        spec.as_object_mut().unwrap().remove("hostname");
        spec["linux"]["namespaces"] = json!([
            {"type": "pid"}, {"type": "mount"},
            {"type": "network", "path": format!("/proc/{hpid}/ns/net")}
        ]);
    });
    let out = r.run_fg_ok(&b, "netjoin");
    assert_eq!(out.trim(), want.to_str().unwrap());
}

#[test]
fn user_namespace_maps_ids() {
    let r = Rcrun::new();
    let b = sh("cat /proc/self/uid_map; id -u").edit(|spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let out = r.run_fg_ok(&b, "userns");
    let map: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"]);
    assert_eq!(out.lines().nth(1), Some("0"));
}

#[test]
fn cgroup_and_time_namespaces() {
    let r = Rcrun::new();
    let b =
        sh("cat /proc/self/cgroup | grep -c ':/$'; cat /proc/uptime | cut -d. -f1").edit(|spec| {
            let ns = spec["linux"]["namespaces"].as_array_mut().unwrap();
            ns.push(json!({"type": "cgroup"}));
            ns.push(json!({"type": "time"}));
            spec["linux"]["timeOffsets"] =
                json!({"boottime": {"secs": 86400 * 400, "nanosecs": 0}});
        });
    let out = r.run_fg_ok(&b, "cgtime");
    let lines: Vec<&str> = out.lines().collect();
    // In its own cgroup namespace the container sees its cgroups as roots.
    assert!(lines[0].parse::<u32>().unwrap() >= 1, "{out}");
    // Boot time is shifted by 400 days.
    assert!(lines[1].parse::<u64>().unwrap() >= 86400 * 400, "{out}");
}

#[test]
fn devices_from_the_config_are_created() {
    let r = Rcrun::new();
    let script = "ls -l /dev/null /dev/zero /dev/mydev | awk '{print $1, $5, $6}'; \
                  head -c 4 /dev/zero | wc -c";
    let b = sh(script).edit(|spec| {
        spec["linux"]["devices"] = json!([
            {"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0}
        ]);
        spec["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}));
    });
    let out = r.run_fg_ok(&b, "dev");
    assert!(out.contains("crw-rw-rw- 1, 3"), "{out}");
    assert_eq!(out.lines().last(), Some("4"));
}

#[test]
fn bind_mounts_with_options_and_propagation() {
    let r = Rcrun::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("file"), "shared-content\n").unwrap();
    let b = sh(
        "cat /data/file; if touch /data/new 2>/dev/null; then echo rw; else echo ro; fi; \
         grep ' /data ' /proc/self/mountinfo",
    )
    .edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": src.path(),
            "options": ["rbind", "ro", "nosuid", "nodev", "rprivate"]
        }));
    });
    let out = r.run_fg_ok(&b, "bind");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "shared-content");
    assert_eq!(lines[1], "ro");
    assert!(lines[2].contains("ro,nosuid,nodev"), "{out}");
}

#[test]
fn features_and_spec_commands() {
    let r = Rcrun::new();
    let f: Value = serde_json::from_str(&r.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["hooks"]
        .as_array()
        .unwrap()
        .contains(&json!("createRuntime")));
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("user")));
    assert_eq!(f["linux"]["cgroup"]["systemd"], false);
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);

    let dir = tempfile::tempdir().unwrap();
    r.ok(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    let spec: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], json!(["sh"]));
    assert_eq!(spec["root"]["path"], "rootfs");
    let err = r.fails(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert!(err.contains("exists"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    r.ok(&[
        "spec",
        "--rootless",
        "--bundle",
        dir.path().to_str().unwrap(),
    ]);
    let spec: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert!(spec["linux"]["uidMappings"].is_array());
    assert!(!spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!({"type": "network"})));
}

#[test]
fn no_pivot_still_confines_the_root() {
    let r = Rcrun::new();
    let b = sh("ls /; test -e /bin/busybox && echo ok");
    let id = r.tracked_id("nopivot");
    let out = r.run(&["run", "--no-pivot", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.ends_with("ok\n"), "{stdout}");
    assert!(!stdout.contains("work"), "host root visible: {stdout}");
}
