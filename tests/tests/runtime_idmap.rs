//! Idmapped mounts (`idmap`, `ridmap`, a mount's own `uidMappings` and
//! `gidMappings`) and `rootfsPropagation: runbindable`, on real containers.
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use rcrun_tests::bundle::{
    assert_no_leftovers, default_cgroups_path, unique_id, Bundle, ConsoleSocket, Rcrun,
};
use serde_json::{json, Value};

fn sh(script: &str) -> Bundle {
    Bundle::new(&["sh", "-c", script])
}

/// Puts the container in a user namespace where its root is host uid/gid
/// 100000.
fn in_user_namespace(spec: &mut Value) {
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
}

fn add_mount(spec: &mut Value, mount: Value) {
    spec["mounts"].as_array_mut().unwrap().push(mount);
}

/// A host directory holding `file`, owned by `uid`:`uid` (the directory too).
fn source_dir(uid: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rcrun-idmap-src-")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("file"), "content\n").unwrap();
    for p in [dir.path().to_path_buf(), dir.path().join("file")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
    }
    dir
}

fn owner(path: &Path) -> (u32, u32) {
    let md = std::fs::metadata(path).unwrap();
    (md.uid(), md.gid())
}

/// The mountinfo line of the mount on `point`, printed by a container.
const MOUNTINFO_OF: &str = "awk -v p=\"$1\" '$5 == p' /proc/self/mountinfo";

#[test]
fn features_report_idmapped_mounts() {
    let r = Rcrun::new();
    let f: Value = serde_json::from_str(&r.ok(&["features"])).unwrap();
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
    let options = f["mountOptions"].as_array().unwrap();
    for o in ["idmap", "ridmap", "runbindable"] {
        assert!(options.contains(&json!(o)), "{o} missing from {options:?}");
    }
}

#[test]
fn idmap_without_mappings_uses_the_containers_user_namespace() {
    let r = Rcrun::new();
    let src = source_dir(0);
    let b = sh(&format!(
        "mi() {{ {MOUNTINFO_OF}; }}
         stat -c '%u:%g' /tmp/idmapped/file /tmp/plain/file /tmp/one-file
         touch /tmp/idmapped/made-inside && echo made
         touch /tmp/plain/not-made 2>/dev/null || echo refused
         mi /tmp/idmapped"
    ))
    .edit(|spec| {
        in_user_namespace(spec);
        add_mount(
            spec,
            json!({"destination": "/tmp/idmapped", "type": "bind", "source": src.path(),
                   "options": ["bind", "idmap"]}),
        );
        add_mount(
            spec,
            json!({"destination": "/tmp/plain", "type": "bind", "source": src.path(),
                   "options": ["bind"]}),
        );
        add_mount(
            spec,
            json!({"destination": "/tmp/one-file", "type": "bind",
                   "source": src.path().join("file"), "options": ["bind", "idmap"]}),
        );
    });
    let out = r.run_fg_ok(&b, "idmapns");
    let lines: Vec<&str> = out.lines().collect();
    // Host root's file is the container's root's through the idmapped
    // mount, and nobody's through the plain one.
    assert_eq!(
        lines[..5],
        ["0:0", "65534:65534", "0:0", "made", "refused"],
        "{out}"
    );
    assert!(lines[5].contains("idmapped"), "{out}");
    // What the container's root made shows up as host root's.
    assert_eq!(owner(&src.path().join("made-inside")), (0, 0));
    assert!(!src.path().join("not-made").exists());
}

#[test]
fn a_mounts_own_mappings_map_the_source_ids() {
    let r = Rcrun::new();
    // Host uid 1000 becomes the container's root (host 100000) on the mount.
    let src = source_dir(1000);
    let b = sh(&format!(
        "mi() {{ {MOUNTINFO_OF}; }}
         stat -c '%u:%g' /tmp/vol/file
         touch /tmp/vol/made-inside && echo made
         touch /tmp/vol/file 2>/dev/null && echo writable
         mi /tmp/vol"
    ))
    .edit(|spec| {
        in_user_namespace(spec);
        add_mount(
            spec,
            json!({"destination": "/tmp/vol", "type": "bind", "source": src.path(),
                   "options": ["rbind", "nosuid", "nodev"],
                   "uidMappings": [{"containerID": 1000, "hostID": 100000, "size": 1}],
                   "gidMappings": [{"containerID": 1000, "hostID": 100000, "size": 1}]}),
        );
    });
    let out = r.run_fg_ok(&b, "idmapown");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["0:0", "made", "writable"], "{out}");
    assert!(
        lines[3].contains("idmapped") && lines[3].contains("nosuid,nodev"),
        "{out}"
    );
    assert_eq!(owner(&src.path().join("made-inside")), (1000, 1000));
}

#[test]
fn own_mappings_work_without_a_user_namespace() {
    let r = Rcrun::new();
    let src = source_dir(0);
    let b = sh(&format!(
        "mi() {{ {MOUNTINFO_OF}; }}
         stat -c '%u:%g' /tmp/vol/file; cat /tmp/vol/file
         touch /tmp/vol/new 2>/dev/null || echo read-only
         mi /tmp/vol"
    ))
    .edit(|spec| {
        add_mount(
            spec,
            json!({"destination": "/tmp/vol", "type": "bind", "source": src.path(),
                   "options": ["bind", "ro"],
                   "uidMappings": [{"containerID": 0, "hostID": 1234, "size": 10}],
                   "gidMappings": [{"containerID": 0, "hostID": 4321, "size": 10}]}),
        );
    });
    let out = r.run_fg_ok(&b, "idmaproot");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["1234:4321", "content", "read-only"], "{out}");
    assert!(
        lines[3].contains(" ro,") && lines[3].contains("idmapped"),
        "{out}"
    );
}

#[test]
fn ridmap_covers_submounts_and_idmap_only_the_mount() {
    let r = Rcrun::new();
    let src = source_dir(0);
    std::fs::create_dir(src.path().join("sub")).unwrap();
    let b =
        sh("stat -c '%u' /tmp/r/file /tmp/r/sub/file /tmp/n/file /tmp/n/sub/file").edit(|spec| {
            in_user_namespace(spec);
            add_mount(
                spec,
                json!({"destination": "/tmp/r", "type": "bind", "source": src.path(),
                       "options": ["rbind", "ridmap"]}),
            );
            add_mount(
                spec,
                json!({"destination": "/tmp/n", "type": "bind", "source": src.path(),
                       "options": ["rbind", "idmap"]}),
            );
        });
    // The submount exists in a private copy of the host's mounts only.
    let script = format!(
        "S={}; mount -t tmpfs tmpfs $S/sub; echo x > $S/sub/file
         $RCRUN run -b $BUNDLE $ID",
        src.path().display()
    );
    let out = r.in_private_mount_ns(&b, &unique_id("idmapns"), &script);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["0", "0", "0", "65534"],
        "{out}"
    );
}

#[test]
fn mounts_after_an_idmapped_mount_stay_on_top_of_it() {
    let r = Rcrun::new();
    let src = source_dir(0);
    let b = sh(&format!(
        "mi() {{ {MOUNTINFO_OF}; }}
         mi /tmp/vol | grep -c idmapped
         mi /tmp/vol/later | grep -c tmpfs
         mi /tmp/vol/later/deeper | grep -c tmpfs
         test -e /tmp/vol/early && echo early-visible || echo early-hidden
         cat /tmp/vol/file"
    ))
    .edit(|spec| {
        in_user_namespace(spec);
        for (dest, typ) in [
            ("/tmp/vol/early", "tmpfs"),
            ("/tmp/vol", "bind"),
            ("/tmp/vol/later", "tmpfs"),
            ("/tmp/vol/later/deeper", "tmpfs"),
        ] {
            let mut m = json!({"destination": dest, "type": typ, "source": typ});
            if typ == "bind" {
                m["source"] = json!(src.path());
                m["options"] = json!(["bind", "idmap"]);
            }
            add_mount(spec, m);
        }
    });
    let out = r.run_fg_ok(&b, "idmapnest");
    // The mount listed before the idmapped one is covered by it, as in
    // spec order; the ones after it are on top.
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1", "1", "1", "early-hidden", "content"],
        "{out}"
    );
    // The mount point of the later mount was made in the source.
    assert!(src.path().join("later").is_dir());
}

#[test]
fn runbindable_makes_every_mount_unbindable() {
    let r = Rcrun::new();
    let src = source_dir(0);
    let b = sh(&format!(
        "mi() {{ {MOUNTINFO_OF}; }}
         grep -vc ' unbindable ' /proc/self/mountinfo || true
         mi /proc | grep -c ' unbindable '
         mi /tmp/bound | grep -c ' unbindable '
         mi /tmp/idmapped | grep -c ' unbindable '
         wc -c < /proc/timer_list
         echo x > /proc/sys/kernel/domainname 2>/dev/null || echo read-only
         cat /proc/sys/net/ipv4/ip_forward
         mi /tmp/cpuinfo | grep -c ' unbindable '; grep -c ^processor /tmp/cpuinfo >/dev/null && echo bound"
    ))
    .edit(|spec| {
        spec["linux"]["rootfsPropagation"] = json!("runbindable");
        spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        // A createContainer hook may still bind from the container's
        // mounts: they become unbindable after the hooks, as in runc.
        let root = rcrun_tests::fixtures::busybox_rootfs();
        let root = root.display();
        spec["hooks"] = json!({"createContainer": [{"path": "/bin/sh", "args": ["sh", "-ec",
            format!("/usr/bin/touch {root}/tmp/cpuinfo
                     /usr/bin/mount --bind {root}/proc/cpuinfo {root}/tmp/cpuinfo")]}]});
        add_mount(
            spec,
            json!({"destination": "/tmp/bound", "type": "bind", "source": src.path(),
                   "options": ["rbind", "rshared"]}),
        );
        add_mount(
            spec,
            json!({"destination": "/tmp/idmapped", "type": "bind", "source": src.path(),
                   "options": ["bind", "idmap"],
                   "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                   "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}),
        );
    });
    let out = r.run_fg_ok(&b, "runbind");
    // Every mount, masked and read-only paths included; those still mask
    // and protect, and sysctls still apply.
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["0", "1", "1", "1", "0", "read-only", "1", "1", "bound"],
        "{out}"
    );
}

#[test]
fn runbindable_with_a_terminal_keeps_devpts_bindable_for_the_console() {
    let r = Rcrun::new();
    let b = sh("grep -c ' unbindable .* - devpts ' /proc/self/mountinfo; \
         grep -vc ' unbindable ' /proc/self/mountinfo; echo console-ok; sleep 1000")
    .edit(|spec| {
        spec["process"]["terminal"] = json!(true);
        spec["linux"]["rootfsPropagation"] = json!("runbindable");
    });
    let sock = ConsoleSocket::new();
    let id = r.tracked_id("runbindtty");
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
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    // devpts and the console bound from it are the only bindable mounts.
    assert_eq!(lines[..3], ["0", "2", "console-ok"], "{out:?}");
}

/// `create` fails with one line containing every piece of `want`, and
/// leaves nothing behind.
fn create_fails(r: &Rcrun, b: &Bundle, want: &[&str]) {
    let id = r.tracked_id("badidmap");
    let err = r.fails(&["create", "-b", b.path().to_str().unwrap(), &id]);
    for w in want {
        assert!(err.contains(w), "error {err:?} does not mention {w:?}");
    }
    assert_no_leftovers(r, &id, &default_cgroups_path(&id));
}

#[test]
fn bad_idmapped_mounts_are_refused_naming_the_mount() {
    let r = Rcrun::new();
    let src = source_dir(0);
    let with_mount = |userns: bool, mount: Value| {
        sh("true").edit(|spec| {
            if userns {
                in_user_namespace(spec);
            }
            add_mount(spec, mount);
        })
    };
    let maps = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    let cases = [
        (
            with_mount(
                true,
                json!({"destination": "/tmp/t", "type": "tmpfs", "source": "tmpfs",
                       "options": ["idmap"]}),
            ),
            vec!["mounts[6]", "bind mounts", "tmpfs"],
        ),
        (
            with_mount(
                false,
                json!({"destination": "/tmp/v", "type": "bind", "source": src.path(),
                       "options": ["bind", "idmap"]}),
            ),
            vec!["mounts[6]", "user namespace"],
        ),
        (
            with_mount(
                false,
                json!({"destination": "/tmp/v", "type": "bind", "source": src.path(),
                       "options": ["rbind"], "uidMappings": maps}),
            ),
            vec!["mounts[6]", "both uidMappings and gidMappings"],
        ),
        (
            with_mount(
                false,
                json!({"destination": "/tmp/v", "type": "bind", "source": src.path(),
                       "options": ["bind", "idmap"], "uidMappings": maps,
                       "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 0}]}),
            ),
            vec!["mounts[6]", "gidMappings[0]", "size"],
        ),
        (
            with_mount(
                true,
                json!({"destination": "/tmp/v", "type": "bind", "source": src.path(),
                       "options": ["bind", "idmap"],
                       "uidMappings": [{"containerID": "root", "hostID": 1000, "size": 1}],
                       "gidMappings": maps}),
            ),
            vec!["mounts[6].uidMappings[0].containerID"],
        ),
        (
            with_mount(
                true,
                json!({"destination": "/tmp/v", "type": "bind", "source": src.path(),
                       "options": ["bind", "ridmap", "sync"]}),
            ),
            vec!["mounts[6]", "\"sync\""],
        ),
        (
            with_mount(
                true,
                json!({"destination": "/tmp/v", "type": "bind",
                       "source": src.path().join("missing"), "options": ["bind", "idmap"]}),
            ),
            vec!["mounts[6].source", "does not exist"],
        ),
    ];
    for (b, want) in &cases {
        create_fails(&r, b, want);
    }
}

#[test]
fn a_source_that_cannot_be_idmapped_is_refused_up_front() {
    // procfs does not support idmapped mounts.
    let r = Rcrun::new();
    let b = sh("true").edit(|spec| {
        in_user_namespace(spec);
        add_mount(
            spec,
            json!({"destination": "/tmp/p", "type": "bind", "source": "/proc/self",
                   "options": ["bind", "idmap"]}),
        );
    });
    create_fails(&r, &b, &["mounts[6]", "/proc/self", "idmapped"]);
}

#[test]
fn podman_idmap_volume_runs_with_rcrun() {
    // podman passes `idmap` on a volume of a user-namespaced container.
    let dir = tempfile::tempdir().unwrap();
    let vol = source_dir(0);
    let podman = |args: &[&str]| {
        let mut c = std::process::Command::new("podman");
        c.arg("--runtime")
            .arg(rcrun_tests::bins::bin("rcrun"))
            .arg("--root")
            .arg(dir.path().join("storage"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args([
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--storage-driver",
                "vfs",
            ])
            .args(args)
            .stdin(std::process::Stdio::null());
        c
    };
    let archive = format!(
        "oci-archive:{}",
        rcrun_tests::fixtures::image("busybox")
            .oci_archive()
            .display()
    );
    let volume = format!("{}:/vol:idmap", vol.path().display());
    let out = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--uidmap",
        "0:100000:65536",
        "--gidmap",
        "0:100000:65536",
        "-v",
        &volume,
        &archive,
        "sh",
        "-c",
        "stat -c %u:%g /vol/file; touch /vol/made-inside && echo made",
    ])
    .output()
    .expect("run podman");
    let _ = podman(&["rm", "-af"]).output();
    let _ = podman(&["system", "reset", "-f"]).output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "podman run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "0:0\nmade\n");
    assert_eq!(owner(&vol.path().join("made-inside")), (0, 0));
}

#[test]
fn an_idmapped_mount_that_fails_in_the_hook_leaves_nothing_behind() {
    // The container's root may not make a mount point in a rootfs it does
    // not own: the hook fails after the namespaces and the cgroup exist.
    let r = Rcrun::new();
    let src = source_dir(0);
    let dest = format!("/{}", unique_id("idmap-nowhere"));
    let b = sh("true").edit(|spec| {
        in_user_namespace(spec);
        add_mount(
            spec,
            json!({"destination": dest, "type": "bind", "source": src.path(),
                   "options": ["bind", "idmap"]}),
        );
    });
    let id = r.tracked_id("idmapfail");
    let out = r.run(&["create", "-b", b.path().to_str().unwrap(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("mounts[6]") && err.contains("Permission denied"),
        "{err}"
    );
    assert_no_leftovers(&r, &id, &default_cgroups_path(&id));
    assert!(!rcrun_tests::fixtures::busybox_rootfs()
        .join(&dest[1..])
        .exists());
}
