//! `cargo xtask bench-loop pipe|open N` (hidden): the tight syscall loops that
//! `cargo xtask bench monitor` times.
//!
//! Why a child process running raw libc calls: the benchmark compares the same loop
//! with the tracker off and on, so the loop must do nothing but the syscalls the
//! tracker hooks (no allocation, no std wrappers), and must run in a fresh process
//! each time so that one measurement's fd table or page cache state does not leak
//! into the next. It prints one line: `<ns per iteration> ns/iter`.

use std::{ffi::CStr, io, time::Instant};

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};

/// The file the `open` loop opens; created if missing.
pub const BENCH_FILE: &CStr = c"/tmp/ckpt-bench-file";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Loop {
    /// pipe2 + dup + 3 × close: 6 tracked fd events per iteration.
    Pipe,
    /// open + close of /tmp/ckpt-bench-file: 2 tracked fd events per iteration.
    Open,
}

impl Loop {
    pub const ALL: [Loop; 2] = [Loop::Pipe, Loop::Open];

    pub fn name(self) -> &'static str {
        match self {
            Loop::Pipe => "pipe",
            Loop::Open => "open",
        }
    }

    /// fd events the tracker sees per iteration (installs, dups and closes).
    pub fn events_per_iter(self) -> u32 {
        match self {
            Loop::Pipe => 6,
            Loop::Open => 2,
        }
    }
}

#[derive(Args)]
pub struct LoopArgs {
    #[arg(value_enum)]
    kind: Loop,
    /// Iterations to time.
    iterations: u64,
}

pub fn run(args: &LoopArgs) -> Result<()> {
    if args.kind == Loop::Open {
        ensure_bench_file()?;
    }
    let body: fn() -> io::Result<()> = match args.kind {
        Loop::Pipe => pipe_once,
        Loop::Open => open_once,
    };
    // Warm up caches and the fd table before timing.
    for _ in 0..args.iterations.min(10_000) {
        body().with_context(|| format!("{} loop (warm-up)", args.kind.name()))?;
    }
    let iterations = args.iterations.max(1);
    let start = Instant::now();
    for _ in 0..iterations {
        body().with_context(|| format!("{} loop", args.kind.name()))?;
    }
    let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
    println!("{ns:.1} ns/iter");
    Ok(())
}

/// Creates the file the open loop opens (shared with `bench`, which creates it too).
pub fn ensure_bench_file() -> Result<()> {
    let path = BENCH_FILE.to_str().expect("ASCII path");
    if std::fs::metadata(path).is_err() {
        std::fs::write(path, b"ckpt bench\n").with_context(|| format!("creating {path}"))?;
    }
    Ok(())
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// pipe2(fds, 0); dup(fds[0]); close × 3.
#[inline(always)]
fn pipe_once() -> io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid 2-element array; every fd closed here was opened here.
    unsafe {
        check(libc::pipe2(fds.as_mut_ptr(), 0))?;
        let dup = check(libc::dup(fds[0]))?;
        libc::close(fds[0]);
        libc::close(fds[1]);
        libc::close(dup);
    }
    Ok(())
}

/// open(BENCH_FILE, O_RDONLY); close.
#[inline(always)]
fn open_once() -> io::Result<()> {
    // SAFETY: BENCH_FILE is NUL-terminated; the fd closed is the one just opened.
    unsafe {
        let fd = check(libc::open(BENCH_FILE.as_ptr(), libc::O_RDONLY))?;
        libc::close(fd);
    }
    Ok(())
}
