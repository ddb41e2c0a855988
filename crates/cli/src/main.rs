//! `sockwrap`: the launcher. All the work is in `app`; this stays a few lines.
mod app;
mod doctor;

fn main() {
    let m = app::command().get_matches();
    match m.subcommand() {
        Some(("run", s)) => app::run(s),
        Some(("check", s)) => app::check(s),
        Some(("explain", s)) => app::explain(s),
        Some(("options", _)) => app::options(),
        Some(("doctor", s)) => doctor::doctor(s.get_one::<String>("program").map(String::as_str)),
        Some(("help-config", _)) => print!("{}", app::EXAMPLE_CONFIG),
        _ => unreachable!("clap requires a subcommand"),
    }
}
