//! The arguments several subcommands share, built once: the catalog's option flags, the
//! policy, action and log flags, the cgroup targets, `--json`, `--root`, the unit.

use clap::builder::{PossibleValue, StringValueParser, TypedValueParser};
use clap::{Arg, ArgAction, Command};
use sockwrap_policy::catalog::{Kind, Opt};
use std::ffi::OsStr;

/// The heading the catalog's option flags are listed under.
pub(super) const SOCKET_OPTIONS: &str = "Socket options";

/// Said by the subcommands whose help folds the option flags away (trace, explain, doctor,
/// attach): they take them all, and `sockwrap options` lists them.
pub(super) const FOLDED_OPTIONS: &str = "\
Socket options: every option flag of `sockwrap run` is taken here too (--dscp, --tos,
--keepalive, --nodelay, --mark, --congestion, ...); `sockwrap options` lists them all,
`sockwrap run --help` shows them as flags.";

/// Linux's congestion control modules (net/ipv4/tcp_*.c): what completion offers for
/// `--congestion` where the running kernel's list cannot be read (bash reads it: gen.rs).
/// The kernel decides what is available (`sockwrap doctor` lists it).
pub const CONGESTION_NAMES: [&str; 17] = [
    "cubic",
    "reno",
    "bbr",
    "bic",
    "cdg",
    "dctcp",
    "highspeed",
    "htcp",
    "hybla",
    "illinois",
    "lp",
    "nv",
    "scalable",
    "vegas",
    "veno",
    "westwood",
    "yeah",
];

/// The log levels `--log` takes (launch.rs checks them).
pub(super) const LOG_LEVELS: [&str; 5] = ["off", "error", "warn", "info", "debug"];

/// Takes any string, as before (the catalog parses it later and says what is wrong, as for
/// the policy file and the variables), but names the usual values, so that the shell
/// completions clap generates offer them instead of file names. clap's own
/// `PossibleValuesParser` would refuse every other spelling (`46`, `0xb8` for a DSCP).
#[derive(Clone)]
pub(super) struct Suggest(Vec<&'static str>);

impl TypedValueParser for Suggest {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.0.iter().map(|v| PossibleValue::new(*v))))
    }
}

/// An argument whose completion offers `values` (help does not list them: the help line
/// says what is taken).
pub(super) fn suggest(a: Arg, values: impl IntoIterator<Item = &'static str>) -> Arg {
    a.value_parser(Suggest(values.into_iter().collect()))
        .hide_possible_values(true)
}

/// The CLI flag for an option: `keepalive.idle` becomes `--keepalive-idle`.
pub fn flag_name(o: Opt) -> String {
    o.name().replace('.', "-")
}

pub(super) fn option_args() -> Vec<Arg> {
    let mut args = Vec::new();
    for o in Opt::ALL {
        let spec = o.spec();
        let name = flag_name(o);
        let mut a = Arg::new(name.clone())
            .long(name)
            .help(format!("{} [{}]", spec.help, spec.kernel));
        a = match (o, spec.kind) {
            (Opt::KeepAlive, _) => a
                .num_args(0..=1)
                .default_missing_value("on")
                .value_name("IDLE,INTVL,CNT"),
            (_, Kind::Bool) => a
                .num_args(0..=1)
                .default_missing_value("on")
                .value_name("on|off"),
            (_, Kind::Dscp) => suggest(
                a.value_name("CLASS"),
                sockwrap_policy::catalog::dscp_names(),
            ),
            (Opt::Congestion, _) => suggest(a.value_name("NAME"), CONGESTION_NAMES),
            (_, Kind::Name) => a.value_name("NAME"),
            (_, Kind::Addrs) => a.value_name("IP[,IP6]"),
            (_, Kind::Linger) => a.value_name("SECS|off"),
            _ => a.value_name("N").allow_negative_numbers(true),
        };
        args.push(a.help_heading(SOCKET_OPTIONS));
    }
    args.push(
        Arg::new("tos")
            .long("tos")
            .value_name("BYTE")
            .help(
                "the whole ToS/traffic class byte 0..255 (instead of --dscp) [IP_TOS, IPV6_TCLASS]",
            )
            .conflicts_with("dscp")
            .help_heading(SOCKET_OPTIONS),
    );
    args.push(
        Arg::new("hop-limit")
            .long("hop-limit")
            .value_name("N")
            .help("same as --ttl")
            .conflicts_with("ttl")
            .help_heading(SOCKET_OPTIONS),
    );
    args
}

/// The option flags, taken but not listed in `--help` (nor the man page): for the
/// subcommands where they are not the point. [`FOLDED_OPTIONS`] says so;
/// [`completion_command`] shows them again.
pub(super) fn folded_option_args() -> Vec<Arg> {
    option_args().into_iter().map(|a| a.hide(true)).collect()
}

pub(super) fn policy_args() -> Vec<Arg> {
    let args = vec![
        Arg::new("config")
            .short('c')
            .long("config")
            .value_name("FILE")
            .value_hint(clap::ValueHint::FilePath)
            .help("policy file (TOML); see `sockwrap help-config` and sockwrap.toml(5)"),
        Arg::new("to")
            .long("to")
            .value_name("CIDR[:PORT]")
            .action(ArgAction::Append)
            .help("apply the flag options only to these destinations (10.0.0.0/8, 127.0.0.1:8080, [::1]:443, :5432)"),
        Arg::new("soft")
            .long("soft")
            .num_args(0..=1)
            .default_missing_value("1")
            .value_name("OPT,...")
            .help("flag options are defaults the program may change (all, or the listed ones)"),
        Arg::new("strict")
            .long("strict")
            .action(ArgAction::SetTrue)
            .help("a refused option fails the program's call; a broken policy refuses to start"),
    ];
    args.into_iter().map(|a| a.help_heading("Policy")).collect()
}

/// What the flag rule does to a matching connect (with `--to`, only those destinations).
pub(super) fn action_args() -> Vec<Arg> {
    let h = "Connection actions (with --to: only those destinations)";
    vec![
        Arg::new("deny")
            .long("deny")
            .num_args(0..=1)
            .default_missing_value("ECONNREFUSED")
            .value_name("ERRNO")
            .help("matching connects fail with ERRNO (default ECONNREFUSED; also ENETUNREACH, EACCES, ETIMEDOUT...); nothing is sent")
            .help_heading(h),
        Arg::new("redirect")
            .long("redirect")
            .value_name("ADDR:PORT")
            .help("matching connects go to ADDR:PORT instead (getpeername still answers what the program asked for)")
            .help_heading(h),
        Arg::new("delay")
            .long("delay")
            .value_name("DURATION")
            .help("matching TCP connects complete DURATION later (250ms, 2s); non-blocking ones do not block the program")
            .help_heading(h),
        Arg::new("fail")
            .long("fail")
            .value_name("RATE[,ERRNO]")
            .help("this fraction 0..1 of matching connects fail with ERRNO (default ECONNRESET), chosen by a seeded generator")
            .help_heading(h),
        Arg::new("seed")
            .long("seed")
            .value_name("N")
            .help("seed of the --fail / fail = { ... } choices: the same seed fails the same connects (default: random, printed)")
            .help_heading(h),
    ]
}

pub(super) fn log_args() -> Vec<Arg> {
    let args = vec![
        suggest(Arg::new("log").long("log").value_name("LEVEL"), LOG_LEVELS)
            .help("off, error, warn (default), info, debug"),
        Arg::new("log-file")
            .long("log-file")
            .value_name("PATH")
            .value_hint(clap::ValueHint::FilePath)
            .help("write sockwrap's log here instead of stderr"),
    ];
    args.into_iter()
        .map(|a| a.help_heading("Logging"))
        .collect()
}

/// `--json` of check, explain, options and status: one document on stdout, its shape in
/// docs/json.md.
pub(super) fn json_arg() -> Arg {
    Arg::new("json")
        .long("json")
        .action(ArgAction::SetTrue)
        .help("print the result as one JSON document (its shape: docs/json.md)")
}

pub(super) fn command_arg() -> Arg {
    Arg::new("command")
        .num_args(1..)
        .required(true)
        .value_name("COMMAND")
        .value_hint(clap::ValueHint::CommandWithArguments)
        .last(true)
}

/// `--cgroup`, `--container`, `--pod`: a cgroup sockwrap did not make (cmd/containers.rs).
pub(super) fn cgroup_target_args(attach: bool) -> Vec<Arg> {
    let also = if attach {
        ": the kernel backend's programs are attached to it and pinned, so they stay after this command (root); its open sockets get what can still change"
    } else {
        ""
    };
    let args = [
        Arg::new("cgroup").long("cgroup").value_name("PATH").help(format!("a cgroup v2 directory (as /proc/PID/cgroup shows it, or under the mount){also}")),
        Arg::new("container").long("container").value_name("ID|NAME").help(format!("a container, found through podman or docker, or by its ID in the cgroup tree{also}")),
        Arg::new("pod").long("pod").value_name("UID").help(format!("a Kubernetes pod by its UID, in the kubelet's cgroups (systemd or cgroupfs driver){also}")),
    ];
    // --tree and --follow are what a cgroup target does anyway: all its processes, and the
    // sockets they open later.
    args.into_iter()
        .map(|a| {
            if attach {
                a.conflicts_with_all(["tree", "follow"])
            } else {
                a
            }
        })
        .collect()
}

pub(super) const AGENT_EXAMPLES: &str =
    "A container names its policy by a label, or the agent's config assigns one:
  podman run --label sockwrap.policy=db ...      # gets /etc/sockwrap/containers/db.toml
  # /etc/sockwrap/agent.toml
  [[assign]]
  image = \"docker.io/library/postgres:*\"
  policy = \"db\"

Examples:
  sudo sockwrap agent --policies /etc/sockwrap/containers -c /etc/sockwrap/agent.toml
  sudo systemctl enable --now sockwrap-agent      # the same, as a service (off by default)

The agent never detaches: stopping or restarting it leaves every container as it is.";

pub(super) const DETACH_EXAMPLES: &str = "Examples:
  sudo sockwrap detach --container web
  sudo sockwrap detach --pod 8d3c6a52-1f3e-4b7a-9c1d-2e3f4a5b6c7d
  sudo sockwrap status --containers      what is attached where";

pub(super) fn unit_arg() -> Arg {
    Arg::new("unit")
        .required_unless_present("system")
        .value_name("UNIT")
        .help("systemd unit (`nginx` means nginx.service)")
}

pub(super) fn system_arg() -> Arg {
    Arg::new("system")
        .long("system")
        .action(ArgAction::SetTrue)
        .conflicts_with("unit")
        .help("the whole host: every dynamically linked program, through /etc/ld.so.preload and /etc/sockwrap/host.policy")
}

pub(super) fn root_arg() -> Arg {
    Arg::new("root")
        .long("root")
        .value_name("DIR")
        .value_hint(clap::ValueHint::DirPath)
        .help("work on the files under DIR instead of / (as systemctl --root); no daemon-reload")
}
