//! `sockwrap options`: the option catalog as a table (the same catalog that makes the
//! flags, the policy keys and the option table of sockwrap.toml(5)).

use sockwrap_policy::catalog::{self, Opt};
use std::process::ExitCode;

/// When an option is applied, in words.
pub fn when_text(w: catalog::When) -> &'static str {
    match w {
        catalog::When::Any => "any time",
        catalog::When::BeforeConnect => "before connect",
        catalog::When::BeforeBind => "before bind",
        catalog::When::Create => "at socket()",
    }
}

pub fn options() -> ExitCode {
    println!("{:<20} {:<44} {:<14} VALUES", "OPTION", "KERNEL", "WHEN");
    for o in Opt::ALL {
        let s = o.spec();
        let tcp = if s.applies == catalog::Applies::Tcp {
            " (TCP only)"
        } else {
            ""
        };
        println!(
            "{:<20} {:<44} {:<14} {}{}",
            s.name,
            s.kernel,
            when_text(s.when),
            s.help,
            tcp
        );
    }
    ExitCode::SUCCESS
}

/// `sockwrap options --json`: the same catalog, one object per option (docs/json.md).
pub fn options_json() -> ExitCode {
    use crate::summary::Json;
    let rows: Vec<Json> = Opt::ALL
        .iter()
        .map(|o| {
            let s = o.spec();
            Json::object([
                ("option", s.name.into()),
                ("aliases", s.aliases.to_vec().into()),
                ("flag", format!("--{}", crate::cli::flag_name(*o)).into()),
                ("variable", sockwrap_policy::env::var_for(*o).into()),
                ("kernel", s.kernel.into()),
                ("when", when_text(s.when).into()),
                ("tcp_only", (s.applies == catalog::Applies::Tcp).into()),
                ("values", s.help.into()),
            ])
        })
        .collect();
    println!("{}", Json::object([("options", Json::Arr(rows))]).to_json());
    ExitCode::SUCCESS
}

pub const EXAMPLE_CONFIG: &str = include_str!("../../../../docs/example-policy.toml");

pub fn help_config() -> ExitCode {
    print!("{EXAMPLE_CONFIG}");
    ExitCode::SUCCESS
}
