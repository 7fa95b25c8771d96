fn main() -> std::process::ExitCode {
    memtrace::cli::main()
}
