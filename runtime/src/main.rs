//! The `rcrun` binary: parse runc's command line, run one command, report
//! errors as runc does (one line on stderr, an `error` line in `--log`).
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Parser;

use rcrun::cli::{Cli, Command};
use rcrun::commands;
use rcrun::container::Root;
use rcrun::logging::{self, Format, Sink};

fn main() -> ExitCode {
    rcrun::sealed_exe::take_original_path();
    if let Some(code) = container_setup_hook() {
        return code;
    }
    let cli = Cli::parse();
    let Some(format) = Format::parse(&cli.global.log_format) else {
        eprintln!("unknown log-format {:?}", cli.global.log_format);
        return ExitCode::from(1);
    };
    let sink = match Sink::open(cli.global.log.as_deref(), format) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("open log file: {e}");
            return ExitCode::from(1);
        }
    };
    if cli.global.log.is_some() || cli.global.debug {
        logging::install(sink.clone(), cli.global.debug);
    }
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) if e.is::<rcrun::output::StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            let msg = rcrun::anyhow_text(&e);
            if sink.has_file() {
                sink.write("error", &msg);
            }
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}

/// The set-up hook rcrun installs runs as `rcrun container-setup PLAN` in
/// every new container: it skips building the whole command line.
fn container_setup_hook() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let (Some(cmd), Some(plan), None) = (args.next(), args.next(), args.next()) else {
        return None;
    };
    if cmd != rcrun::container_setup::SUBCOMMAND {
        return None;
    }
    let plan = plan.into_string().ok()?;
    Some(rcrun::container_setup::run_hook(&plan))
}

fn dispatch(cli: &Cli) -> Result<i32> {
    if cli.global.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: rcrun manages cgroups through cgroupfs");
    }
    let root = Root::new(&cli.global.root);
    // The commands whose processes become container processes run from
    // rcrun's read-only image (see `sealed_exe`). The state root is that
    // image's spare overlayfs layer: create and run make it anyway, and an
    // exec without it has no container to enter.
    match &cli.command {
        Command::Create(_) | Command::Run(_) => {
            root.ensure()?;
            rcrun::sealed_exe::ensure(root.path())?;
        }
        Command::Exec(_) if root.path().is_dir() => rcrun::sealed_exe::ensure(root.path())?,
        _ => {}
    }
    match &cli.command {
        Command::Create(a) => commands::create::run(&root, &a.opts).map(|_| 0),
        Command::Start(a) => commands::start::run(&root, &a.id).map(|_| 0),
        Command::Run(a) => commands::run::run(&root, a),
        Command::Exec(a) => commands::exec::run(&root, a),
        Command::Kill(a) => commands::kill::run(&root, a).map(|_| 0),
        Command::Delete(a) => commands::delete::run(&root, a).map(|_| 0),
        Command::State(a) => commands::state::run(&root, &a.id).map(|_| 0),
        Command::List(a) => commands::list::run(&root, a).map(|_| 0),
        Command::Ps(a) => commands::ps::run(&root, a).map(|_| 0),
        Command::Pause(a) => commands::pause::pause(&root, &a.id).map(|_| 0),
        Command::Resume(a) => commands::pause::resume(&root, &a.id).map(|_| 0),
        Command::Events(a) => commands::events::run(&root, a).map(|_| 0),
        Command::Update(a) => commands::update::run(&root, a).map(|_| 0),
        Command::Spec(a) => commands::spec::run(a).map(|_| 0),
        Command::Features => commands::features::run().map(|_| 0),
        Command::ContainerSetup(a) => rcrun::container_setup::run(&a.plan).map(|_| 0),
    }
}
