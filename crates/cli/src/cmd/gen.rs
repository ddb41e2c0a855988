//! `sockwrap gen-man DIR` and `sockwrap gen-completions DIR` (hidden): the man pages and
//! the shell completions, generated from the one command-line definition (`cli::command`)
//! and the option catalog, so they cannot drift from `--help`. `make install` and
//! `make deb` call these; nothing is written by hand except the prose of sockwrap.toml(5).

use crate::error::{Error, Result, EXIT_CODES};
use crate::launch::LIBRARY_PLACES;
use clap::{ArgMatches, Command};
use clap_complete::Shell;
use sockwrap_policy::catalog::{self, Kind, Opt};
use std::path::Path;
use std::process::ExitCode;

/// The worked examples of sockwrap.toml(5), one per use case: (title, file name, text).
/// The same files are in docs/examples/, checked by the tests with `sockwrap check`.
pub const EXAMPLES: [(&str, &str, &str); 6] = [
    (
        "SSH QoS",
        "ssh-qos.toml",
        include_str!("../../../../docs/examples/ssh-qos.toml"),
    ),
    (
        "WebRTC and other real-time UDP: DSCP per datagram",
        "webrtc-udp.toml",
        include_str!("../../../../docs/examples/webrtc-udp.toml"),
    ),
    (
        "Database keepalive on a server",
        "db-keepalive.toml",
        include_str!("../../../../docs/examples/db-keepalive.toml"),
    ),
    (
        "MPTCP for a legacy client",
        "mptcp-legacy.toml",
        include_str!("../../../../docs/examples/mptcp-legacy.toml"),
    ),
    (
        "Per-interface source selection",
        "source-per-interface.toml",
        include_str!("../../../../docs/examples/source-per-interface.toml"),
    ),
    (
        "Changing what a program does: deny, redirect, delay, seeded faults, host names",
        "chaos.toml",
        include_str!("../../../../docs/examples/chaos.toml"),
    ),
];

fn dir_arg(m: &ArgMatches) -> Result<&Path> {
    let dir = Path::new(
        m.get_one::<String>("dir")
            .map(String::as_str)
            .unwrap_or("."),
    );
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::setup(format_args!("{}: {e}", dir.display())))?;
    Ok(dir)
}

fn write(path: &Path, text: &[u8]) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::setup(format_args!("{}: {e}", path.display())))
}

/// Text for roff: backslashes, hyphens meant as minus signs, and a leading control character.
fn esc(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// A block shown as typed (examples, policy files).
fn verbatim(text: &str) -> String {
    let mut out = String::from(".PP\n.RS 4\n.nf\n");
    for line in text.trim_end().lines() {
        out.push_str(&esc(line));
        out.push('\n');
    }
    out.push_str(".fi\n.RE\n");
    out
}

fn section(name: &str, body: &str) -> String {
    format!(".SH \"{name}\"\n{body}")
}

/// `text` = "Examples:\n  cmd\n  cmd\n\nprose": the commands verbatim, the prose as a paragraph.
fn examples_section(text: &str) -> String {
    let text = text.strip_prefix("Examples:\n").unwrap_or(text);
    let (cmds, prose) = text.split_once("\n\n").unwrap_or((text, ""));
    let cmds: Vec<&str> = cmds.lines().map(|l| l.trim_start()).collect();
    let mut body = verbatim(&cmds.join("\n"));
    if !prose.is_empty() {
        body.push_str(&format!(".PP\n{}\n", esc(&prose.replace('\n', " "))));
    }
    section("EXAMPLES", &body)
}

fn files_section() -> String {
    let places: Vec<String> = LIBRARY_PLACES
        .iter()
        .map(|p| format!(".IP \\(bu 2\n\\fIDIR\\fP/{}", esc(p)))
        .collect();
    section(
        "FILES",
        &format!(
            ".PP\n\\fBsockwrap\\fP looks for \\fIlibsockwrap.so\\fP in this order, where \\fIDIR\\fP is the \
             directory of the \\fBsockwrap\\fP executable (symlinks resolved), and uses the first that exists:\n\
             .IP \\(bu 2\n\\fB$SOCKWRAP_LIB\\fP, when set (an error if it is not a file);\n{}\n\
             .PP\n\\fIDIR\\fP/libsockwrap.so is the build tree (\\fItarget/release/\\fP); \
             \\fIDIR\\fP/../lib/sockwrap/ is where \\fBmake install\\fP and the Debian package put it: \\fI/usr/local/lib/sockwrap/libsockwrap.so\\fP, \
             \\fI/usr/lib/sockwrap/libsockwrap.so\\fP. The path is unversioned, so a systemd drop-in written by \
             \\fBsockwrap enable\\fP stays valid across upgrades.\n\
             .TP\n\\fI/etc/systemd/system/UNIT.d/sockwrap.conf\\fP\nthe drop-in \\fBsockwrap enable\\fP writes.\n\
             .TP\n\\fI/etc/sockwrap/units/UNIT.toml\\fP\nthe copy of the policy file given to \\fBsockwrap enable -c\\fP.\n\
             .TP\n\\fI/usr/share/doc/sockwrap/examples/\\fP\nexample policies (also \\fI/usr/local/share/doc/sockwrap/examples/\\fP).\n",
            places.join("\n")
        ),
    )
}

fn environment_section() -> String {
    section(
        "ENVIRONMENT",
        ".TP\n\\fBSOCKWRAP_LIB\\fP\nthe library to preload, instead of searching (see FILES).\n\
         .TP\n\\fBSOCKWRAP_CONFIG\\fP\na policy file, as \\fB\\-c\\fP.\n\
         .TP\n\\fBSOCKWRAP_\\fP\\fINAME\\fP\none option of the catalog (\\fBSOCKWRAP_DSCP=EF\\fP, \
         \\fBSOCKWRAP_KEEPALIVE=30,10,3\\fP), above the file and below the flags; see \\fBsockwrap options\\fP.\n\
         .TP\n\\fBSOCKWRAP_LOG\\fP, \\fBSOCKWRAP_LOG_FILE\\fP, \\fBSOCKWRAP_TRACE\\fP\nas \\fB\\-\\-log\\fP, \
         \\fB\\-\\-log\\-file\\fP, \\fB\\-\\-trace\\fP.\n\
         .TP\n\\fBLD_PRELOAD\\fP\nentries already there are kept, after libsockwrap.so.\n",
    )
}

fn exit_section() -> String {
    let lines: Vec<&str> = EXIT_CODES
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect();
    section("EXIT STATUS", &verbatim(&lines.join("\n")))
}

/// The date on the pages: `SOURCE_DATE_EPOCH` (reproducible builds) or now, as YYYY-MM-DD.
fn page_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// One man page for `cmd` (the top command or a subcommand), from clap's own sections
/// plus ours.
fn man_page(cmd: &Command, top: bool) -> Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone())
        .manual("sockwrap manual")
        .date(page_date())
        .source(format!("sockwrap {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    let io = |e: std::io::Error| Error::setup(format_args!("rendering the man page: {e}"));
    man.render_title(&mut out).map_err(io)?;
    man.render_name_section(&mut out).map_err(io)?;
    man.render_synopsis_section(&mut out).map_err(io)?;
    man.render_description_section(&mut out).map_err(io)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out).map_err(io)?;
    }
    if top {
        man.render_subcommands_section(&mut out).map_err(io)?;
    }
    let mut tail = String::new();
    let after = crate::cli::man_after_help(cmd.get_name())
        .or_else(|| cmd.get_after_help().map(|s| s.to_string()))
        .unwrap_or_default();
    if top {
        let (ex, _) = after.split_once("\n\nExit status:").unwrap_or((&after, ""));
        tail.push_str(&examples_section(ex));
        tail.push_str(&exit_section());
        tail.push_str(&environment_section());
        tail.push_str(&files_section());
    } else if !after.is_empty() {
        tail.push_str(&examples_section(&after));
    }
    let mut see = vec![
        "\\fBsockwrap\\fP(1)".to_string(),
        "\\fBsockwrap.toml\\fP(5)".to_string(),
    ];
    if top {
        see.remove(0);
    }
    see.push("\\fBsystemd.exec\\fP(5)".into());
    see.push("\\fBld.so\\fP(8)".into());
    tail.push_str(&section("SEE ALSO", &format!("{}\n", see.join(", "))));
    out.extend_from_slice(tail.as_bytes());
    Ok(out)
}

fn kind_text(k: Kind) -> String {
    match k {
        Kind::Dscp => "a DSCP class name (EF, AF11..AF43, CS0..CS7, LE, VA) or 0..63".into(),
        Kind::Bool => "true or false".into(),
        Kind::Int { min, max, unit } => {
            let unit = match unit {
                catalog::Unit::None => "",
                catalog::Unit::Bytes => " bytes (suffixes K, M, G)",
                catalog::Unit::Millis => " milliseconds, or a duration (1.5s, 1min)",
                catalog::Unit::Seconds => " seconds, or a duration (30s, 2m, 1h)",
                catalog::Unit::Rate => " bytes/s (K, M, G) or bits/s (kbit, mbit, gbit)",
            };
            format!("an integer {min}..{max}{unit}")
        }
        Kind::Name => "a kernel name of at most 15 bytes".into(),
        Kind::Addrs => "one IPv4 and/or one IPv6 address (a list or comma-separated)".into(),
        Kind::Linger => "seconds or a duration (30s, 2m), or \"off\"".into(),
    }
}

/// The option table of sockwrap.toml(5), generated from the catalog.
fn option_table() -> String {
    let mut out = String::new();
    for o in Opt::ALL {
        let s = o.spec();
        let aliases = if s.aliases.is_empty() {
            String::new()
        } else {
            format!(" (also: {})", s.aliases.join(", "))
        };
        out.push_str(&format!(
            ".TP\n\\fB{}\\fP{}\n{}.\n.br\nValue: {}.\n.br\nKernel: {}; set {}{}{}.\n",
            esc(s.name),
            esc(&aliases),
            esc(s.help),
            esc(&kind_text(s.kind)),
            esc(s.kernel),
            super::options::when_text(s.when),
            if s.applies == catalog::Applies::Tcp {
                "; TCP only"
            } else {
                ""
            },
            if s.inherited_by_accept {
                ""
            } else {
                "; set again on each accepted socket (not inherited from the listener)"
            },
        ));
        for (name, _, help) in super::options::SPELLINGS
            .iter()
            .filter(|(_, of, _)| *of == o)
        {
            out.push_str(&format!(
                ".TP\n\\fB{}\\fP\n{}.\n.br\nKernel: {}; set {}.\n",
                esc(name),
                esc(help),
                esc(s.kernel),
                super::options::when_text(s.when),
            ));
        }
    }
    out
}

fn toml_page() -> String {
    let mut out = format!(
        ".TH SOCKWRAP.TOML 5 \"{}\" \"sockwrap {}\" \"sockwrap manual\"\n",
        page_date(),
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(&section(
        "NAME",
        "sockwrap.toml \\- sockwrap policy file: which sockets get which socket options\n",
    ));
    out.push_str(&section(
        "SYNOPSIS",
        "\\fBsockwrap run \\-c\\fP \\fIFILE\\fP \\fB\\-\\-\\fP \\fICOMMAND\\fP...\n.br\n\
         \\fBsockwrap enable\\fP \\fIUNIT\\fP \\fB\\-c\\fP \\fIFILE\\fP\n.br\n\
         \\fBsockwrap check\\fP \\fIFILE\\fP...\n",
    ));
    out.push_str(&section(
        "DESCRIPTION",
        ".PP\nA policy file is TOML. It holds an optional \\fBon_error\\fP key and a list of \
         \\fB[[rule]]\\fP tables. Each rule has an optional \\fBname\\fP, an optional \\fBmatch\\fP table \
         saying which sockets it is for, option keys (the table under OPTIONS), and an optional \
         \\fBsoft\\fP key. Rules are read top to bottom and the \\fBlast match wins\\fP: for each option \
         (and each action) the \\fIlast\\fP matching rule that sets it decides, the opposite of a firewall's \
         first match, so put general rules first and exceptions after them. \\fBsockwrap explain\\fP \
         lists every rule that matched and which of its options a later rule overrode; \
         \\fBsockwrap check\\fP warns of a rule that later rules override entirely. A rule without \
         \\fBmatch\\fP applies to every TCP and UDP socket.\n\
         .PP\nDurations (\\fBdelay\\fP, \\fBuser\\-timeout\\fP, the \\fBkeepalive\\fP timers, \\fBlinger\\fP) \
         have one grammar in the file, the flags and the variables: a number, a decimal fraction \
         allowed, then \\fBms\\fP, \\fBs\\fP, \\fBm\\fP or \\fBmin\\fP, or \\fBh\\fP (\\fB250ms\\fP, \\fB1.5s\\fP, \
         \\fB1min\\fP, \\fB2h\\fP). A bare number counts in the option's own unit (milliseconds or \
         seconds). A duration finer than that unit (\\fB1.5s\\fP for seconds) is an error, not rounded.\n\
         .PP\nSources, lowest priority first: the policy file, \\fBSOCKWRAP_\\fP\\fINAME\\fP variables, \
         \\fBsockwrap run\\fP flags. \\fBsockwrap check\\fP validates a file and prints every error as \
         \\fIFILE\\fP:\\fILINE\\fP:\\fICOL\\fP; \\fBsockwrap explain\\fP shows what a destination would get.\n\
         .TP\n\\fBon_error = \"warn\"\\fP | \\fB\"fail\"\\fP\nwhat a refused option does: one warning per \
         option per process and the program goes on (default), or the program's call fails with \
         the kernel's errno. \\fB\"fail\"\\fP also makes \\fBsockwrap run\\fP refuse to start a program \
         when the policy has errors.\n\
         .TP\n\\fBsoft = true\\fP | \\fB[\"dscp\", ...]\\fP\nthe rule's options (all, or the listed ones) are \
         defaults the program may change with its own \\fBsetsockopt\\fP(2). Without it, an option \
         sockwrap sets is locked: the program's call reports success and sockwrap's value stays.\n",
    ));
    out.push_str(&section(
        "MATCH",
        ".PP\nAll fields are optional; all given must hold. A field whose value is not known yet \
         does not match: a rule with \\fBremote\\fP is applied at \\fBconnect\\fP(2), never at \\fBsocket\\fP(2).\n\
         .TP\n\\fBremote\\fP = CIDR or list\nremote addresses (\"10.0.0.0/8\", \"::1\", \"fd00::/8\"); IPv4 \
         rules also match v4\\-mapped IPv6 addresses.\n\
         .TP\n\\fBport\\fP = port, \"LO\\-HI\" or list\nremote ports.\n\
         .TP\n\\fBlocal\\-port\\fP = port, \"LO\\-HI\" or list\nlocal ports (a server's listening port).\n\
         .TP\n\\fBrole\\fP = \"client\" | \"server\"\nclient: \\fBconnect\\fP(2); server: \\fBlisten\\fP(2) and \
         \\fBaccept\\fP(2). Options set on a listening socket are inherited by accepted ones.\n\
         .TP\n\\fBtransport\\fP = \"tcp\" | \"udp\"\n\
         .TP\n\\fBprogram\\fP = name or list\nthe basename of argv[0] or of the executable.\n\
         .TP\n\\fBhost\\fP = name or list\nhost names the remote address came from: exact \
         (\"db.example.com\") or a suffix (\"*.example.com\": any name below example.com, not \
         example.com itself), without regard to case. The library records the names the program \
         resolves through libc (\\fBgetaddrinfo\\fP(3), \\fBgethostbyname\\fP(3) and their _r and 2 \
         forms) with the addresses they gave, in a table of the last 64 names and 512 addresses per \
         process; an address belongs to the name that gave it last, for every later connect to it. \
         The table is the process's own: another process connecting to the same address without \
         having resolved the name is not matched (a forked child starts with a copy of its \
         parent's). \
         A program that resolves by itself (Go, c\\-ares, a DNS\\-over\\-HTTPS client) never reaches \
         these hooks: its addresses have no name. Not available with \\fB\\-\\-kernel\\fP.\n\
         .TP\n\\fBexcept\\fP = { ... }\nthe rule does not apply where this table of match fields \
         holds (\\fBmatch = { host = \"*.corp\", except = { remote = \"10.9.0.0/16\" } }\\fP). An \
         exception cannot have an exception of its own. An exception on a field not known yet (the \
         remote address before \\fBconnect\\fP(2)) keeps the rule waiting until it is known.\n",
    ));
    out.push_str(&section(
        "CONNECTION ACTIONS",
        ".PP\nBesides options, a rule can change what a matching \\fBconnect\\fP(2) does. For each \
         action the last matching rule that sets it wins, as for options. They reach the program's \
         connects only (the library does not hook \\fBsendto\\fP(2)); with \\fB\\-\\-kernel\\fP, see \
         \\fBsockwrap explain \\-\\-kernel\\fP for what the BPF programs carry out. Each is also a flag of \
         \\fBsockwrap run\\fP (\\fB\\-\\-deny\\fP, \\fB\\-\\-redirect\\fP, \\fB\\-\\-delay\\fP, \\fB\\-\\-fail\\fP, \
         \\fB\\-\\-seed\\fP, narrowed by \\fB\\-\\-to\\fP) and a variable (\\fBSOCKWRAP_DENY\\fP, ...).\n\
         .TP\n\\fBdeny\\fP = true | \"ERRNO\"\nthe connect fails with ERRNO (ECONNREFUSED for true; also \
         ENETUNREACH, EHOSTUNREACH, ETIMEDOUT, ECONNRESET, ECONNABORTED, EACCES, EPERM, ENETDOWN, \
         EHOSTDOWN, EADDRNOTAVAIL, EADDRINUSE, ENOBUFS, EAGAIN, EINTR, EPROTO, ENOMEM). Nothing is sent. \
         Logged at \\fBinfo\\fP (\\fB\\-\\-log info\\fP or \\fBSOCKWRAP_LOG=info\\fP); the trace has an \
         \\fBaction\\fP event before the connect's own line. \
         With \\fBdelay\\fP the failure comes after the delay: \\fBdeny = \"ETIMEDOUT\"\\fP with \
         \\fBdelay = \"5s\"\\fP imitates a host that never answers.\n\
         .TP\n\\fBredirect\\fP = \"ADDR:PORT\" | { to = \"ADDR:PORT\", peername = \"program\" | \"target\" }\n\
         the connect goes to ADDR:PORT instead (\"[::1]:8443\" for IPv6; an IPv4 target on an IPv6 \
         socket is reached v4\\-mapped; an IPv6 target on an IPv4 socket fails with EAFNOSUPPORT). \
         \\fBgetpeername\\fP(2) answers what the program asked for (\\fBpeername = \"program\"\\fP, the \
         default) or where it really went (\\fB\"target\"\\fP). The trace shows both.\n\
         .TP\n\\fBdelay\\fP = \"250ms\" | \"1.5s\" | \"1min\" | milliseconds\nthe TCP connect completes this much later \
         (at most 1 hour). A blocking connect sleeps. A non\\-blocking one does not block the thread: \
         \\fBconnect\\fP returns EINPROGRESS and the socket stays \"connecting\" for \\fBpoll\\fP(2), \
         \\fBepoll\\fP(7) and \\fBselect\\fP(2) until the delay is over (it waits as a loopback listener; \
         a thread of sockwrap's then makes the real connect). Meanwhile \\fBgetsockname\\fP(2) shows a \
         loopback address, and a socket the program bound itself listens on its address for the \
         delay; a socket filter that drops every packet (\\fBSO_ATTACH_FILTER\\fP) keeps any connect \
         to that address off the waiting socket, so that it never turns readable. A socket with a \
         filter of the program's own (or a locked one) waits without ours: a connect to its port \
         during the delay is then queued on it, and reset when the delay ends. UDP connects are not \
         delayed.\n\
         .TP\n\\fBfail\\fP = { rate = 0..1, errno = \"ERRNO\" }\nthis fraction of matching connects fail \
         with ERRNO (default ECONNRESET). The choices come from a seeded generator, per rule and per \
         process: \\fBSOCKWRAP_SEED\\fP=\\fIN\\fP or \\fB\\-\\-seed\\fP \\fIN\\fP (the flag wins) gives the same \
         failures at the same connects in every run. Each rule has its own sequence, which the \
         other rules' connects do not move. Without a seed \\fBsockwrap run\\fP chooses one, prints \
         it, and passes it to every process of the run. A program started by \\fBexecve\\fP(2) begins \
         from the seed: every program of a run gets the same sequence, so a shell loop that runs a \
         one\\-connect program ten times makes the same choice ten times (give each its own \
         \\fBSOCKWRAP_SEED\\fP). A forked child goes on with a stream of its own, made from its \
         parent's and the fork's ordinal among its parent's forks, and the parent goes on as if it \
         had not forked: children do not fail in step with their parent, and a program that forks \
         in the same order makes the same choices in every run.\n",
    ));
    out.push_str(&section(
        "OPTIONS",
        &format!(
            ".PP\nGenerated from the option catalog (\\fBsockwrap options\\fP prints the same). Each key \
             is also a flag of \\fBsockwrap run\\fP (\\fB\\-\\-keepalive\\-idle\\fP) and a variable \
             (\\fBSOCKWRAP_KEEPALIVE_IDLE\\fP). \\fBkeepalive\\fP also takes a table \
             \\fB{{ idle = 60, interval = 10, count = 5 }}\\fP or a string \\fB\"60,10,5\"\\fP; \
             \\fBtos\\fP takes the whole ToS byte 0..255 instead of a DSCP.\n{}",
            option_table()
        ),
    ));
    let mut ex = String::from(
        ".PP\nEach example is a complete file, installed under \\fI/usr/share/doc/sockwrap/examples/\\fP \
         (or \\fI/usr/local/share/doc/sockwrap/examples/\\fP).\n",
    );
    for (title, file, text) in EXAMPLES {
        ex.push_str(&format!(".SS \"{} ({})\"\n", esc(title), esc(file)));
        let (comment, body): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| l.starts_with("# "));
        let prose: Vec<&str> = comment.iter().map(|l| &l[2..]).collect();
        ex.push_str(&format!(".PP\n{}\n", esc(&prose.join(" "))));
        ex.push_str(&verbatim(&body.join("\n")));
    }
    out.push_str(&section("EXAMPLES", &ex));
    out.push_str(&section(
        "SEE ALSO",
        "\\fBsockwrap\\fP(1), \\fBsockwrap\\-run\\fP(1), \\fBsockwrap\\-enable\\fP(1), \\fBsocket\\fP(7), \
         \\fBip\\fP(7), \\fBtcp\\fP(7)\n",
    ));
    out
}

pub fn man(m: &ArgMatches) -> Result<ExitCode> {
    let dir = dir_arg(m)?;
    let mut top = crate::cli::command().disable_help_subcommand(true);
    top.build();
    write(&dir.join("sockwrap.1"), &man_page(&top, true)?)?;
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("sockwrap-{}.1", sub.get_name());
        write(&dir.join(name), &man_page(sub, false)?)?;
    }
    write(&dir.join("sockwrap.toml.5"), toml_page().as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn completions(m: &ArgMatches) -> Result<ExitCode> {
    let dir = dir_arg(m)?;
    let mut cmd = crate::cli::completion_command();
    for (shell, file) in [
        (Shell::Bash, "sockwrap.bash"),
        (Shell::Zsh, "_sockwrap"),
        (Shell::Fish, "sockwrap.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, "sockwrap", &mut text);
        if shell == Shell::Bash {
            let script = bash_command_after_dashes(&String::from_utf8_lossy(&text));
            text = bash_congestion_from_the_kernel(&script).into_bytes();
        }
        write(&dir.join(file), &text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What clap_complete's bash script lacks: after `run ... --` and `trace ... --` the words
/// are a command line of their own (zsh's script has `_cmdambivalent` for it). The command
/// completes as bash-completion completes it (`_command_offset`), else a command name then
/// file names. Inserted at the top of the generated function.
const BASH_AFTER_DASHES: &str = r#"
    # sockwrap: after `run ... --` or `trace ... --`, complete the program's command line.
    local _sw_i
    if [[ "${COMP_WORDS[1]}" == run || "${COMP_WORDS[1]}" == trace ]]; then
        for (( _sw_i = 2; _sw_i < COMP_CWORD; _sw_i++ )); do
            [[ "${COMP_WORDS[_sw_i]}" == "--" ]] || continue
            if declare -F _command_offset >/dev/null; then
                _command_offset $((_sw_i + 1))
            elif (( COMP_CWORD == _sw_i + 1 )); then
                COMPREPLY=($(compgen -c -- "${cur}"))
            else
                COMPREPLY=($(compgen -f -- "${cur}"))
            fi
            return 0
        done
    fi
"#;

fn bash_command_after_dashes(script: &str) -> String {
    // The generated function starts by setting its locals; ours goes right after `opts=""`.
    let anchor = "    opts=\"\"\n";
    match script.find(anchor) {
        Some(at) => {
            let at = at + anchor.len();
            format!("{}{}{}", &script[..at], BASH_AFTER_DASHES, &script[at..])
        }
        None => script.to_string(),
    }
}

/// `--congestion` completes, in bash, with the algorithms the running kernel has
/// (`net.ipv4.tcp_available_congestion_control`), and with the usual list when that file
/// cannot be read. clap's value list is fixed when the script is generated.
fn bash_congestion_from_the_kernel(script: &str) -> String {
    let list = crate::cli::CONGESTION_NAMES.join(" ");
    script.replace(
        &format!("compgen -W \"{list}\""),
        &format!(
            "compgen -W \"$(cat /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null || echo {list})\""
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_completes_the_command_after_dashes() {
        let mut cmd = crate::cli::completion_command();
        let mut text = Vec::new();
        clap_complete::generate(Shell::Bash, &mut cmd, "sockwrap", &mut text);
        let script = bash_command_after_dashes(&String::from_utf8(text).unwrap());
        assert!(
            script.contains("_command_offset"),
            "the anchor moved in clap_complete"
        );
        let script = bash_congestion_from_the_kernel(&script);
        assert!(
            script.contains("$(cat /proc/sys/net/ipv4/tcp_available_congestion_control"),
            "clap_complete's value list changed shape"
        );
    }

    #[test]
    fn page_dates() {
        std::env::set_var("SOURCE_DATE_EPOCH", "0");
        assert_eq!(page_date(), "1970-01-01");
        std::env::set_var("SOURCE_DATE_EPOCH", "1709251200");
        assert_eq!(page_date(), "2024-03-01");
        std::env::remove_var("SOURCE_DATE_EPOCH");
    }

    #[test]
    fn option_table_has_every_option() {
        let t = option_table();
        for o in Opt::ALL {
            assert!(
                t.contains(&format!("\\fB{}\\fP", esc(o.name()))),
                "{}",
                o.name()
            );
        }
    }

    #[test]
    fn examples_parse() {
        for (_, file, text) in EXAMPLES {
            if let Err(e) = sockwrap_policy::parse_config(text, file) {
                panic!("{file}: {e:?}");
            }
        }
    }
}
