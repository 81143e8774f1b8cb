//! Project automation for ckpt, run as `cargo xtask <command>`.
//!
//! Why an xtask rather than shell scripts: building ckpt needs more than stable Rust
//! (a nightly toolchain with rust-src, LLVM 22 and bpf-linker to compile the eBPF
//! programs), CI starts from a clean clone on a fresh machine, and the demo and the
//! benchmark have to start, watch and stop processes carefully. Keeping all of that in
//! one small Rust program gives a single definition of how the project is set up,
//! built, tested and shown, with errors that name the step that failed.

mod bench;
mod bench_loop;
mod build;
mod demo;
mod setup;
mod test;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test, demo and benchmark ckpt", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building ckpt needs (nightly + rust-src, LLVM 22, bpf-linker).
    Setup,
    /// Setup, then build the ckpt binary and the test workloads in release mode.
    Build,
    /// Setup, rustfmt check, clippy, build, then every test (needs root).
    Test,
    /// Build, then show the live fd-sharing monitor on a built-in sample process tree.
    Demo,
    /// Measure the cost of ckpt (for now: the monitor's tracker).
    Bench(bench::BenchArgs),
    /// Internal: the tight syscall loop that `bench` times in a child process.
    #[command(hide = true)]
    BenchLoop(bench_loop::LoopArgs),
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Setup => setup::run(),
        Command::Build => build::run_command(),
        Command::Test => test::run(),
        Command::Demo => demo::run(),
        Command::Bench(args) => bench::run(&args),
        Command::BenchLoop(args) => bench_loop::run(&args),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}
