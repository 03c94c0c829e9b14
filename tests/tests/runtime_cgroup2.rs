//! rcrun on a pure cgroup v2 host: limits that the kernel enforces, seen in
//! the cgroup's own files. Ignored by default (this build host is v1
//! hybrid); `tests/cgroup2.sh` runs them inside the cgroup v2 VM.
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcrun_tests::bundle::{
    assert_no_leftovers, default_cgroups_path, poll_until, unique_id, Bundle, Rcrun,
};
use serde_json::json;

const IGNORE: &str = "needs a cgroup v2 host: run through tests/cgroup2.sh";

fn cgroup(id: &str) -> PathBuf {
    assert!(
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "/sys/fs/cgroup is not cgroup v2 ({IGNORE})"
    );
    Path::new("/sys/fs/cgroup").join(default_cgroups_path(id).trim_start_matches('/'))
}

/// The value of `key` in a flat-keyed cgroup file (memory.events, cpu.stat).
fn keyed(file: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(key)).then(|| it.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{} has no {key}: {text}", file.display()))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    assert!(
        poll_until(Duration::from_secs(20), f),
        "timed out waiting for {what}"
    );
}

#[test]
#[ignore = "needs a cgroup v2 host: run through tests/cgroup2.sh"]
fn memory_limit_ends_in_an_oom_kill_counted_in_memory_events() {
    let r = Rcrun::new();
    // tail buffers /dev/zero looking for a newline until the limit stops it.
    let mut b = Bundle::new(&["tail", "/dev/zero"]);
    b.spec["linux"]["resources"]["memory"] = json!({"limit": 32 << 20, "swap": 32 << 20});
    b.write();
    let id = unique_id("oom");
    r.track(&id);
    let out = r.run(&["run", "--keep", "-b", b.path().to_str().unwrap(), &id]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cg = cgroup(&id);
    assert_eq!(read(&cg.join("memory.max")), (32u64 << 20).to_string());
    assert!(keyed(&cg.join("memory.events"), "oom_kill") >= 1);
    r.ok(&["delete", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
#[ignore = "needs a cgroup v2 host: run through tests/cgroup2.sh"]
fn pids_max_stops_a_fork_bomb() {
    let r = Rcrun::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done; sleep 1000",
    ]);
    b.spec["linux"]["resources"]["pids"] = json!({"limit": 16});
    b.write();
    let id = r.run_detached("forkbomb", &b);
    let cg = cgroup(&id);
    assert_eq!(read(&cg.join("pids.max")), "16");
    wait_for("fork failures", || {
        keyed(&cg.join("pids.events"), "max") > 0
    });
    let current: u64 = read(&cg.join("pids.current")).parse().unwrap();
    assert!(current <= 16, "pids.current {current}");
    let ps: Vec<i32> = serde_json::from_str(&r.ok(&["ps", "-f", "json", &id])).unwrap();
    assert!(ps.len() <= 16, "{} processes", ps.len());
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
#[ignore = "needs a cgroup v2 host: run through tests/cgroup2.sh"]
fn cpu_max_throttles() {
    let r = Rcrun::new();
    let mut b = Bundle::new(&["sh", "-c", "while :; do :; done"]);
    b.spec["linux"]["resources"]["cpu"] = json!({"quota": 10000, "period": 100000, "shares": 512});
    b.write();
    let id = r.run_detached("cpumax", &b);
    let cg = cgroup(&id);
    assert_eq!(read(&cg.join("cpu.max")), "10000 100000");
    wait_for("throttling", || {
        keyed(&cg.join("cpu.stat"), "nr_throttled") >= 3
    });
    let ev: serde_json::Value = serde_json::from_str(&r.ok(&["events", "--stats", &id])).unwrap();
    assert!(
        ev["data"]["cpu"]["throttling"]["throttledPeriods"]
            .as_u64()
            .unwrap()
            >= 3
    );
    // Raise the quota in place.
    r.ok(&["update", "--cpu-quota", "50000", &id]);
    assert_eq!(read(&cg.join("cpu.max")), "50000 100000");
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
#[ignore = "needs a cgroup v2 host: run through tests/cgroup2.sh"]
fn pause_and_resume_use_cgroup_freeze() {
    let r = Rcrun::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = r.run_detached("freeze", &b);
    let cg = cgroup(&id);
    r.ok(&["pause", &id]);
    assert_eq!(r.status(&id), "paused");
    assert_eq!(read(&cg.join("cgroup.freeze")), "1");
    wait_for("frozen", || keyed(&cg.join("cgroup.events"), "frozen") == 1);
    r.ok(&["resume", &id]);
    assert_eq!(r.status(&id), "running");
    assert_eq!(read(&cg.join("cgroup.freeze")), "0");
    wait_for("thawed", || keyed(&cg.join("cgroup.events"), "frozen") == 0);
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
#[ignore = "needs a cgroup v2 host: run through tests/cgroup2.sh"]
fn kill_all_uses_cgroup_kill() {
    let r = Rcrun::new();
    let mut b = Bundle::new(&["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    // No PID namespace: the init's death alone would not end the others.
    b.spec["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]);
    b.write();
    let id = r.run_detached("cgkill", &b);
    let cg = cgroup(&id);
    assert!(cg.join("cgroup.kill").exists());
    wait_for("three processes", || {
        read(&cg.join("cgroup.procs")).lines().count() == 3
    });
    r.ok(&["kill", "--all", &id, "KILL"]);
    wait_for("empty cgroup", || {
        keyed(&cg.join("cgroup.events"), "populated") == 0
    });
    r.wait_status(&id, "stopped");
    r.ok(&["delete", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
#[ignore = "needs a cgroup v2 host: run through tests/cgroup2.sh"]
fn delete_removes_sub_cgroups_and_their_processes() {
    let r = Rcrun::new();
    let mut b = Bundle::new(&["sh", "-c", "sleep 1000 & wait"]);
    // No PID namespace: the init's death alone would not end the sleep.
    b.spec["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]);
    b.write();
    let id = r.run_detached("subcg", &b);
    let cg = cgroup(&id);
    wait_for("two processes", || {
        read(&cg.join("cgroup.procs")).lines().count() == 2
    });
    let init = r.pid(&id);
    let child: i32 = read(&cg.join("cgroup.procs"))
        .lines()
        .map(|l| l.parse().unwrap())
        .find(|p| *p != init)
        .unwrap();
    // What systemd or a nested runtime inside the container would make.
    let sub = cg.join("payload");
    std::fs::create_dir_all(sub.join("deeper")).unwrap();
    std::fs::write(sub.join("cgroup.procs"), child.to_string()).unwrap();
    r.ok(&["delete", "--force", &id]);
    assert!(!cg.exists(), "{} is left", cg.display());
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
    wait_for("the moved process to end", || {
        std::fs::read_to_string(format!("/proc/{child}/stat")).map_or(true, |s| s.contains(") Z "))
    });
}

#[test]
#[ignore = "needs a cgroup v2 host: run through tests/cgroup2.sh"]
fn update_memory_and_unified_keys() {
    let r = Rcrun::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.spec["linux"]["resources"]["unified"] = json!({"memory.high": "200000000"});
    b.write();
    let id = r.run_detached("v2update", &b);
    let cg = cgroup(&id);
    // The kernel rounds down to whole pages.
    assert_eq!(read(&cg.join("memory.high")), "199999488");
    r.ok(&["update", "--memory", "64m", "--pids-limit", "50", &id]);
    assert_eq!(read(&cg.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(read(&cg.join("pids.max")), "50");
    r.ok(&["delete", "--force", &id]);
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
}

#[test]
#[ignore = "needs a cgroup v2 host: run through tests/cgroup2.sh"]
fn user_namespace_container_gets_a_cgroupfs_cgroup() {
    let r = Rcrun::new();
    let mut b = Bundle::new(&["sh", "-c", "cat /proc/self/cgroup; id -u"]);
    b.spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["linux"]["cgroupsPath"] = json!(format!("relative/{}", unique_id("u")));
    b.write();
    let id = unique_id("v2userns");
    let (code, out, err) = r.run_fg(&b, &id);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("/rcrun/relative/"), "{out}");
    assert_eq!(out.lines().last(), Some("0"));
}

#[test]
#[ignore = "needs a cgroup v2 host: run through tests/cgroup2.sh"]
fn containers_created_at_once_under_a_new_parent_all_start() {
    let r = Rcrun::new();
    // The race is between one `run` finding a level missing and another
    // making it first: several rounds of siblings under fresh, deep parents
    // give it many chances.
    for _ in 0..4 {
        let top = unique_id("parent");
        let parent = format!("{top}/a/b/c/d");
        let ids: Vec<String> = (0..8).map(|_| r.tracked_id("sibling")).collect();
        let bundles: Vec<Bundle> = ids
            .iter()
            .map(|id| {
                let mut b = Bundle::new(&["true"]);
                b.spec["linux"]["cgroupsPath"] = json!(format!("/{parent}/{id}"));
                b.write();
                b
            })
            .collect();
        let barrier = std::sync::Barrier::new(ids.len());
        std::thread::scope(|s| {
            for (id, b) in ids.iter().zip(&bundles) {
                let (r, barrier) = (&r, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let out = r.run(&["run", "-b", b.path().to_str().unwrap(), id]);
                    assert!(
                        out.status.success(),
                        "{id}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                });
            }
        });
        for id in &ids {
            assert_no_leftovers(&r, id, &format!("/{parent}/{id}"));
        }
        // Only the shared parents are left.
        for level in ["a/b/c/d", "a/b/c", "a/b", "a", ""] {
            std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&top).join(level)).unwrap();
        }
    }
}
