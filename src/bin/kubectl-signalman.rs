#![forbid(unsafe_code)]
//! `kubectl signalman`: the kubectl plugin (kubectl runs `kubectl-signalman` from PATH). The
//! logic is in [`signalman::cli`].
fn main() {
    std::process::exit(signalman::cli::main());
}
