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

/// The spellings with a flag of their own, listed beside the option they set: `tos` (the
/// whole byte instead of the class) and `hop-limit` (IPv6's name for the TTL).
pub const SPELLINGS: [(&str, Opt, &str); 2] = [
    (
        "tos",
        Opt::Tos,
        "the whole ToS / traffic class byte 0..255 (`0xb8`), instead of dscp",
    ),
    ("hop-limit", Opt::Ttl, "the same as ttl"),
];

/// The rows of `sockwrap options`: every catalog option, and beside `dscp` and `ttl` the
/// spellings with a flag of their own.
pub fn rows() -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    for o in Opt::ALL {
        let s = o.spec();
        let tcp = if s.applies == catalog::Applies::Tcp {
            " (TCP only)"
        } else {
            ""
        };
        let when = when_text(s.when).to_string();
        rows.push([
            s.name.to_string(),
            s.kernel.to_string(),
            when.clone(),
            format!("{}{tcp}", s.help),
        ]);
        for (name, _, help) in SPELLINGS.iter().filter(|(_, of, _)| *of == o) {
            rows.push([
                name.to_string(),
                s.kernel.to_string(),
                when.clone(),
                help.to_string(),
            ]);
        }
    }
    rows
}

pub fn options() -> ExitCode {
    let head = ["OPTION", "KERNEL", "WHEN", "VALUES"].map(String::from);
    let rows = rows();
    // Each column as wide as its widest cell, so that every row lines up.
    let width = |c: usize| {
        rows.iter()
            .chain([&head])
            .map(|r| r[c].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for r in [&head].into_iter().chain(&rows) {
        println!("{:<w0$}  {:<w1$}  {:<w2$}  {}", r[0], r[1], r[2], r[3]);
    }
    ExitCode::SUCCESS
}

/// `sockwrap options --json`: the same catalog, one object per option (docs/json.md).
pub fn options_json() -> ExitCode {
    use crate::json::{Json, JsonExt as _};
    let rows: Vec<Json> = Opt::ALL
        .iter()
        .map(|o| {
            let s = o.spec();
            crate::json::object([
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
    println!(
        "{}",
        crate::json::object([("options", Json::Array(rows))]).to_json()
    );
    ExitCode::SUCCESS
}

pub const EXAMPLE_CONFIG: &str = include_str!("../../../../docs/example-policy.toml");

pub fn help_config() -> ExitCode {
    print!("{EXAMPLE_CONFIG}");
    ExitCode::SUCCESS
}
