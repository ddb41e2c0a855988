//! The command line, defined once: `--help`, the man pages (`gen-man`) and the shell
//! completions (`gen-completions`) are all generated from [`command`]. The socket option
//! flags come from the option catalog, so flags, policy keys and `SOCKWRAP_*` variables
//! always agree.

use crate::error::EXIT_CODES;
use clap::{Arg, ArgAction, Command};
use sockwrap_policy::catalog::Opt;

mod args;
use args::*;
pub use args::{flag_name, CONGESTION_NAMES};

const RUN_EXAMPLES: &str = "\
Examples:
  sockwrap run --dscp EF --keepalive 30,10,3 --nodelay -- ssh -p 2222 user@host
  sockwrap run -c /etc/sockwrap/policy.toml -- python3 client.py
  sockwrap run --mptcp -- iperf3 -c 10.0.1.2
  sockwrap run --dscp AF41 --to 10.0.0.0/8 --to :443 -- curl https://intranet/
  sockwrap run --log info --dscp CS6 -- curl http://127.0.0.1:8080/
  sockwrap run --deny --to 192.0.2.10:443 -- ./app          # the app must cope without it
  sockwrap run --redirect 127.0.0.1:8443 --to 192.0.2.10:443 -- ./app
  sockwrap run --fail 0.2,ECONNRESET --delay 250ms --to :5432 --seed 7 -- ./app

sockwrap execs the program (no process stays in between) and exits with its status.

With --kernel (root): sockwrap stays as the parent, runs the program in a fresh cgroup v2
child with BPF programs built from the same policy, waits for the program's whole process
tree, then detaches and removes the cgroup; the exit status is the program's.
  sudo sockwrap run --kernel --dscp EF --keepalive 30,10,3 -- ./static-or-go-binary
  sudo sockwrap run --kernel -c policy.toml --user app -- ./server
  sudo sockwrap run --kernel --mptcp -- ./static-or-go-binary   # Linux 6.6+: docs/mptcp-kernel.md";

const TRACE_EXAMPLES: &str = "\
Examples:
  sockwrap trace -- curl -s http://127.0.0.1:8080/
  sockwrap trace -o calls.jsonl -- ssh host true
  sockwrap trace --dscp EF --json -- python3 client.py
  sudo sockwrap trace --kernel -o conns.jsonl -- ./static-or-go-binary";

const REPORT_EXAMPLES: &str = "\
Examples:
  sockwrap report calls.jsonl
  sockwrap report --json calls.jsonl | jq '.connections[]'
  sockwrap report --format perfetto calls.jsonl > timeline.json   # open in ui.perfetto.dev";

const CHECK_EXAMPLES: &str = "\
Examples:
  sockwrap check /etc/sockwrap/policy.toml
  sockwrap check site.toml ssh.toml    # exit 1 if any file has errors
  sockwrap check -c policy.toml        # the same -c as run and explain";

const EXPLAIN_EXAMPLES: &str = "\
Every rule that matches is listed in order, with the options a later rule overrode: the
last match wins, per option.

Examples:
  sockwrap explain -c policy.toml 10.1.2.3:22
  sockwrap explain -c policy.toml 192.0.2.7:51000 --role server --local-port 443
  sockwrap explain -c policy.toml --dest 10.1.2.3:22 --program ssh
  sockwrap explain -c policy.toml --dest [2001:db8::5]:5432 --role server
  sockwrap explain --dscp EF --to :443 --dest 192.0.2.1:443
  sockwrap explain --kernel -c policy.toml --dest 10.1.2.3:22 --program ssh
  sockwrap explain -c chaos.toml --dest 10.9.1.1:443 --host api.internal.example";

const DOCTOR_EXAMPLES: &str = "\
Examples:
  sockwrap doctor                        # the machine: what this kernel supports per backend and
                                         # feature (probed; as root), congestion control, MPTCP
  sockwrap doctor --json                 # the kernel's support as JSON
  sockwrap doctor curl                   # can sockwrap reach curl?
  sockwrap doctor ./server               # static, Go, musl, setuid or setcap: said, with what to use instead
  sockwrap doctor --mark 7 --congestion bbr ssh  # can these options be set here, as this user?
  sockwrap doctor sudo -u app ./client   # a wrapper that drops the environment is reported

Exit 0 when nothing stands in the way, 1 when something does (each finding says what to do).";

const OPTIONS_EXAMPLES: &str = "\
Examples:
  sockwrap options
  sockwrap options | grep -i keepalive";

const HELP_CONFIG_EXAMPLES: &str = "\
Examples:
  sockwrap help-config > policy.toml && sockwrap check policy.toml

The format is described in sockwrap.toml(5).";

const ENABLE_EXAMPLES: &str = "\
Examples:
  sockwrap enable nginx --dscp AF41
  sockwrap enable postgresql@15-main -c db-keepalive.toml
  sockwrap enable --dry-run ssh.service --dscp EF
  sockwrap enable myapp.service -c policy.toml --root /srv/image
  sockwrap enable --system -c host.toml        # every program of the host
  sockwrap enable --system                     # recompile /etc/sockwrap/host.toml after an edit
  sudo sockwrap enable myapp.service --kernel -c policy.toml   # cgroup BPF, through systemd

Writes /etc/systemd/system/UNIT.d/sockwrap.conf (the vendor unit is never edited). The
unit's own Environment= settings stay; an LD_PRELOAD it sets is kept after libsockwrap.so.
A -c FILE is COPIED to /etc/sockwrap/units/UNIT.toml: later edits of FILE do not reach the
service until `sockwrap enable` runs again. Then: systemctl restart UNIT.

With --system: the policy is compiled into /etc/sockwrap/host.policy (no process parses
TOML; one that no rule names reads one line of it), a copy kept as /etc/sockwrap/host.toml,
and the library added to /etc/ld.so.preload (atomically). Programs started from then on get
it; `program` rules choose which. The log is off unless --log says otherwise.

With --kernel (root): the kernel backend's programs, loaded with the compiled policy, are
pinned in /sys/fs/bpf/sockwrap/UNIT/ (programs by attach type, maps under maps/), and the
drop-in names them in BPFProgram= lines: systemd attaches them to the unit's cgroup when
it starts, so static and Go programs are reached too. No LD_PRELOAD. Pins live in memory:
enable also writes /etc/systemd/system/sockwrap-pins-UNIT.service (the unit's `.` as `_`),
which the drop-in pulls in before the unit starts; it holds the policy and pins the
programs again when one is missing (after a reboot). disable removes it. With --root the
drop-in and that unit are written under DIR and nothing is pinned (the pins belong to the
running kernel's bpffs).";

const DISABLE_EXAMPLES: &str = "\
Examples:
  sockwrap disable nginx
  sockwrap disable myapp.service --root /srv/image
  sockwrap disable --system

Removes the drop-in and the policy copy that `enable` wrote, nothing else. With --system:
the library's line in /etc/ld.so.preload (only that line) and /etc/sockwrap/host.*.
Then: systemctl restart UNIT.";

/// `attach --help`: short. The whole story is in sockwrap-attach(1) ([`ATTACH_DETAILS`])
/// and the guide's attach page.
const ATTACH_EXAMPLES: &str = "\
Examples:
  sockwrap attach 4242 --list                                # its sockets and their options now
  sudo sockwrap attach 4242 --dscp EF --keepalive 30,10,3 --dry-run
  sudo sockwrap attach 4242 -c policy.toml --role client
  sudo sockwrap attach $(pgrep -o sshd) --tree --dscp CS2 --json
  sudo sockwrap attach 4242 --dscp EF --follow               # and its new sockets, until it exits

Each socket is duplicated with pidfd_getfd (the program does not notice), given what the
policy's rules choose for it, and read back before and after. The values are set ONCE and
are NOT locked: the program may set its own again, and the sockets it opens later get
nothing (unless --follow). Skipped, as they cannot change on an open socket:
  {FIXED}.
Needs Linux 5.6+ (pidfd_getfd) and ptrace access: root, or the same user with
kernel.yama.ptrace_scope = 0. Exit 0 all set, 1 the kernel refused an option, 2 no such
PID, a policy with errors or a kernel older than 5.6 (nothing touched), 3 no permission.

FOLLOW (--follow, root): the process (with --tree, the tree) is moved into a cgroup v2
child made UNDER THE CGROUP IT IS IN, with the kernel backend's programs: the sockets it
opens from then on get the policy and its locks. sockwrap stays until they all exit, or
until Ctrl-C, TERM, HUP or QUIT: then it moves them back to the cgroup they came from.
Options the kernel backend cannot set ({REFUSED}) are refused first (exit 2).
After a kill -9, `sockwrap doctor` (root) moves them back. A systemd service keeps its accounting,
its limits and KillMode=control-group stops: the cgroup is a child of the unit's.
All of it: sockwrap-attach(1), and the guide's page on attach (docs/guide).";

/// sockwrap-attach(1)'s text after the options: what `attach --help` says in short.
const ATTACH_DETAILS: &str = "\
Examples:
  sockwrap attach 4242 --list                                # its sockets and their options now
  sudo sockwrap attach 4242 --dscp EF --keepalive 30,10,3 --dry-run
  sudo sockwrap attach 4242 --dscp EF --keepalive 30,10,3
  sudo sockwrap attach 4242 -c policy.toml --role client
  sudo sockwrap attach $(pgrep -o sshd) --tree --dscp CS2 --json
  sudo sockwrap attach 4242 --dscp EF --follow --dry-run     # what --follow would move where
  sudo sockwrap attach 4242 --dscp EF --follow               # and its new sockets, until it exits

Each TCP/UDP socket of the process gets what the policy's rules choose for it (remote,
port, local-port, role, transport, program: as under `sockwrap run`). The values are set
ONCE and are NOT locked: the program may set its own again later, and sockets it opens
after attach get nothing (unless --follow; or restart it under `sockwrap run`). Every value
is read back before and after. Options that cannot change on an open socket are named and
skipped:
  {FIXED}.

Needs Linux 5.6+ (pidfd_getfd) and ptrace access to the process: root (CAP_SYS_PTRACE),
or its own user with kernel.yama.ptrace_scope = 0. Exit 0 when every option was set (or
already was), 1 when the kernel refused one (mark needs CAP_NET_ADMIN), 2 no such PID,
a policy with errors or a kernel older than 5.6 (nothing is touched), 3 no permission.

FOLLOW (--follow, root): before the one-shot part, the process (all its threads; with
--tree every process of the tree) is moved into a fresh cgroup v2 child, made UNDER THE
CGROUP IT IS IN (sockwrap-follow-PID-START) and carrying the kernel backend's BPF
programs built from the same policy (as `run --kernel`). The sockets it opens from then on
get the policy and its locks; its open sockets get the one-shot values, without locks (a
socket belongs to the cgroup it was made in; so does a connection accepted later by a
listener opened before: it inherits what the one-shot part set on the listener). sockwrap stays in the foreground until every process in the cgroup
has exited (exit 0, or 1 if the kernel refused an option), or until Ctrl-C, TERM, HUP or
QUIT: then it moves them back to the cgroup they came from, and they keep running (exit
128+N). Either way it removes the cgroup and its programs. Options the kernel backend
cannot set ({REFUSED}) are refused first, one line each, exit 2, and nothing is done,
the one-shot part neither. Not root, no cgroup v2, BPF programs that do not load, or a
process that cannot be moved (a kernel thread, a threaded cgroup, another sockwrap's
cgroup): one line, exit 3, the process left where it was. If sockwrap is killed (kill -9),
its cgroup stays with the process in it, without programs; `sockwrap doctor` (root) or the
next `run --kernel` or `attach --follow` moves the process back and removes it.

What the move does to a systemd service: the cgroup is a child of the unit's, so the
unit's accounting (CPU, memory, IO: cgroup v2 counts children in their parent) and its
limits (MemoryMax=, TasksMax=, ...: they bound the whole subtree) still include the
process, and `systemctl stop` still reaches it (KillMode=control-group and mixed kill the
unit's whole subtree); systemd removes the sockwrap cgroup with the unit's. While
followed, the process is no longer directly in the unit's cgroup: `systemctl status` lists
it under the sockwrap cgroup, and the unit's own cgroup.procs no longer holds it. Stopping
the follow moves it back.";

const STATUS_EXAMPLES: &str = "\
Examples:
  sockwrap status nginx
  sockwrap status myapp.service --root /srv/image
  sockwrap status --system

Exit 0 when the drop-in is in place and complete, 1 when it is not.";

/// [`ATTACH_EXAMPLES`] with the options attach skips and those --follow refuses, from the
/// catalog and the kernel backend.
fn attach_help() -> String {
    attach_text(ATTACH_EXAMPLES)
}

/// The text after the options in the man page of subcommand `name`, when it says more than
/// its `--help` does.
pub fn man_after_help(name: &str) -> Option<String> {
    (name == "attach").then(|| format!("{}\n\n{FOLDED_OPTIONS}", attach_text(ATTACH_DETAILS)))
}

fn attach_text(text: &str) -> String {
    let fixed: Vec<&str> = Opt::ALL
        .into_iter()
        .filter(|o| sockwrap_policy::plan::fixed_once_open(*o).is_some())
        .map(Opt::name)
        .collect();
    let refused: Vec<&str> = Opt::ALL
        .into_iter()
        .filter(|o| sockwrap_kernel::tables::refused_opt(*o).is_some())
        .map(Opt::name)
        .collect();
    text.replace("{FIXED}", &fixed.join(", "))
        .replace("{REFUSED}", &refused.join(", "))
}

/// The command line sockwrap parses: every subcommand, the internal ones hidden.
pub fn command() -> Command {
    let mut cmd = visible_command();
    for internal in internal_commands() {
        cmd = cmd.subcommand(internal);
    }
    cmd
}

/// What the shell completions offer: no internal subcommand, and the option flags of every
/// subcommand (the help of some folds them away, but they are taken).
pub fn completion_command() -> Command {
    let mut cmd = visible_command();
    for name in ["trace", "explain", "doctor", "attach"] {
        cmd = cmd.mut_subcommand(name, |sub| {
            let ids: Vec<String> = sub
                .get_arguments()
                .filter(|a| a.get_help_heading() == Some(SOCKET_OPTIONS))
                .map(|a| a.get_id().to_string())
                .collect();
            ids.iter()
                .fold(sub, |sub, id| sub.mut_arg(id.as_str(), |a| a.hide(false)))
        });
    }
    cmd
}

/// Subcommands for sockwrap's own use (systemd units it writes, `make`): hidden from
/// `--help` and left out of the completions.
fn internal_commands() -> [Command; 3] {
    [
        Command::new("repin")
            .hide(true)
            .about("Pin the BPF programs of an `enable --kernel` UNIT again, from the policy in the SOCKWRAP_* variables, if a pin is missing (run by the sockwrap-pins-UNIT.service that enable writes)")
            .arg(Arg::new("unit").required(true).value_name("UNIT"))
            .arg(
                Arg::new("mptcp-target")
                    .long("mptcp-target")
                    .action(ArgAction::SetTrue)
                    .help("Aim UNIT's pinned MPTCP conversion at this process's own cgroup (the unit's ExecStartPre= runs it at each start)"),
            ),
        Command::new("gen-man")
            .hide(true)
            .about("Write the man pages (sockwrap.1, sockwrap-SUBCOMMAND.1, sockwrap.toml.5) into DIR")
            .arg(Arg::new("dir").required(true).value_name("DIR")),
        Command::new("gen-completions")
            .hide(true)
            .about("Write the bash, zsh and fish completions into DIR")
            .arg(Arg::new("dir").required(true).value_name("DIR")),
    ]
}

fn visible_command() -> Command {
    let enable = Command::new("enable")
        .about(
            "Give a systemd service the policy (a drop-in for UNIT), or the whole host (--system)",
        )
        .after_help(ENABLE_EXAMPLES)
        .arg(unit_arg())
        .arg(system_arg())
        .arg(root_arg())
        .arg(
            Arg::new("dry-run")
                .long("dry-run")
                .action(ArgAction::SetTrue)
                .help("print the drop-in (and the policy copy) and change nothing"),
        )
        .arg(
            Arg::new("kernel")
                .long("kernel")
                .action(ArgAction::SetTrue)
                .conflicts_with("system")
                .help("carry the policy out with the kernel backend's cgroup BPF programs, pinned in /sys/fs/bpf/sockwrap/UNIT and attached by systemd (BPFProgram=) to the unit's cgroup (root)"),
        )
        .args(policy_args())
        .args(option_args())
        .args(action_args())
        .args(log_args());
    Command::new("sockwrap")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Run unmodified programs with the socket options you choose (DSCP, keepalive, nodelay, mark, ...)")
        .long_about(
            "Run unmodified programs with the socket options you choose (DSCP, keepalive, nodelay, \
             mark, MPTCP, ...). sockwrap preloads libsockwrap.so into the program; every TCP and UDP \
             socket it opens gets the options of the policy (flags, SOCKWRAP_* variables or a TOML \
             file, see sockwrap.toml(5)), locked so the program cannot undo them unless they are soft.",
        )
        .after_help(format!(
            "Examples:\n  sockwrap run --dscp EF -- ssh host\n  sockwrap run -c policy.toml -- curl http://example.net/\n  sockwrap enable nginx --dscp AF41\n\n{EXIT_CODES}"
        ))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("run")
                .about("Run a program with the policy applied to its sockets")
                .after_help(RUN_EXAMPLES)
                .args(policy_args())
                .args(option_args())
                .args(action_args())
                .args(log_args())
                .arg(Arg::new("trace").long("trace").value_name("FILE").value_hint(clap::ValueHint::FilePath).help("append a JSON-lines trace of every socket call to FILE (docs/trace-schema.md)"))
                .arg(Arg::new("kernel").long("kernel").action(ArgAction::SetTrue).conflicts_with("trace").help("apply the policy with cgroup BPF programs instead of the library: reaches static and Go binaries and libc's own sockets (root only; the guide: 'The kernel backend')"))
                .arg(Arg::new("user").long("user").value_name("USER").requires("kernel").help("with --kernel: run the program as USER (name or uid) after moving it into the cgroup"))
                .arg(command_arg()),
        )
        .subcommand(
            Command::new("trace")
                .about("Run a program, record every socket call it makes, and print one row per connection")
                .after_help(format!("{TRACE_EXAMPLES}\n\n{FOLDED_OPTIONS}"))
                .args(policy_args())
                .args(folded_option_args())
                .args(action_args())
                .args(log_args())
                .arg(Arg::new("output").short('o').long("output").value_name("FILE").value_hint(clap::ValueHint::FilePath).help("keep the full record (JSON lines) in FILE (replaced); default: a temporary file, removed"))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print the summary as JSON"))
                .arg(Arg::new("kernel").long("kernel").action(ArgAction::SetTrue).help("record from cgroup BPF programs instead of the library: every socket of the program's cgroup, static and Go binaries and io_uring included; the policy is applied as run --kernel does (root only; docs/trace-kernel.md)"))
                .arg(Arg::new("user").long("user").value_name("USER").requires("kernel").help("with --kernel: run the program as USER (name or uid) after moving it into the cgroup"))
                .arg(Arg::new("ring-kb").long("ring-kb").value_name("KIB").requires("kernel").value_parser(clap::value_parser!(u32)).help("with --kernel: the BPF ring buffer's size in KiB (default 256, rounded up to a power of two); events that find it full are counted and reported as lost"))
                .arg(command_arg()),
        )
        .subcommand(
            Command::new("report")
                .about("Summarise a trace file (from `sockwrap trace -o` or `run --trace`): one row per connection")
                .after_help(REPORT_EXAMPLES)
                .arg(Arg::new("file").required(true).value_name("FILE").value_hint(clap::ValueHint::FilePath))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).conflicts_with("format").help("print the summary as JSON (the same as --format json)"))
                .arg(Arg::new("format").long("format").value_name("FORMAT").value_parser(["table", "json", "perfetto"]).help("table (default), json, or perfetto: a timeline in the Chrome Trace Event format for ui.perfetto.dev or chrome://tracing (one track per thread, one span per connection)")),
        )
        .subcommand(
            Command::new("check")
                .about("Validate policy files; print each error with line and column")
                .after_help(CHECK_EXAMPLES)
                .arg(Arg::new("files").num_args(1..).required_unless_present("config").value_name("FILE").value_hint(clap::ValueHint::FilePath))
                // `-c FILE` as in run, explain and attach, so the same words work here too.
                .arg(Arg::new("config").short('c').long("config").value_name("FILE").action(ArgAction::Append).value_hint(clap::ValueHint::FilePath).help("a policy file, as with run -c (the same as giving it as FILE)"))
                .arg(json_arg()),
        )
        .subcommand(
            Command::new("explain")
                .about("Show which options a destination would get, and from which rule")
                .after_help(format!("{EXPLAIN_EXAMPLES}\n\n{FOLDED_OPTIONS}"))
                .args(policy_args())
                .args(folded_option_args())
                .args(action_args())
                .arg(Arg::new("DEST").value_name("IP:PORT").conflicts_with("dest").help("the remote address and port (a server's: the peer of the accepted connection)"))
                .arg(Arg::new("dest").long("dest").value_name("IP:PORT").help("the same as DEST"))
                .arg(Arg::new("local-port").long("local-port").value_name("PORT").value_parser(clap::value_parser!(u16)).help("the socket's local port, for local-port rules (with --role server, default: DEST's port)"))
                .arg(Arg::new("host").long("host").value_name("NAME").help("the host name the program resolved to get this address (for match.host rules)"))
                .arg(Arg::new("transport").long("transport").value_name("tcp|udp").value_parser(["tcp", "udp"]).default_value("tcp"))
                .arg(Arg::new("role").long("role").value_name("client|server").value_parser(["client", "server"]).default_value("client"))
                .arg(Arg::new("program").long("program").value_name("NAME").help("program name to match rules against"))
                .arg(Arg::new("kernel").long("kernel").action(ArgAction::SetTrue).help("also show what the --kernel BPF programs would do: the hook, each bpf_setsockopt/bpf_bind, the locks; or what --kernel refuses"))
                .arg(json_arg().conflicts_with("kernel")),
        )
        .subcommand(
            Command::new("doctor")
                .about("Can sockwrap reach PROGRAM (static? Go? setuid? setcap? musl?), can the options be set here, is MPTCP usable?")
                .after_help(format!("{DOCTOR_EXAMPLES}\n\n{FOLDED_OPTIONS}"))
                // --soft and --strict mean nothing here: doctor runs no program.
                .args(policy_args().into_iter().filter(|a| matches!(a.get_id().as_str(), "config" | "to")))
                .args(folded_option_args())
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("with no PROGRAM: print what this kernel supports (probed) as one JSON object, and nothing else"))
                .arg(
                    Arg::new("program")
                        .value_name("PROGRAM")
                        .help("a program to check, with its arguments: can sockwrap reach it, can the options be set for it?")
                        .num_args(1..)
                        .trailing_var_arg(true)
                        .allow_hyphen_values(true)
                        .value_hint(clap::ValueHint::CommandWithArguments),
                ),
        )
        .subcommand(enable)
        .subcommand(
            Command::new("disable")
                .about("Remove what `sockwrap enable` wrote for UNIT (or --system)")
                .after_help(DISABLE_EXAMPLES)
                .arg(unit_arg())
                .arg(system_arg())
                .arg(root_arg()),
        )
        .subcommand(
            Command::new("status")
                .about("Show the sockwrap drop-in of UNIT (or the host-wide state, --system): the library, the policy, what overrides it")
                .after_help(STATUS_EXAMPLES)
                .arg(unit_arg().required_unless_present_any(["system", "containers"]))
                .arg(system_arg())
                .arg(Arg::new("containers").long("containers").action(ArgAction::SetTrue).conflicts_with_all(["unit", "system", "root"]).help("the cgroups (containers, pods) that `attach --cgroup/--container/--pod` gave a policy, and whether each is still there"))
                .arg(root_arg())
                .arg(json_arg()),
        )
        .subcommand(
            Command::new("attach")
                .about("Set socket options on the open sockets of a running process (once: they cannot be locked)")
                .after_help(format!("{}\n\n{FOLDED_OPTIONS}", attach_help()))
                .arg(Arg::new("pid").value_name("PID").value_parser(clap::value_parser!(i32)).allow_negative_numbers(true).help("the process (a thread ID means its process)"))
                .args(cgroup_target_args(true))
                .group(clap::ArgGroup::new("target").args(["pid", "cgroup", "container", "pod"]).required(true))
                .arg(Arg::new("list").long("list").action(ArgAction::SetTrue).help("show the TCP/UDP sockets and their current options; change nothing"))
                .arg(Arg::new("dry-run").long("dry-run").action(ArgAction::SetTrue).help("show what would change, with the current values; set nothing"))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print the result as JSON"))
                .arg(Arg::new("tree").long("tree").action(ArgAction::SetTrue).help("also every descendant process (forked workers, sshd's session processes)"))
                .arg(Arg::new("follow").long("follow").action(ArgAction::SetTrue).conflicts_with("list").help("also move the process (with --tree: the tree) into a sockwrap cgroup with the kernel backend's programs, so that the sockets it opens later get the policy and its locks; stays until it exits, Ctrl-C moves it back (root; see FOLLOW below)"))
                .arg(Arg::new("role").long("role").value_name("client|server").value_parser(["client", "server"]).help("only sockets of this role (server: listening and accepted sockets)"))
                .args(policy_args().into_iter().filter(|a| matches!(a.get_id().as_str(), "config" | "to")))
                .args(folded_option_args()),
        )
        .subcommand(
            Command::new("agent")
                .about("Give containers their policy when they start, following podman or docker (root; a service: sockwrap-agent.service)")
                .after_help(AGENT_EXAMPLES)
                .arg(Arg::new("policies").long("policies").value_name("DIR").value_hint(clap::ValueHint::DirPath).help("the policies, one NAME.toml each (default /etc/sockwrap/containers)"))
                .arg(Arg::new("config").long("config").short('c').value_name("FILE").value_hint(clap::ValueHint::FilePath).help("[[assign]] rules: a policy by image and name pattern, for containers without a sockwrap.policy label (default /etc/sockwrap/agent.toml, when it exists)"))
                .arg(Arg::new("runtime").long("runtime").value_name("RUNTIME").value_parser(["auto", "podman", "docker", "cri"]).help("the runtime to follow (default auto: podman, else docker); cri: Kubernetes pods through crictl, by their sockwrap.io/policy annotation"))
                .arg(Arg::new("once").long("once").action(ArgAction::SetTrue).help("only the containers running now, then exit")),
        )
        .subcommand(
            Command::new("detach")
                .about("Remove the policy `attach --cgroup/--container/--pod` attached (root)")
                .after_help(DETACH_EXAMPLES)
                .args(cgroup_target_args(false))
                .group(clap::ArgGroup::new("target").args(["cgroup", "container", "pod"]).required(true)),
        )
        .subcommand(
            Command::new("options")
                .about("List every option with its kernel option and accepted values")
                .after_help(OPTIONS_EXAMPLES)
                .arg(json_arg()),
        )
        .subcommand(
            Command::new("help-config")
                .about("Print a commented example policy file")
                .after_help(HELP_CONFIG_EXAMPLES),
        )
}

/// clap's error for a program named without `--` before it (`sockwrap run --dscp AF41 curl
/// URL`: "unexpected argument 'curl' found"), with a tip that gives the command corrected.
/// clap suggests `--` only for arguments that look like flags.
pub fn with_dash_dash_tip(mut e: clap::Error, argv: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return e;
    }
    let Some(ContextValue::String(bad)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let bad = bad.clone();
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let takes_command = matches!(args.get(1).map(String::as_str), Some("run" | "trace"));
    let at = args.iter().skip(2).position(|a| *a == bad).map(|i| i + 2);
    let (true, Some(at), false) = (takes_command, at, bad.starts_with('-')) else {
        return e;
    };
    if args[..at].iter().any(|a| a == "--") {
        return e;
    }
    let mut fixed = vec!["sockwrap".to_string()];
    fixed.extend(args[1..at].iter().map(|a| shell_word(a)));
    fixed.push("--".into());
    fixed.extend(args[at..].iter().map(|a| shell_word(a)));
    let tip = format!(
        "the program and its arguments go after `--`: {}",
        fixed.join(" ")
    );
    let mut tips = match e.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(t)) => t.clone(),
        _ => Vec::new(),
    };
    tips.push(tip.into());
    e.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    e
}

/// `w` as one word for a POSIX shell: as is when it is plain, else in single quotes.
fn shell_word(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn definition_is_consistent() {
        super::command().debug_assert();
    }
}
