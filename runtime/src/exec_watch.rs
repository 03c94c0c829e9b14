//! Whether a container process got as far as exec'ing its command.
//!
//! libcontainer's init (and an exec'd process before its exec) runs rcrun's
//! own image under the name [`INIT_COMM`]; it keeps both until the exec.
//! When it fails in between (a startContainer hook, the exec itself), its
//! error can only reach a log, and the exit code alone looks like the
//! command's. These checks let `start`, `run` and `exec` tell the two apart.
use std::os::unix::fs::MetadataExt;
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
pub fn wait_for_exec(pid: i32) -> Exec {
    let Ok(own) = std::fs::metadata("/proc/self/exe") else {
        return Exec::Unknown;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_micros(50);
    while Instant::now() < deadline {
        match std::fs::metadata(format!("/proc/{pid}/exe")) {
            Ok(m) if m.dev() == own.dev() && m.ino() == own.ino() => {}
            Ok(_) => return Exec::Done,
            // No exe link: a zombie (or gone). Its name tells whether it
            // got as far as the exec.
            Err(_) => return zombie_outcome(pid),
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
    // "pid (comm) state ...": comm may hold spaces and parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return Exec::Unknown;
    };
    let comm = &stat[open + 1..close];
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // Field 3 is the state; field 52 the exit status in waitpid's format.
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
