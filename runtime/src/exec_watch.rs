//! Whether a container process got as far as exec'ing its command.
//!
//! libcontainer's init (and an exec'd process before its exec) runs rcrun's
//! own image under the name [`INIT_COMM`]; it keeps both until the exec.
//! When it fails in between (a startContainer hook, the exec itself), its
//! error can only reach a log, and the exit code alone looks like the
//! command's. These checks let `start`, `run` and `exec` tell the two apart.
use std::time::{Duration, Instant};

/// What became of the init after the start message.
#[derive(Debug, PartialEq)]
pub enum Exec {
    /// It runs the container's command, or ran it and exited (or was
    /// killed by a signal: not a failure of its own).
    Done,
    /// It exited while still libcontainer's init: a startContainer hook or
    /// the exec failed. Seen only while it is an unreaped zombie (always so
    /// under `run`, which is its parent).
    FailedBefore,
    /// Gone, or still not exec'd when waiting gave up.
    Unknown,
}

/// libcontainer's name for its init process, kept until the exec.
const INIT_COMM: &str = "youki:[2:INIT]";

/// Waits until the init has replaced rcrun's image with the container's
/// command (or is gone).
///
/// The name tells, not the binary: the init runs from rcrun's read-only
/// image (`sealed_exe`), which `start` does not share. The exec renames the
/// process after the command's file.
pub fn wait_for_exec(pid: i32) -> Exec {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_micros(50);
    while Instant::now() < deadline {
        match name_and_zombie(pid) {
            Some((_, true)) => return zombie_outcome(pid),
            Some((name, false)) if name == INIT_COMM => {}
            Some(_) => return Exec::Done,
            None => return Exec::Unknown,
        }
        std::thread::sleep(pause);
        // The exec follows the start message within a millisecond or two:
        // poll finely so that `start` does not oversleep it.
        pause = (pause * 2).min(Duration::from_micros(400));
    }
    Exec::Unknown
}

/// What an exited, not yet reaped process got to.
pub fn zombie_outcome(pid: i32) -> Exec {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Exec::Unknown;
    };
    let Some((comm, fields)) = split_stat(&stat) else {
        return Exec::Unknown;
    };
    // Field 52 of /proc/PID/stat is the exit status in waitpid's format.
    let killed = fields
        .get(49)
        .and_then(|f| f.parse::<i32>().ok())
        .is_some_and(|status| status & 0x7f != 0);
    match (fields.first().copied(), comm == INIT_COMM) {
        // Killed by a signal is not a failure of its own.
        (Some("Z"), true) if !killed => Exec::FailedBefore,
        (Some("Z"), _) => Exec::Done,
        _ => Exec::Unknown,
    }
}

/// The process's name, and whether it is a zombie, while it exists.
fn name_and_zombie(pid: i32) -> Option<(String, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (comm, fields) = split_stat(&stat)?;
    Some((comm.to_string(), *fields.first()? == "Z"))
}

/// "pid (comm) state ...": the name, and the fields after it from the
/// state on. The name may hold spaces and parentheses.
fn split_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    Some((
        &stat[open + 1..close],
        stat[close + 1..].split_whitespace().collect(),
    ))
}
