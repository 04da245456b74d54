//! The `safe-reload` binary: parse flags, run, exit with the status from the exit table.

fn main() {
    let code = safe_reload::run::main(std::env::args_os());
    #[allow(clippy::exit)]
    std::process::exit(code)
}
