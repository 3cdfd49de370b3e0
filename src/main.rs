//! The `logferry` binary: installs the TLS crypto provider, then hands over to the library.

fn main() {
    // reqwest (and later the AWS SDK) use rustls; pick its provider once for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::process::exit(logferry::cli::main());
}
