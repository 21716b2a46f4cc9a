//! The `cassio` binary (being built).

fn main() {
    eprintln!("cassio: the node binary is not built yet");
    std::process::exit(1);
}
