//! What `--kernel` cannot carry out, refused by name before anything is loaded.

use sockwrap_policy::catalog::Opt;
use sockwrap_policy::Policy;

/// Why the kernel backend cannot carry out option `o`, and what to use instead; `None` for
/// the options it carries out.
pub fn refused_opt(o: Opt) -> Option<&'static str> {
    Some(match o {
        Opt::Linger => {
            "SO_LINGER: bpf_setsockopt does not support it (kernel 6.18 net/core/filter.c); use the library (sockwrap run without --kernel)"
        }
        Opt::Ttl => {
            "IP_TTL / IPV6_UNICAST_HOPS: bpf_setsockopt does not support them (kernel 6.18 net/core/filter.c); use the library (sockwrap run without --kernel)"
        }
        Opt::Mptcp => {
            "MPTCP: the protocol is chosen in socket(), so bpf_setsockopt cannot set it; run --kernel and enable --kernel convert with a program of their own where the kernel takes it (Linux 6.6+); elsewhere: Go 1.21+ programs: GODEBUG=multipathtcp=1, dynamically linked ones: sockwrap run --mptcp without --kernel"
        }
        _ => return None,
    })
}

/// The options and actions `--kernel` cannot carry out, one line each: why, and what to use
/// instead. A policy with any of them is refused, never applied in part. (`deny` and
/// `redirect` are carried out: connect4/6 and sendmsg4/6 refuse or rewrite the address.)
pub fn refusals(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for rule in policy.rules() {
        for (opt, _) in rule.settings.iter() {
            // MPTCP is not set by bpf_setsockopt but by the conversion program, where the
            // kernel takes it (crate::mptcp: loaded, or refused by name, by the caller).
            if opt == Opt::Mptcp {
                continue;
            }
            if let Some(why) = refused_opt(opt) {
                out.push(format!("rule `{}`: {}: {why}", rule.name, opt.name()));
            }
        }
        let name = &rule.name;
        if rule.matcher.uses_host() {
            out.push(format!("rule `{name}`: match.host: host names are known only to the library, which sees the program's getaddrinfo; the kernel sees addresses (use match.remote, or sockwrap run without --kernel)"));
        }
        let a = &rule.actions;
        if a.delay_ms.is_some() {
            out.push(format!("rule `{name}`: delay: a BPF program cannot hold a connect back and let it go later; use sockwrap run without --kernel"));
        }
        if a.fail.is_some() {
            out.push(format!("rule `{name}`: fail: the seeded per-rule choices live in the library; use sockwrap run without --kernel"));
        }
    }
    out
}
