//! `sockwrap explain [policy] --dest IP:PORT`: which options a destination would get, and
//! from which rule, without running anything.

use crate::error::{Error, Result};
use crate::launch::flag_vars;
use clap::ArgMatches;
use sockwrap_policy::catalog::{self, Shown};
use sockwrap_policy::rules::ip_key;
use sockwrap_policy::{Ctx, Role, Transport};
use std::net::SocketAddr;
use std::process::ExitCode;

pub fn explain(m: &ArgMatches) -> Result<ExitCode> {
    let vars = flag_vars(m)?;
    let loaded = sockwrap_policy::load(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())), |p| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read the policy file: {e}"))
    });
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            eprintln!("{e}");
        }
        return Err(Error::Findings);
    }
    let dest = m
        .get_one::<String>("dest")
        .map(String::as_str)
        .unwrap_or("");
    let addr: SocketAddr = dest.parse().map_err(|_| {
        Error::usage(format_args!(
            "--dest: `{dest}` is not IP:PORT (use [v6]:port for IPv6)"
        ))
    })?;
    let transport = match m.get_one::<String>("transport").map(String::as_str) {
        Some("udp") => Transport::Udp,
        _ => Transport::Tcp,
    };
    let role = match m.get_one::<String>("role").map(String::as_str) {
        Some("server") => Role::Server,
        _ => Role::Client,
    };
    let policy = match m.get_one::<String>("program") {
        Some(p) => loaded.policy.for_program(&[p.as_str()]),
        None => loaded.policy.clone(),
    };
    let ctx = Ctx {
        transport,
        role: Some(role),
        remote: Some((ip_key(addr.ip()), addr.port())),
        local_port: None,
    };
    let rows = policy.explain(&ctx);
    if rows.is_empty() {
        println!("{dest} ({transport:?} {role:?}): no option applies");
    } else {
        println!("{dest} ({transport:?} {role:?}):");
        for (o, s, rule) in rows {
            let tcp_only = o.spec().applies == catalog::Applies::Tcp && transport == Transport::Udp;
            println!(
                "  {:<18} {:<14} {:<6} from {}{}",
                o.name(),
                Shown(o, s.value).to_string(),
                if s.soft { "soft" } else { "locked" },
                rule,
                if tcp_only {
                    "  (TCP only: not applied to UDP)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
