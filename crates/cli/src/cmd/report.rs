//! `sockwrap report FILE [--json]`: the summary of a trace file.

use crate::error::{Error, Result};
use clap::ArgMatches;
use std::process::ExitCode;

pub fn report(m: &ArgMatches) -> Result<ExitCode> {
    let f = m
        .get_one::<String>("file")
        .map(String::as_str)
        .unwrap_or("");
    let text = std::fs::read(f)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| Error::setup(format_args!("report: {f}: {e}")))?;
    crate::summary::print_summary(&text, m.get_flag("json"), false);
    Ok(ExitCode::SUCCESS)
}
