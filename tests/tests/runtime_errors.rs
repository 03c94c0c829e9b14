//! Bad input to rcrun: each case fails with one line naming the problem,
//! exits non-zero, and leaves nothing behind.
use rcrun_tests::bundle::{assert_no_leftovers, default_cgroups_path, unique_id, Bundle, Rcrun};
use serde_json::{json, Value};

/// `create` on the bundle fails with a message containing `want`, and
/// nothing of the container remains.
fn create_fails(r: &Rcrun, b: &Bundle, want: &str) {
    let id = r.tracked_id("bad");
    let err = r.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(
        err.contains(want),
        "error {err:?} does not mention {want:?}"
    );
    assert_no_leftovers(r, &id, &default_cgroups_path(&id));
}

#[test]
fn missing_bundle() {
    let r = Rcrun::new();
    let id = unique_id("nobundle");
    let err = r.fails(&["create", "-b", "/nonexistent/bundle", &id]);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn bundle_without_config() {
    let r = Rcrun::new();
    let dir = tempfile::tempdir().unwrap();
    let id = unique_id("noconfig");
    let err = r.fails(&["create", "-b", dir.path().to_str().unwrap(), &id]);
    assert!(err.contains("config.json"), "{err}");
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn malformed_config_json() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]);
    std::fs::write(b.path().join("config.json"), "{\"ociVersion\": \"1.0.2\", ").unwrap();
    create_fails(&r, &b, "config.json");
}

#[test]
fn invalid_field_is_named() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["process"]["user"]["uid"] = json!("root");
    });
    create_fails(&r, &b, "process.user.uid");

    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "bogus"}]);
    });
    create_fails(&r, &b, "linux.namespaces");

    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["process"]["cwd"] = json!("relative/dir");
    });
    create_fails(&r, &b, "process.cwd");

    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["process"]["args"] = json!([]);
    });
    create_fails(&r, &b, "process.args");

    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]);
    });
    create_fails(&r, &b, "process.rlimits");

    // The hierarchy's root, or the cgroup above every rcrun container:
    // their teardown would reach other containers' processes.
    for path in ["/", ".", "./", "/."] {
        let b = Bundle::new(&["true"]).edit(|spec| {
            spec["linux"]["cgroupsPath"] = json!(path);
        });
        create_fails(&r, &b, "linux.cgroupsPath");
    }
}

#[test]
fn rlimit_above_the_runtimes_own_hard_limit_is_reported() {
    let r = Rcrun::new();
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
    let has_sys_resource = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap() & (1 << 24) != 0)
        .unwrap();
    let want = cur.rlim_max + 1;
    let b = Bundle::new(&["sh", "-c", "ulimit -Hn"]).edit(|spec| {
        spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": want}]);
    });
    if has_sys_resource {
        let id = unique_id("rlimit");
        let (code, out, err) = r.run_fg(&b, &id);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), want.to_string());
    } else {
        create_fails(&r, &b, "CAP_SYS_RESOURCE");
    }
}

#[test]
fn unknown_oci_version() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["ociVersion"] = json!("2.0.0");
    });
    create_fails(&r, &b, "ociVersion");
}

#[test]
fn missing_rootfs() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["root"]["path"] = json!("/nonexistent/rootfs");
    });
    create_fails(&r, &b, "root.path");
}

#[test]
fn command_not_in_rootfs() {
    let r = Rcrun::new();
    let b = Bundle::new(&["no-such-binary", "arg"]);
    create_fails(&r, &b, "no-such-binary");
    let b = Bundle::new(&["/bin/no-such-binary"]);
    create_fails(&r, &b, "no-such-binary");
    // Also through `run`, which must not leave a stopped container either.
    let id = unique_id("norun");
    let (code, _, err) = r.run_fg(&Bundle::new(&["no-such-binary"]), &id);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-binary"), "{err}");
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn missing_mount_namespace_is_refused() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["linux"]["namespaces"] = json!([{"type": "pid"}]);
    });
    create_fails(&r, &b, "mount namespace");
}

#[test]
fn joining_a_missing_namespace_path() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["linux"]["namespaces"] = json!([
            {"type": "mount"},
            {"type": "network", "path": "/proc/999999999/ns/net"}
        ]);
        spec.as_object_mut().unwrap().remove("hostname");
    });
    create_fails(&r, &b, "/proc/999999999/ns/net");
}

#[test]
fn duplicate_id_keeps_the_first_container() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("dup", &b);
    let pid = r.pid(&id);
    let err = r.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("exists"), "{err}");
    let err = r.fails(&["run", "-b", b.path().to_str().unwrap(), &id]);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(r.status(&id), "running");
    assert_eq!(r.pid(&id), pid);
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn bad_ids_are_refused() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]);
    let long = "x".repeat(1025);
    for id in [
        "a/b",
        "..",
        "../escape",
        "a..b",
        long.as_str(),
        "sp ace",
        "",
    ] {
        let err = r.fails(&["create", "-b", b.path().to_str().unwrap(), id]);
        assert!(err.contains("container id"), "{id:?}: {err}");
        for cmd in ["state", "delete", "kill"] {
            let err = r.fails(&[cmd, id]);
            assert!(err.contains("container id"), "{cmd} {id:?}: {err}");
        }
    }
    let entries: Vec<_> = std::fs::read_dir(r.root())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        entries.iter().all(|e| e == ".bundles"),
        "root has {entries:?}"
    );
    assert!(!r.root().parent().unwrap().join("escape").exists());
}

#[test]
fn operations_on_a_missing_container() {
    let r = Rcrun::new();
    for args in [
        vec!["state", "ghost"],
        vec!["start", "ghost"],
        vec!["kill", "ghost"],
        vec!["delete", "ghost"],
        vec!["pause", "ghost"],
        vec!["resume", "ghost"],
        vec!["ps", "ghost"],
        vec!["exec", "ghost", "true"],
        vec!["events", "--stats", "ghost"],
        vec!["update", "--memory", "1m", "ghost"],
    ] {
        let err = r.fails(&args);
        assert!(err.contains("does not exist"), "{args:?}: {err}");
    }
}

#[test]
fn start_twice_and_kill_stopped() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]);
    let id = r.create("twice", &b);
    r.ok(&["start", &id]);
    r.wait_status(&id, "stopped");
    let err = r.fails(&["start", &id]);
    assert!(err.contains("stopped"), "{err}");
    let err = r.fails(&["kill", &id, "TERM"]);
    assert!(err.contains("not running"), "{err}");
    r.ok(&["delete", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn delete_of_running_needs_force() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("nodelete", &b);
    let err = r.fails(&["delete", &id]);
    assert!(err.contains("not stopped"), "{err}");
    assert_eq!(r.status(&id), "running");
    r.ok(&["delete", "-f", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
    // Deleting again: the container is gone, and says so; forcing it
    // succeeds, as runc's does, so that a cleanup can be repeated.
    let err = r.fails(&["delete", &id]);
    assert!(err.contains("does not exist"), "{err}");
    r.ok(&["delete", "--force", &id]);
}

#[test]
fn a_state_directory_without_state_is_removed_by_delete() {
    let r = Rcrun::new();
    let id = r.tracked_id("bare");
    std::fs::create_dir_all(r.root().join(&id)).unwrap();
    r.ok(&["delete", "--force", &id]);
    assert!(!r.root().join(&id).exists());
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn delete_removes_nothing_while_the_state_cannot_be_read() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("unreadable", &b);
    let pid = r.pid(&id);
    let state = r.root().join(&id).join("state.json");
    let good = std::fs::read(&state).unwrap();
    // What a reader sees while libcontainer rewrites the file in place.
    std::fs::write(&state, b"{\"ociVersion\":").unwrap();
    r.fails(&["delete", "--force", &id]);
    assert!(
        r.root().join(".bundles").join(&id).exists(),
        "the record went"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the init went"
    );
    std::fs::write(&state, good).unwrap();
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn a_pid_file_in_a_missing_directory_is_refused() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.tracked_id("pidfiledir");
    let err = r.fails(&[
        "create",
        "--pid-file",
        "/nonexistent/dir/pid",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(
        err.contains("--pid-file") && err.contains("/nonexistent/dir"),
        "{err}"
    );
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));

    let id = r.run_detached("pidfiledir", &b);
    let err = r.fails(&["exec", "--pid-file", "/nonexistent/dir/pid", &id, "true"]);
    assert!(err.contains("--pid-file"), "{err}");
    r.ok(&["delete", "--force", &id]);
}

#[test]
fn init_killed_between_create_and_start_is_cleaned_by_delete_force() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.create("crash", &b);
    let pid = r.pid(&id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    r.wait_status(&id, "stopped");
    let err = r.fails(&["start", &id]);
    assert!(err.contains("stopped"), "{err}");
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn record_without_state_is_cleaned_by_delete_force() {
    // What a runtime crash in the middle of create leaves: rcrun's record
    // and a cgroup, but no libcontainer state.
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.create("halfmade", &b);
    let pid = r.pid(&id);
    std::fs::remove_dir_all(r.root().join(&id)).unwrap();
    let err = r.fails(&["state", &id]);
    assert!(err.contains("does not exist"), "{err}");
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "init survived: {stat}"
    );
}

/// The last line of a `--log-format json` log file.
fn last_log_line(log: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(log).unwrap();
    serde_json::from_str(text.lines().last().expect("an empty log")).unwrap()
}

#[test]
fn errors_go_to_the_log_file_as_runc_json() {
    let r = Rcrun::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.json");
    let out = r.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "ghost",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "container does not exist");
    let last = last_log_line(&log);
    assert_eq!(last["level"], "error");
    assert_eq!(last["msg"], "container does not exist");
    assert!(last["time"].as_str().unwrap().ends_with('Z'));

    let tlog = dir.path().join("log.txt");
    r.run(&["--log", tlog.to_str().unwrap(), "kill", "ghost"]);
    let text = std::fs::read_to_string(&tlog).unwrap();
    assert!(
        text.contains("level=error msg=\"container does not exist\""),
        "{text}"
    );
}

#[test]
fn systemd_cgroup_driver_is_refused_clearly() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]);
    let id = unique_id("systemd");
    let err = r.fails(&[
        "--systemd-cgroup",
        "create",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(err.contains("systemd"), "{err}");
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn exec_into_a_stopped_container_fails() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]);
    let id = r.tracked_id("execstopped");
    r.ok(&["run", "--keep", "-b", b.path().to_str().unwrap(), &id]);
    let err = r.fails(&["exec", &id, "true"]);
    assert!(err.contains("exec failed"), "{err}");
}

#[test]
fn concurrent_creates_of_one_id_let_exactly_one_win() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.tracked_id("race");
    let children: Vec<_> = (0..4)
        .map(|_| {
            r.cmd(&["create", "-b", b.path().to_str().unwrap(), &id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let wins = children
        .into_iter()
        .map(|mut c| c.wait().unwrap().success())
        .filter(|ok| *ok)
        .count();
    assert_eq!(wins, 1);
    assert_eq!(r.status(&id), "created");
    r.ok(&["delete", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn failing_start_container_hook_fails_run_and_leaves_nothing() {
    let r = Rcrun::new();
    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["hooks"] = json!({"startContainer": [{"path": "/bin/false"}]});
    });
    let id = r.tracked_id("hookfail");
    let pid_file = b.path().join("run.pid");
    let err = r.fails(&[
        "run",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    // Not the init's exit code passed on as the command's.
    assert!(err.contains("startContainer hook"), "{err}");
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
    assert!(!pid_file.exists(), "pid file of a failed run left behind");

    // A command that itself exits 255 is not mistaken for that.
    let (code, _, err) = r.run_fg(
        &Bundle::new(&["sh", "-c", "exit 255"]),
        &unique_id("exit255"),
    );
    assert_eq!(code, 255, "{err}");
}

#[test]
fn a_failed_exec_names_the_problem_and_leaves_no_pid_file() {
    let r = Rcrun::new();
    let scripts = rcrun_tests::bundle::script_with_a_missing_interpreter();
    let b = Bundle::new(&["sleep", "1000"]).edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/scripts", "type": "bind",
            "source": scripts.path(), "options": ["bind", "ro"]
        }));
    });
    let id = r.run_detached("execpid", &b);
    let pid_file = b.path().join("failed.pid");
    let pid_file = pid_file.to_str().unwrap();
    let err = r.fails(&[
        "exec",
        "--cwd",
        "/no/such/dir",
        "--pid-file",
        pid_file,
        &id,
        "true",
    ]);
    assert!(err.contains("/no/such/dir"), "{err}");

    let process = b.path().join("process.json");
    let limit = json!({"type": "RLIMIT_NOFILE", "hard": 1u64 << 40, "soft": 1024});
    let spec =
        json!({"cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0}, "rlimits": [limit]});
    std::fs::write(&process, spec.to_string()).unwrap();
    let err = r.fails(&["exec", "--process", process.to_str().unwrap(), &id]);
    assert!(
        err.contains("process.rlimits") && err.contains("nr_open"),
        "{err}"
    );

    // The exec itself fails, after libcontainer wrote the pid file.
    let err = r.fails(&["exec", "--pid-file", pid_file, &id, "/scripts/bad"]);
    assert!(err.contains("/scripts/bad"), "{err}");
    assert!(
        !std::path::Path::new(pid_file).exists(),
        "pid file of a failed exec left behind"
    );
    // A pid file that was there keeps what it held.
    std::fs::write(pid_file, "4242\n").unwrap();
    r.fails(&["exec", "--pid-file", pid_file, &id, "/scripts/bad"]);
    assert_eq!(std::fs::read_to_string(pid_file).unwrap(), "4242\n");
    r.ok(&["delete", "--force", &id]);

    // The same for a run whose command cannot be exec'd.
    let b = Bundle::new(&["/scripts/bad"]).edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/scripts", "type": "bind",
            "source": scripts.path(), "options": ["bind", "ro"]
        }));
    });
    let id = r.tracked_id("runpid");
    r.fails(&[
        "run",
        "--pid-file",
        pid_file,
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert_eq!(std::fs::read_to_string(pid_file).unwrap(), "4242\n");
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
fn a_failing_set_up_step_is_reported_with_its_reason() {
    let r = Rcrun::new();
    // /etc copied up into a tmpfs too small for it: the set-up hook fails
    // inside the new container.
    let b = Bundle::new(&["true"]).edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/etc", "type": "tmpfs", "source": "tmpfs",
            "options": ["tmpcopyup", "size=4k"]
        }));
    });
    let id = r.tracked_id("setupfail");
    let log = b.path().join("rcrun-log.json");
    let out = r.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "-b",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("tmpcopyup on /etc"), "{err}");
    // Where containerd reads it.
    let last = last_log_line(&log);
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"].as_str().unwrap().contains("tmpcopyup on /etc"),
        "{last}"
    );
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}
