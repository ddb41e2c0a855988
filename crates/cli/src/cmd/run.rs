//! `sockwrap run [OPTIONS] -- COMMAND...`: exec the program with the policy in its
//! environment. Nothing of sockwrap stays between the user and the program: on success this
//! never returns, and the exit status and signals are the program's own.

use crate::error::{Error, Result};
use crate::launch::{absolute, prepare};
use clap::ArgMatches;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

pub fn run(m: &ArgMatches) -> Result<ExitCode> {
    if m.get_flag("kernel") {
        return super::kernel::run(m);
    }
    let mut extra = Vec::new();
    if let Some(f) = m.get_one::<String>("trace") {
        extra.push((
            "SOCKWRAP_TRACE".to_string(),
            absolute(f).display().to_string(),
        ));
    }
    let (mut cmd, prog) = prepare(m, extra)?;
    let err = cmd.exec();
    Err(Error::Exec {
        program: prog.to_string_lossy().into_owned(),
        err,
    })
}
