//! rcrun: a runc-compatible OCI runtime on youki's `libcontainer`.
//!
//! libcontainer does the container set-up (namespaces, rootfs, cgroups,
//! capabilities, seccomp, hooks); rcrun adds runc's command line and
//! outputs, input validation, and complete cleanup on failure.
pub mod cgroup_mount;
pub mod cgroups;
pub mod cli;
pub mod commands;
pub mod confine;
pub mod console;
pub mod container;
pub mod container_setup;
pub mod exec_watch;
pub mod executor;
pub mod fsutil;
pub mod idmap;
pub mod logging;
pub mod mount_api;
pub mod mountinfo;
pub mod output;
pub mod sealed_exe;
pub mod signals;
pub mod spec;
pub mod supervise;
pub mod supplementary_groups;
pub mod userns_exec;

/// One line for an error and its causes, without the repetitions that
/// transparent error wrappers produce.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
        cur = e.source();
    }
    out.replace('\n', " ")
}

/// Drops the repeated wrapper phrases libcontainer puts around errors that
/// come back from the container process.
pub fn tidy_libcontainer_error(msg: &str) -> String {
    msg.replace(
        "exec process failed with error error in executing process : ",
        "",
    )
    .replace("error in executing process : ", "")
}

/// [`error_text`] for an anyhow error (context first, then causes).
pub fn anyhow_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for e in err.chain() {
        let msg = e.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out.replace('\n', " ")
}
