//! Process attributes from config.json that need a closer look: personality,
//! I/O priority, scheduler, inherited file descriptors, the session keyring,
//! recursive read-only mounts, the seccomp notify listener.
use std::io::Read;
use std::os::fd::AsRawFd;

use rcrun_tests::bundle::{
    read_pid, set_supplementary_groups, unique_id, Bundle, Rcrun, SeccompListener,
};
use serde_json::{json, Value};

fn sh(script: &str) -> Bundle {
    Bundle::new(&["sh", "-c", script])
}

#[test]
fn personality_linux32() {
    let r = Rcrun::new();
    let b = sh("uname -m").edit(|spec| {
        spec["linux"]["personality"] = json!({"domain": "LINUX32"});
    });
    let out = r.run_fg_ok(&b, "pers");
    assert_eq!(out.trim(), "i686");
}

#[test]
fn io_priority_and_scheduler() {
    let r = Rcrun::new();
    let b = sh("ionice -p $$; cut -d' ' -f41 /proc/self/stat; cut -d' ' -f19 /proc/self/stat")
        .edit(|spec| {
            spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
            spec["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
        });
    let out = r.run_fg_ok(&b, "sched");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("idle"), "{out}");
    // SCHED_BATCH is policy 3; nice 5 shows in field 19.
    assert_eq!(lines[1], "3", "{out}");
    assert_eq!(lines[2], "5", "{out}");
}

#[test]
fn preserve_fds_passes_extra_descriptors() {
    let r = Rcrun::new();
    let b = sh("cat <&3");
    let id = r.tracked_id("fds");
    let (rd, wr) = nix::unistd::pipe().unwrap();
    nix::unistd::write(&wr, b"through-fd-3\n").unwrap();
    drop(wr);
    let mut cmd = r.cmd(&[
        "run",
        "--preserve-fds",
        "1",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let raw = rd.as_raw_fd();
    // SAFETY: dup2 in the child before exec, onto fd 3.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through-fd-3\n");
}

#[test]
fn session_keyring_is_new_unless_disabled() {
    let r = Rcrun::new();
    let b = sh("grep -c _ses /proc/keys || true").edit(|spec| {
        // /proc/keys is masked in the default bundle.
        spec["linux"]["maskedPaths"] = json!([]);
        spec["process"]["capabilities"] = json!({
            "bounding": ["CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"], "permitted": ["CAP_SYS_ADMIN"]
        });
    });
    let id = unique_id("keyring");
    let (code, out, err) = r.run_fg(&b, &id);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.trim().parse::<u32>().unwrap() >= 1, "{out}");
    let id2 = r.tracked_id("nokeyring");
    let out = r.run(&[
        "run",
        "--no-new-keyring",
        "-b",
        b.path().to_str().unwrap(),
        &id2,
    ]);
    assert!(out.status.success());
    let keys = String::from_utf8_lossy(&out.stdout);
    assert!(!keys.contains(&format!("_ses.{id2}")));
}

#[test]
fn recursive_read_only_bind_mount() {
    let r = Rcrun::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    let b = sh("mount -t tmpfs tmpfs /data/sub 2>/dev/null; \
         if touch /data/sub/x 2>/dev/null; then echo sub=rw; else echo sub=ro; fi")
    .edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": src.path(),
            "options": ["rbind", "rro"]
        }));
    });
    let out = r.run_fg_ok(&b, "rro");
    assert_eq!(out.trim(), "sub=ro");
}

#[test]
fn exec_hands_its_seccomp_notify_fd_to_the_listener() {
    let r = Rcrun::new();
    let listener = SeccompListener::new();
    let b = Bundle::new(&["sleep", "1000"]).edit(|spec| {
        spec["linux"]["seccomp"] = listener.notify_profile("exec-metadata", &["mkdir", "mkdirat"]);
    });
    let agent = std::thread::spawn(move || {
        let init = listener.receive();
        let exec = listener.receive();
        (init, exec)
    });
    let id = r.run_detached("execnotify", &b);
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
    assert_eq!(state["metadata"], "exec-metadata");
    assert_eq!(state["state"]["id"], id.as_str());
    assert_eq!(state["pid"], i64::from(read_pid(&pid_file)));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Seccomp:\t2\nrc=1\n");
}

#[test]
fn seccomp_notify_sends_the_listener_fd_and_state() {
    let r = Rcrun::new();
    let listener = SeccompListener::new();
    let b = sh("mkdir /tmp/d; echo rc=$?").edit(|spec| {
        spec["linux"]["seccomp"] = listener.notify_profile("test-metadata", &["mkdir", "mkdirat"]);
    });
    let id = r.tracked_id("notify");
    let agent = std::thread::spawn(move || listener.receive());
    let mut child = r
        .cmd(&["run", "-b", b.path().to_str().unwrap(), &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (state, nfds) = agent.join().unwrap();
    assert_eq!(nfds, 1);
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], "test-metadata");
    assert_eq!(state["state"]["id"], id.as_str());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(out.trim(), "rc=1");
}

#[test]
fn oom_score_adj_below_the_callers_is_clamped_without_cap_sys_resource() {
    let r = Rcrun::new();
    let b = sh("cat /proc/self/oom_score_adj").edit(|spec| {
        spec["process"]["oomScoreAdj"] = json!(-999);
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = if cap_eff & (1 << 24) != 0 {
        -999
    } else {
        own.max(-999)
    };
    let out = r.run_fg_ok(&b, "oomadj");
    assert_eq!(out.trim(), want.to_string());
}

#[test]
fn run_in_the_foreground_with_a_terminal_copies_the_pty() {
    let r = Rcrun::new();
    let b = sh("tty; echo term-ok; read line; echo got:$line").edit(|spec| {
        spec["process"]["terminal"] = json!(true);
    });
    let id = r.tracked_id("fgtty");
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = r
        .cmd(&["run", "-b", b.path().to_str().unwrap(), &id])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let master = pty.master;
    let out =
        rcrun_tests::bundle::read_until(&master, "term-ok", std::time::Duration::from_secs(10));
    assert!(
        out.contains("term-ok") && out.contains("/dev/pts/"),
        "{out:?}"
    );
    nix::unistd::write(&master, b"hello\r").unwrap();
    let out =
        rcrun_tests::bundle::read_until(&master, "got:hello", std::time::Duration::from_secs(10));
    assert!(out.contains("got:hello"), "{out:?}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn idmapped_mount_without_ids_is_refused_naming_the_mount() {
    // `features` announces idmapped mounts (tests/runtime_idmap.rs), but an
    // `idmap` mount with no mappings of its own needs a user namespace.
    let r = Rcrun::new();
    let f: Value = serde_json::from_str(&r.ok(&["features"])).unwrap();
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
    let src = tempfile::tempdir().unwrap();
    let b = sh("true").edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/idmapped", "type": "bind", "source": src.path(),
            "options": ["bind", "idmap"]
        }));
    });
    let id = r.tracked_id("idmap");
    let err = r.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("mounts[6]") && err.contains("idmapped") && err.contains("user namespace"),
        "{err}"
    );
}

#[test]
fn rootfs_propagation_is_applied() {
    let r = Rcrun::new();
    let b = sh("awk '$5 == \"/\"' /proc/self/mountinfo").edit(|spec| {
        spec["linux"]["rootfsPropagation"] = json!("shared");
    });
    let out = r.run_fg_ok(&b, "rprop");
    assert!(out.contains("shared:"), "{out}");
}

/// Runs rcrun with a stdout pipe whose reader is gone before rcrun writes.
fn run_with_closed_stdout(r: &Rcrun, args: &[&str]) -> std::process::Output {
    let mut child = r
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rcrun");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for rcrun")
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("epipe", &b);
    for args in [
        vec!["state", id.as_str()],
        vec!["list"],
        vec!["list", "-f", "json"],
        vec!["ps", id.as_str()],
        vec!["features"],
    ] {
        let out = run_with_closed_stdout(&r, &args);
        assert!(
            out.status.success(),
            "rcrun {args:?}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "rcrun {args:?}: {out:?}");
    }
}

fn status_lines(status: &str, keys: &[&str]) -> Vec<String> {
    status
        .lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .map(String::from)
        .collect()
}

#[test]
fn exec_gets_the_containers_seccomp_capabilities_and_no_new_privs() {
    const KEYS: &[&str] = &[
        "Seccomp",
        "NoNewPrivs",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
    ];
    for no_new_privs in [false, true] {
        let r = Rcrun::new();
        let b = Bundle::new(&["sleep", "1000"]).edit(|spec| {
            spec["process"]["noNewPrivileges"] = json!(no_new_privs);
            spec["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
            });
        });
        let id = r.run_detached("execsec", &b);
        let init = std::fs::read_to_string(format!("/proc/{}/status", r.pid(&id))).unwrap();
        let want = status_lines(&init, KEYS);
        assert!(want.iter().any(|l| l.ends_with("\t2")), "{want:?}");

        let got = r.ok(&["exec", &id, "cat", "/proc/self/status"]);
        assert_eq!(
            status_lines(&got, KEYS),
            want,
            "noNewPrivileges {no_new_privs}"
        );

        // A user without capabilities is confined just the same.
        let out = r.run(&["exec", "-u", "1000:1000", &id, "mkdir", "/tmp/d"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mkdir was allowed: {err}");
        assert!(err.contains("Permission denied"), "{err}");
        let got = r.ok(&[
            "exec",
            "-u",
            "1000:1000",
            &id,
            "grep",
            "Seccomp:",
            "/proc/self/status",
        ]);
        assert!(got.trim_end().ends_with('2'), "{got}");

        // `--cap` adds to the container's set; the filter stays.
        let got = r.ok(&[
            "exec",
            "--cap",
            "CAP_NET_RAW",
            &id,
            "cat",
            "/proc/self/status",
        ]);
        assert_eq!(status_lines(&got, &["Seccomp"]), ["Seccomp:\t2"]);
        for l in &status_lines(&got, &["CapEff", "CapBnd"]) {
            let v = u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap();
            assert_ne!(v & (1 << 13), 0, "{l}");
            assert_eq!(v & (1 << 21), 0, "CAP_SYS_ADMIN left over: {l}");
        }
    }
}

#[test]
fn recursive_rootfs_propagation_values_are_accepted() {
    let r = Rcrun::new();
    for (value, want) in [
        ("rshared", Some("shared:")),
        ("rslave", None),
        ("rprivate", None),
        ("runbindable", Some("unbindable")),
    ] {
        let b = sh("awk '$5 == \"/\"' /proc/self/mountinfo").edit(|spec| {
            spec["linux"]["rootfsPropagation"] = json!(value);
        });
        let (code, out, err) = r.run_fg(&b, &unique_id("rrprop"));
        assert_eq!(code, 0, "{value}: stderr: {err}");
        assert!(out.contains(" / "), "{value}: {out}");
        if let Some(want) = want {
            assert!(out.contains(want), "{value}: {out}");
        }
    }
    let b = sh("true").edit(|spec| {
        spec["linux"]["rootfsPropagation"] = json!("sideways");
    });
    let id = r.tracked_id("rrprop");
    let err = r.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("linux.rootfsPropagation"), "{err}");
}

#[test]
fn new_network_namespace_has_loopback_up() {
    let r = Rcrun::new();
    let b = sh("ip -o link show lo");
    let out = r.run_fg_ok(&b, "lo");
    assert!(out.contains(",UP"), "{out}");
}

#[test]
fn tmpcopyup_fills_the_tmpfs_with_the_rootfs_contents() {
    let r = Rcrun::new();
    let b = sh(
        "grep -c root: /etc/passwd; awk '$5 == \"/etc\" {print $9}' /proc/self/mountinfo; \
         touch /etc/new && echo writable; ls -ld /etc/passwd | cut -c1-10",
    )
    .edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                   "options": ["tmpcopyup", "nosuid", "mode=755"]}),
        );
    });
    let out = r.run_fg_ok(&b, "copyup");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1", "tmpfs", "writable", "-rw-r--r--"],
        "{out}"
    );

    let b = sh("true").edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/mnt", "type": "bind", "source": "/tmp",
                         "options": ["rbind", "tmpcopyup"]}),
        );
    });
    let id = r.tracked_id("copyup");
    let err = r.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains("tmpcopyup") && err.contains("mounts[6]"),
        "{err}"
    );
}

#[test]
fn bind_mount_propagation_options_are_applied() {
    // SRC is a shared tmpfs in a private copy of the host's mount namespace.
    let src = tempfile::tempdir().unwrap();
    for (root_propagation, option, want_inside, want_outside) in [
        ("rshared", "rshared", "marker", "inner"),
        ("rshared", "rslave", "marker", ""),
        ("rshared", "rprivate", "", ""),
        ("rslave", "rslave", "marker", ""),
    ] {
        let r = Rcrun::new();
        let b = Bundle::new(&["sleep", "1000"]).edit(|spec| {
            spec["linux"]["rootfsPropagation"] = json!(root_propagation);
            spec["mounts"].as_array_mut().unwrap().push(
                json!({"destination": "/shared", "type": "bind", "source": src.path(),
                       "options": ["rbind", option]}),
            );
            let caps = &mut spec["process"]["capabilities"];
            for set in ["bounding", "effective", "permitted"] {
                caps[set]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("CAP_SYS_ADMIN"));
            }
        });
        let id = unique_id("bprop");
        let script = format!(
            "S={src}; mount -t tmpfs tmpfs $S; mount --make-shared $S; mkdir $S/a $S/b
             $RCRUN run -d -b $BUNDLE $ID >/dev/null
             mount -t tmpfs tmpfs $S/a; touch $S/a/marker
             echo inside=$($RCRUN exec $ID ls /shared/a)
             $RCRUN exec $ID sh -c 'mount -t tmpfs tmpfs /shared/b && touch /shared/b/inner'
             echo outside=$(ls $S/b)
             $RCRUN delete -f $ID",
            src = src.path().display()
        );
        let out = r.in_private_mount_ns(&b, &id, &script);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                format!("inside={want_inside}"),
                format!("outside={want_outside}")
            ],
            "rootfsPropagation {root_propagation}, option {option}"
        );
    }
}

/// Makes `cmd` start with SIGHUP and SIGQUIT ignored, as `nohup` or a
/// background job of a non-interactive shell starts it; an ignored signal
/// stays ignored across exec, and a shell cannot even `trap` it.
fn ignoring_hup_and_quit(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGQUIT, libc::SIG_IGN);
            Ok(())
        })
    }
}

#[test]
fn processes_start_with_no_signal_ignored() {
    // Rust ignores SIGPIPE in rcrun itself, and rcrun's caller may ignore
    // others: the container's processes start with every signal at its
    // default, as crun's do (podman's tests trap each signal).
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.tracked_id("sigign");
    // No pipes for `create`: the container would hold them open.
    let mut create = r.cmd(&["create", "-b", b.path().to_str().unwrap(), &id]);
    let created = ignoring_hup_and_quit(&mut create)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(created.success());
    r.ok(&["start", &id]);
    // The standard signals (1-31) a process ignores; glibc keeps 32 and 33
    // for itself and refuses to change them.
    let ignored = |status: &str| {
        let mask = status_lines(status, &["SigIgn"])[0]
            .split_whitespace()
            .nth(1)
            .map(|m| u64::from_str_radix(m, 16).unwrap())
            .unwrap();
        mask & 0x7fff_ffff
    };
    let mut exec = r.cmd(&["exec", &id, "cat", "/proc/self/status"]);
    let exec = ignoring_hup_and_quit(&mut exec).output().unwrap();
    assert!(exec.status.success(), "{exec:?}");
    let exec = String::from_utf8_lossy(&exec.stdout);
    assert_eq!(ignored(&exec), 0, "{exec}");
    let init = std::fs::read_to_string(format!("/proc/{}/status", r.pid(&id))).unwrap();
    assert_eq!(ignored(&init), 0, "{init}");
}

#[test]
fn the_container_does_not_get_rcruns_supplementary_groups() {
    // runc sets the container's groups even when the list is empty; rcrun's
    // own (host) groups must not leak into the container.
    let r = Rcrun::new();
    for (prefix, gids) in [("nogroups", json!([])), ("groups", json!([5]))] {
        let b = sh("grep ^Groups: /proc/self/status").edit(|spec| {
            spec["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": gids});
        });
        let id = r.tracked_id(prefix);
        let mut cmd = r.cmd(&["run", "-b", b.path().to_str().unwrap(), &id]);
        set_supplementary_groups(&mut cmd, &[4]);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let want = if gids == json!([]) {
            "Groups:"
        } else {
            "Groups:\t5"
        };
        assert_eq!(line, want, "{prefix}");
    }
}

#[test]
fn an_exec_whose_seccomp_listener_is_gone_fails_and_leaves_nothing_running() {
    let r = Rcrun::new();
    let listener = SeccompListener::new();
    let b = Bundle::new(&["sleep", "1000"]).edit(|spec| {
        spec["linux"]["seccomp"] = listener.notify_profile("gone", &["mkdir", "mkdirat"]);
    });
    let agent = std::thread::spawn(move || {
        let _ = listener.receive();
        listener
    });
    let id = r.run_detached("notifygone", &b);
    // The listener goes away (its socket with it) after the init's fd came.
    drop(agent.join().unwrap());
    let pid_file = b.path().join("exec.pid");
    let err = r.fails(&[
        "exec",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "777",
    ]);
    assert!(err.contains("exec failed"), "{err}");
    assert!(!pid_file.exists(), "the pid file of a failed exec is left");
    let procs: Vec<i32> = serde_json::from_str(&r.ok(&["ps", "--format", "json", &id])).unwrap();
    for pid in procs {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert_ne!(cmdline, b"sleep\x00777\x00", "the exec'd process runs on");
    }
}
