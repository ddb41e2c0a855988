//! `sockwrap`: the launcher. All the work is in `app`; this stays a few lines.
mod app;
mod doctor;
mod trace;

fn main() {
    // `sockwrap check big.toml | head` must end quietly, not panic on a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let m = app::command().get_matches();
    match m.subcommand() {
        Some(("run", s)) => app::run(s),
        Some(("trace", s)) => app::trace(s),
        Some(("report", s)) => app::report(s),
        Some(("check", s)) => app::check(s),
        Some(("explain", s)) => app::explain(s),
        Some(("options", _)) => app::options(),
        Some(("doctor", s)) => doctor::doctor(s.get_one::<String>("program").map(String::as_str)),
        Some(("help-config", _)) => print!("{}", app::EXAMPLE_CONFIG),
        _ => unreachable!("clap requires a subcommand"),
    }
}
