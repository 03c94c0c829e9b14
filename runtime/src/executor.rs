//! The last step inside the container: find the command, then exec it.
//!
//! Replaces libcontainer's default executor, which insists on a `PATH`
//! variable even for absolute commands, only accepts binaries executable by
//! "other", and leaves signals blocked that the runtime blocked.
use std::ffi::CString;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::AccessFlags;

/// Sets every signal the process may ignore back to its default. An ignored
/// signal stays ignored across exec, and a shell cannot even `trap` it:
/// Rust's runtime ignores SIGPIPE in rcrun, and rcrun's caller may ignore
/// others (`nohup`: SIGHUP; a background job of a non-interactive shell:
/// SIGINT and SIGQUIT). crun resets them all too.
fn reset_signal_dispositions() {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: resetting a disposition to SIG_DFL installs no handler;
        // the numbers that cannot be reset (glibc's own 32 and 33) just fail.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// `PATH` used to look up a command when the process environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone)]
pub struct ProcessExecutor {
    /// Join a fresh session keyring named after the container (runc's default;
    /// off with `--no-new-keyring`).
    pub new_keyring: Option<String>,
    /// For `exec`: the container's seccomp filter, which libcontainer leaves
    /// out for exec'd processes.
    pub confinement: Option<crate::confine::ExecConfinement>,
}

fn args_of(spec: &Spec) -> Option<&Vec<String>> {
    spec.process().as_ref().and_then(|p| p.args().as_ref())
}

fn path_of(spec: &Spec) -> String {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().as_ref())
        .and_then(|env| env.iter().rev().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or(DEFAULT_PATH)
        .to_string()
}

/// Resolves a command like execvp(3) does, with an explanation on failure.
pub fn lookup(cmd: &str, path: &str) -> Result<PathBuf, String> {
    if cmd.contains('/') {
        let p = PathBuf::from(cmd);
        return check_executable(&p).map(|_| p);
    }
    let mut last_err = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(cmd);
        if candidate.exists() {
            match check_executable(&candidate) {
                Ok(()) => return Ok(candidate),
                Err(e) => last_err = Some(e),
            }
        }
    }
    Err(last_err.unwrap_or_else(|| format!("exec: {cmd:?}: executable file not found in $PATH")))
}

fn check_executable(p: &Path) -> Result<(), String> {
    let md =
        std::fs::metadata(p).map_err(|e| format!("exec: {:?}: {e}", p.display().to_string()))?;
    if !md.is_file() {
        return Err(format!(
            "exec: {:?}: is a directory or not a regular file",
            p.display().to_string()
        ));
    }
    nix::unistd::access(p, AccessFlags::X_OK)
        .map_err(|_| format!("exec: {:?}: permission denied", p.display().to_string()))
}

fn join_session_keyring(name: &str) {
    let Ok(name) = CString::new(name) else { return };
    // KEYCTL_JOIN_SESSION_KEYRING = 1. Best effort: seccomp profiles commonly
    // deny keyctl, and a missing keyring only weakens isolation of keys.
    // SAFETY: plain syscall with a valid C string.
    unsafe {
        libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, name.as_ptr());
    }
}

impl Executor for ProcessExecutor {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let args = args_of(spec).filter(|a| !a.is_empty()).ok_or_else(|| {
            ExecutorValidationError::ArgValidationError("process.args is empty".into())
        })?;
        lookup(&args[0], &path_of(spec))
            .map(|_| ())
            .map_err(ExecutorValidationError::ArgValidationError)
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = args_of(spec).ok_or(ExecutorError::InvalidArg)?;
        let path = lookup(&args[0], &path_of(spec)).map_err(ExecutorError::Other)?;
        if let Some(name) = &self.new_keyring {
            join_session_keyring(name);
        }
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| ExecutorError::InvalidArg)?;
        let c_args: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| ExecutorError::InvalidArg))
            .collect::<Result<_, _>>()?;
        if let Some(c) = &self.confinement {
            c.apply().map_err(ExecutorError::Other)?;
        }
        reset_signal_dispositions();
        // The runtime may have blocked signals it forwards; the container
        // must start with none blocked.
        let _ =
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        let err = nix::unistd::execv(&c_path, &c_args).unwrap_err();
        Err(ExecutorError::Other(format!("exec {:?}: {err}", args[0])))
    }
}
