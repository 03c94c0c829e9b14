//! Supplementary groups are not passed on from rcrun to a container process.
//!
//! libcontainer calls setgroups(2) only for `additionalGids`: without this
//! the process would keep rcrun's supplementary groups, which are host
//! groups (in a user namespace, unmapped ones that still grant access).
//! runc always sets the container's groups, an empty list included.
use anyhow::{Context, Result};

/// Clears the calling process's supplementary groups before it starts a
/// container process (and the hooks it runs, as root, need none).
pub fn drop_all() -> Result<()> {
    match nix::unistd::setgroups(&[]) {
        Ok(()) => Ok(()),
        // A caller that may not change its groups has only its own to pass on.
        Err(nix::errno::Errno::EPERM) if !nix::unistd::geteuid().is_root() => Ok(()),
        Err(e) => Err(e).context("clear supplementary groups"),
    }
}
