//! The `sluice` binary: sets up logging and hands over to the library's CLI.

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
