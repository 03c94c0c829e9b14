//! `rcrun exec` into containers with their own user namespace: the process
//! joins it (and every other namespace and the cgroup of the container),
//! has the container's ids and capabilities there, and nothing of host root.
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use rcrun_tests::bundle::{
    read_pid, set_supplementary_groups, Bundle, ConsoleSocket, Rcrun, SeccompListener,
};
use serde_json::{json, Value};

/// Host ids of the container's ids 0..65536.
const HOST_ID: u32 = 100000;

/// A bundle running `args` in a user namespace that maps container ids
/// 0..65536 to host ids 100000.., plus cgroup and time namespaces.
fn userns_bundle(args: &[&str]) -> Bundle {
    Bundle::new(args).edit(|spec| {
        let ns = spec["linux"]["namespaces"].as_array_mut().unwrap();
        ns.push(json!({"type": "user"}));
        ns.push(json!({"type": "cgroup"}));
        ns.push(json!({"type": "time"}));
        let map = json!([{"containerID": 0, "hostID": HOST_ID, "size": 65536}]);
        spec["linux"]["uidMappings"] = map.clone();
        spec["linux"]["gidMappings"] = map;
    })
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

fn proc_status(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

/// A process we started (detached), killed by PID when the test ends.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a PID this test started.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

/// `rcrun exec <options> --pid-file <bundle>/exec.pid <id> <args>` of a
/// process that stays (`options` detach it); its PID, killed at drop.
fn exec_detached(r: &Rcrun, b: &Bundle, options: &[&str], id: &str, args: &[&str]) -> KillOnDrop {
    let pid_file = b.path().join("exec.pid");
    let mut exec = vec!["exec"];
    exec.extend_from_slice(options);
    exec.extend_from_slice(&["--pid-file", pid_file.to_str().unwrap(), id]);
    exec.extend_from_slice(args);
    r.ok(&exec);
    KillOnDrop(read_pid(&pid_file))
}

/// What execs left in the container's state directory (sockets, links).
fn exec_leftovers(r: &Rcrun, id: &str) -> Vec<String> {
    std::fs::read_dir(r.root().join(id))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("exec-"))
        .collect()
}

#[test]
fn exec_runs_with_the_containers_ids_in_its_user_namespace() {
    let r = Rcrun::new();
    let b = userns_bundle(&["sleep", "1000"]);
    let id = r.run_detached("uxids", &b);
    let init = r.pid(&id);
    let want_ns = std::fs::read_link(format!("/proc/{init}/ns/user")).unwrap();

    let out = r.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "id -u; id -g; readlink /proc/self/ns/user; cat /proc/self/uid_map /proc/self/gid_map",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["0", "0", want_ns.to_str().unwrap()], "{out}");
    for map in &lines[3..5] {
        let fields: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(fields, ["0", "100000", "65536"], "{out}");
    }

    // Another user of the container is that user's host id mapped.
    let out = r.ok(&[
        "exec",
        "--user",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["1000", "1000"]);

    // Seen from the host, the process runs as the mapped ids.
    let exec = exec_detached(
        &r,
        &b,
        &["-d", "--user", "1000:1000"],
        &id,
        &["sleep", "1000"],
    );
    let pid = exec.0;
    let status = proc_status(pid);
    let host = (HOST_ID + 1000).to_string();
    assert_eq!(
        status_field(&status, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [host.as_str(); 4]
    );
    assert_eq!(
        status_field(&status, "Gid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [host.as_str(); 4]
    );
    assert_eq!(status_field(&status, "Groups"), "", "host groups leaked");
}

#[test]
fn detached_exec_is_in_every_namespace_and_the_cgroup_of_the_container() {
    let r = Rcrun::new();
    let b = userns_bundle(&["sleep", "1000"]);
    let id = r.run_detached("uxns", &b);
    let init = r.pid(&id);
    let exec = exec_detached(&r, &b, &["--detach"], &id, &["sleep", "1000"]);
    let pid = exec.0;
    assert_ne!(pid, init);
    for ns in ["user", "pid", "net", "ipc", "uts", "mnt", "cgroup", "time"] {
        let want = std::fs::read_link(format!("/proc/{init}/ns/{ns}")).unwrap();
        let got = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(got, want, "{ns} namespace");
    }
    let cgroup = |p: i32| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cgroup(pid), cgroup(init));
    assert!(
        cgroup(pid).contains(&format!("/rcrun/{id}\n")),
        "{}",
        cgroup(pid)
    );
    let pids: Vec<i32> = serde_json::from_str(&r.ok(&["ps", "-f", "json", &id])).unwrap();
    assert!(pids.contains(&pid), "{pids:?} lacks {pid}");
    // Inside, it is a process of the container's PID namespace.
    let nspid = status_field(&proc_status(pid), "NSpid");
    assert_eq!(nspid.split_whitespace().count(), 2, "{nspid}");
}

#[test]
fn exit_codes_and_errors_pass_through() {
    let r = Rcrun::new();
    let b = userns_bundle(&["sleep", "1000"]);
    let id = r.run_detached("uxexit", &b);
    let code = |script: &str| r.run(&["exec", &id, "sh", "-c", script]).status.code();
    assert_eq!(code("exit 0"), Some(0));
    assert_eq!(code("exit 7"), Some(7));
    assert_eq!(code("kill -9 $$"), Some(137));
    let err = r.fails(&["exec", &id, "no-such-command"]);
    assert!(err.contains("no-such-command"), "{err}");
    // The failed exec left no socket or link behind in the state directory.
    let leftovers = exec_leftovers(&r, &id);
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn exec_cannot_do_what_only_host_root_may() {
    let r = Rcrun::new();
    // Host root's files on a bind mount whose owner is not mapped.
    let host = tempfile::tempdir().unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let public = host.path().join("public");
    let private = host.path().join("private");
    std::fs::write(&public, "host-data\n").unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&private, "secret\n").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();

    let b = userns_bundle(&["sleep", "1000"]).edit(|spec| {
        // Capabilities that would let host root do all of it.
        let caps = json!([
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_DAC_READ_SEARCH",
            "CAP_FOWNER",
            "CAP_SYS_ADMIN"
        ]);
        spec["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/home", "type": "bind", "source": host.path(),
            "options": ["rbind", "rw"]
        }));
    });
    let id = r.run_detached("uxroot", &b);

    let attempt = |script: &str| {
        let out = r.run(&["exec", &id, "sh", "-c", script]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Visible, and readable where "other" may read.
    assert_eq!(r.ok(&["exec", &id, "cat", "/home/public"]), "host-data\n");
    for script in [
        "echo x >> /home/public",
        "cat /home/private",
        "touch /home/new",
        "chmod 666 /home/public",
        "chown 0:0 /home/public",
    ] {
        let (code, err) = attempt(script);
        assert_ne!(code, Some(0), "{script} succeeded");
        assert!(
            err.contains("denied") || err.contains("not permitted"),
            "{script}: {err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&public).unwrap(), "host-data\n");
    let mode = std::fs::metadata(&public).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert!(!host.path().join("new").exists());

    // The same capabilities work on what the container's user namespace owns.
    let out = r.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo x > /tmp/f && chown 1000:1000 /tmp/f && chmod 600 /tmp/f && cat /tmp/f && stat -c '%u %g %a' /tmp/f",
    ]);
    assert_eq!(out, "x\n1000 1000 600\n");
}

#[test]
fn exec_gets_the_containers_capabilities_seccomp_and_no_new_privs() {
    const KEYS: &[&str] = &[
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
    ];
    for no_new_privs in [false, true] {
        let r = Rcrun::new();
        let b = userns_bundle(&["sleep", "1000"]).edit(|spec| {
            spec["process"]["noNewPrivileges"] = json!(no_new_privs);
            spec["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
            });
        });
        let id = r.run_detached("uxsec", &b);
        let init = proc_status(r.pid(&id));
        let got = r.ok(&["exec", &id, "cat", "/proc/self/status"]);
        for key in KEYS {
            assert_eq!(
                status_field(&got, key),
                status_field(&init, key),
                "{key} (noNewPrivileges {no_new_privs})"
            );
        }
        assert_eq!(status_field(&got, "Seccomp"), "2");
        let out = r.run(&["exec", &id, "mkdir", "/tmp/d"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mkdir was allowed");
        assert!(err.contains("Permission denied"), "{err}");
    }
}

#[test]
fn exec_with_a_terminal_sends_the_pty_master() {
    let r = Rcrun::new();
    let b = userns_bundle(&["sleep", "1000"]);
    let id = r.run_detached("uxtty", &b);
    let sock = ConsoleSocket::new();
    let exec = exec_detached(
        &r,
        &b,
        &[
            "-d",
            "-t",
            "--console-socket",
            sock.path().to_str().unwrap(),
        ],
        &id,
        &[
            "sh",
            "-c",
            "tty; echo uid=$(id -u); echo exec-tty-ok; sleep 5",
        ],
    );
    let master = sock.receive();
    let pid = exec.0;
    let uid = status_field(&proc_status(pid), "Uid");
    assert_eq!(uid.split_whitespace().next(), Some("100000"), "{uid}");
    let out = rcrun_tests::bundle::read_until(&master, "exec-tty-ok", Duration::from_secs(10));
    assert!(
        out.contains("exec-tty-ok") && out.contains("/dev/pts/") && out.contains("uid=0"),
        "{out:?}"
    );
    // No console link is left in the state directory.
    let links = exec_leftovers(&r, &id);
    assert!(links.is_empty(), "{links:?}");
}

#[test]
fn process_json_runs_as_its_user_in_the_user_namespace() {
    let r = Rcrun::new();
    let b = userns_bundle(&["sleep", "1000"]);
    let id = r.run_detached("uxproc", &b);
    let process = b.path().join("process.json");
    let spec: Value = json!({
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [1001]},
        "cwd": "/tmp",
        "args": ["sh", "-c", "id -u; id -G; pwd; echo $GREETING; cat /proc/self/uid_map"],
        "env": ["PATH=/bin", "GREETING=hello"]
    });
    std::fs::write(&process, serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = r.ok(&["exec", "--process", process.to_str().unwrap(), &id]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..4], ["1000", "1000 1001", "/tmp", "hello"], "{out}");
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
}

#[test]
fn exec_into_a_stopped_container_fails_cleanly() {
    let r = Rcrun::new();
    let b = userns_bundle(&["sleep", "1000"]);
    let id = r.run_detached("uxstop", &b);
    r.ok(&["kill", &id, "KILL"]);
    r.wait_status(&id, "stopped");
    let err = r.fails(&["exec", &id, "true"]);
    assert!(err.contains("stopped") || err.contains("running"), "{err}");
}

#[test]
fn foreground_exec_with_a_terminal_copies_the_pty_and_its_exit_code() {
    let r = Rcrun::new();
    let b = userns_bundle(&["sleep", "1000"]);
    let id = r.run_detached("uxfgtty", &b);
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = r
        .cmd(&[
            "exec",
            "-t",
            &id,
            "sh",
            "-c",
            "tty; echo uid=$(id -u); echo term-ok; read line; echo got:$line; exit 3",
        ])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let master = pty.master;
    let out = rcrun_tests::bundle::read_until(&master, "term-ok", Duration::from_secs(10));
    assert!(
        out.contains("term-ok") && out.contains("/dev/pts/") && out.contains("uid=0"),
        "{out:?}"
    );
    nix::unistd::write(&master, b"hello\r").unwrap();
    let out = rcrun_tests::bundle::read_until(&master, "got:hello", Duration::from_secs(10));
    assert!(out.contains("got:hello"), "{out:?}");
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn exec_does_not_pass_on_rcruns_supplementary_groups() {
    let r = Rcrun::new();
    for (prefix, b) in [
        ("uxgroups", userns_bundle(&["sleep", "1000"])),
        ("groups", Bundle::new(&["sleep", "1000"])),
    ] {
        let id = r.run_detached(prefix, &b);
        for extra in [&[][..], &["--additional-gids", "5"][..]] {
            let mut args = vec!["exec", "--user", "1000:1000"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&[&id, "grep", "^Groups:", "/proc/self/status"]);
            let mut cmd = r.cmd(&args);
            set_supplementary_groups(&mut cmd, &[4]);
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let groups = String::from_utf8_lossy(&out.stdout);
            let want = if extra.is_empty() { "" } else { "5" };
            assert_eq!(status_field(&groups, "Groups"), want, "{prefix} {extra:?}");
        }
    }
}

#[test]
fn exec_hands_its_seccomp_notify_fd_to_the_listener() {
    let r = Rcrun::new();
    let listener = SeccompListener::new();
    let b = userns_bundle(&["sleep", "1000"]).edit(|spec| {
        spec["linux"]["seccomp"] = listener.notify_profile("userns-exec", &["mkdir", "mkdirat"]);
    });
    let agent = std::thread::spawn(move || {
        let init = listener.receive();
        let exec = listener.receive();
        (init, exec)
    });
    let id = r.run_detached("uxnotify", &b);
    let pid_file = b.path().join("exec.pid");
    let out = r.run(&[
        "exec",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; mkdir /tmp/d; echo rc=$?",
    ]);
    assert!(out.status.success(), "{out:?}");
    let ((_, init_fds), (state, exec_fds)) = agent.join().unwrap();
    assert_eq!((init_fds, exec_fds), (1, 1));
    assert_eq!(state["metadata"], "userns-exec");
    assert_eq!(state["pid"], i64::from(read_pid(&pid_file)));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Seccomp:\t2\nrc=1\n");
}

#[test]
fn a_failed_exec_leaves_no_pid_file() {
    let r = Rcrun::new();
    // Its execve fails only in the new process, after the pid file was
    // written.
    let scripts = rcrun_tests::bundle::script_with_a_missing_interpreter();
    let b = userns_bundle(&["sleep", "1000"]).edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/scripts", "type": "bind",
            "source": scripts.path(), "options": ["bind", "ro"]
        }));
    });
    let id = r.run_detached("uxpidfile", &b);
    let pid_file = b.path().join("failed.pid");
    let pid_file = pid_file.to_str().unwrap();
    let exec = ["exec", "--pid-file", pid_file, &id, "/scripts/bad"];
    let err = r.fails(&exec);
    assert!(err.contains("/scripts/bad"), "{err}");
    assert!(
        !std::path::Path::new(pid_file).exists(),
        "pid file of a failed exec left behind"
    );
    assert!(
        exec_leftovers(&r, &id).is_empty(),
        "{:?}",
        exec_leftovers(&r, &id)
    );
    // One that was there before is not ours to remove.
    std::fs::write(pid_file, "1\n").unwrap();
    r.fails(&exec);
    assert!(std::path::Path::new(pid_file).exists());
}
