//! The `huddle` binary: everything lives in [`huddle::cli`].

fn main() -> std::process::ExitCode {
    huddle::cli::main()
}
