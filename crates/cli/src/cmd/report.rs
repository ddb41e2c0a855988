//! `sockwrap report FILE [--json | --format table|json|perfetto]`: the summary of a trace
//! file, or its timeline (`perfetto`: Chrome Trace Event JSON, see `crate::timeline`).

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
    let format = m.get_one::<String>("format").map(String::as_str);
    match format {
        Some("perfetto") => print!("{}", crate::timeline::perfetto(&text)),
        _ => crate::summary::print_summary(
            &text,
            m.get_flag("json") || format == Some("json"),
            false,
            Some("the file holds none (was the program out of the library's reach? `sockwrap doctor PROGRAM` says)"),
        ),
    }
    Ok(ExitCode::SUCCESS)
}
