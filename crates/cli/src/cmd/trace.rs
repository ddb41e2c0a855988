//! `sockwrap trace [run options] [-o FILE] [--json] -- COMMAND...`: stays as the parent,
//! waits, prints the summary (to stderr: the program owns stdout), and exits with the
//! program's status, or dies of the same signal.
//!
//! With `--kernel` (root) the record comes from BPF programs on the command's cgroup
//! instead of the library ([`KernelTrace`], `sockwrap_kernel::trace`): every socket the
//! command's process tree makes, whatever made it; the policy is applied as `run --kernel`
//! applies it (`crate::cmd::kernel`, which runs the command).

use crate::error::{Error, Result};
use crate::launch::{absolute, prepare};
use clap::ArgMatches;
use rustix::time::ClockId;
use sockwrap_kernel::trace::{Event, Tracer};
use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;

fn temp_record() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "sockwrap-trace-{}-{nanos}.jsonl",
        std::process::id()
    ))
}

pub fn trace(m: &ArgMatches) -> Result<ExitCode> {
    let (path, keep) = match m.get_one::<String>("output") {
        Some(f) => (absolute(f), true),
        None => (temp_record(), false),
    };
    // A fresh record: created (or emptied) here, 0600, never through a symlink.
    let mut oo = std::fs::OpenOptions::new();
    oo.write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if keep {
        oo.create(true).truncate(true);
    } else {
        oo.create_new(true);
    }
    let file = oo
        .open(&path)
        .map_err(|e| Error::setup(format_args!("trace: {}: {e}", path.display())))?;
    let remove = || {
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
    };
    if m.get_flag("kernel") {
        let kib = m.get_one::<u32>("ring-kb").copied().unwrap_or(256);
        let mut kt = KernelTrace::new(file, sockwrap_kernel::trace::ring_bytes(kib));
        let code = super::kernel::run_with(m, Some(&mut kt));
        let text = std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        remove();
        let code = code?;
        let why = "the kernel saw no TCP or UDP socket made in the program's cgroup";
        crate::summary::print_summary(&text, m.get_flag("json"), true, Some(why));
        return Ok(code);
    }
    let extra = vec![("SOCKWRAP_TRACE".to_string(), path.display().to_string())];
    let (mut cmd, prog) = prepare(m, extra).inspect_err(|_| remove())?;
    let mut child = cmd.spawn().map_err(|err| {
        remove();
        Error::Exec {
            program: prog.to_string_lossy().into_owned(),
            err,
        }
    })?;
    crate::signals::forward_to(child.id());
    let status = child.wait();
    let text = std::fs::read(&path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    remove();
    let why = match crate::reach::unreachable(&prog) {
        Some(u) => u.line(),
        None => "the program made no socket call through libc (none at all, or only through \
                  its own system calls: `sockwrap doctor PROGRAM` says more)"
            .to_string(),
    };
    crate::summary::print_summary(&text, m.get_flag("json"), true, Some(&why));
    let s =
        status.map_err(|e| Error::setup(format_args!("trace: waiting for the program: {e}")))?;
    if let Some(c) = s.code() {
        // Exit statuses are 0..=255; the truncation is what the kernel does too.
        return Ok(ExitCode::from(c as u8));
    }
    let sig = s.signal().unwrap_or(libc::SIGTERM);
    if matches!(
        sig,
        libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGPIPE | libc::SIGKILL
    ) {
        // Die of the same signal, so the shell sees what the program did.
        crate::signals::die_of(sig);
    }
    Ok(ExitCode::from((128 + sig) as u8))
}

/// `trace --kernel`'s side of the run: the tracing programs, attached after the policy's
/// ([`KernelTrace::attach`]), and their events written to the record as they come
/// ([`KernelTrace::pump`]) and after the command's last process ended
/// ([`KernelTrace::finish`]).
pub struct KernelTrace {
    out: std::io::BufWriter<std::fs::File>,
    ring_bytes: u32,
    tracer: Option<Tracer>,
    /// CLOCK_REALTIME less CLOCK_MONOTONIC, for each line's `t_wall_ns`.
    wall_offset_ns: i64,
    /// TCP connections that began and have not ended (their cookies).
    open: HashSet<u64>,
    write_error: Option<std::io::Error>,
}

fn clock_ns(clock: ClockId) -> i64 {
    let ts = rustix::time::clock_gettime(clock);
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl KernelTrace {
    pub fn new(out: std::fs::File, ring_bytes: u32) -> KernelTrace {
        KernelTrace {
            out: std::io::BufWriter::new(out),
            ring_bytes,
            tracer: None,
            wall_offset_ns: clock_ns(ClockId::Realtime) - clock_ns(ClockId::Monotonic),
            open: HashSet::new(),
            write_error: None,
        }
    }

    /// Loads and attaches the tracing programs to the cgroup `dir`; what this kernel
    /// cannot carry is refused by name (exit 2).
    pub fn attach(&mut self, dir: &std::fs::File, debug: bool) -> Result<()> {
        const WHAT: &str = "trace --kernel";
        const REFUSING: &str = "refusing to start the program";
        if let Some(lacks) = sockwrap_kernel::trace::missing() {
            return Err(Error::usage(format_args!(
                "{WHAT}: this kernel ({}) lacks {lacks}, which tracing needs; use sockwrap trace without --kernel (the library) for dynamically linked programs; {REFUSING}",
                sockwrap_kernel::probe::kernel_release()
            )));
        }
        let t = Tracer::attach(dir, self.ring_bytes).map_err(|f| {
            let f = match f {
                sockwrap_kernel::programs::Failed::Load(mut l) => {
                    l.program = sockwrap_kernel::trace::like(l.program);
                    sockwrap_kernel::programs::Failed::Load(l)
                }
                other => other,
            };
            super::kernel::attach_failure(WHAT, REFUSING, f, debug)
        })?;
        self.tracer = Some(t);
        Ok(())
    }

    fn write(&mut self, line: &str) {
        if self.write_error.is_none() {
            if let Err(e) = writeln!(self.out, "{line}") {
                self.write_error = Some(e);
            }
        }
    }

    /// Waits up to `ms` for events, then writes every event waiting.
    pub fn pump(&mut self, ms: i32) {
        let Some(mut t) = self.tracer.take() else {
            std::thread::sleep(std::time::Duration::from_millis(ms as u64));
            return;
        };
        t.wait(ms);
        let mut lines = Vec::new();
        t.drain(&mut |e: &Event| {
            if e.is_open() {
                self.open.insert(e.cookie);
            } else if e.is_close() {
                self.open.remove(&e.cookie);
            }
            lines.push(e.json_line(self.wall_offset_ns));
        });
        self.tracer = Some(t);
        for l in lines {
            self.write(&l);
        }
    }

    /// After the command's last process ended: waits up to a second for the connections
    /// still closing (an orphaned socket's FIN exchange), writes the rest, then the count
    /// of lost events (always, 0 included), and detaches the programs.
    pub fn finish(&mut self) {
        let start = std::time::Instant::now();
        while !self.open.is_empty() && start.elapsed() < std::time::Duration::from_secs(1) {
            self.pump(50);
        }
        self.pump(0);
        let Some(t) = self.tracer.take() else {
            return;
        };
        let lost = t.lost();
        drop(t);
        let now = clock_ns(ClockId::Monotonic);
        let line = format!(
            "{{\"v\":1,\"t_mono_ns\":{now},\"t_wall_ns\":{},\"ev\":\"lost\",\"call\":\"ring_buffer\",\"src\":\"kernel\",\"events\":{lost},\"open\":{}}}",
            now + self.wall_offset_ns,
            self.open.len()
        );
        self.write(&line);
        if lost > 0 {
            eprintln!(
                "sockwrap: trace --kernel: {lost} event(s) lost: the ring buffer was full (a larger --ring-kb keeps them)"
            );
        }
        if let Err(e) = self.out.flush() {
            self.write_error.get_or_insert(e);
        }
        if let Some(e) = &self.write_error {
            eprintln!("sockwrap: trace --kernel: writing the record: {e}");
        }
    }
}
