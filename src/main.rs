//! The `hallpass` binary: parse the command line and hand over to [`hallpass::cli`].

fn main() -> std::process::ExitCode {
    hallpass::cli::main()
}
