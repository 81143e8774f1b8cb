//! The `ckpt` command line: parses arguments, calls the library, prints, and sets
//! the exit status. No logic lives here.

use std::process::ExitCode;

use ckpt_user::{Freshness, check, monitor, render, sharing::Scope};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Checkpoint/restore process trees; watch who shares which files and pipes"
)]
struct Cli {
    /// More logging (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch fd sharing live (events), or print the current table with --once.
    Monitor(MonitorArgs),
    /// Report which kernel features and hooks ckpt needs and whether each works here.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Decode a checkpoint image: process tree, memory, fds and objects (like CRIU's crit).
    Show {
        /// The image directory (ckpt.img, pages.img).
        dir: std::path::PathBuf,
        /// Print the whole image as JSON (page contents summarised).
        #[arg(long)]
        json: bool,
    },
    /// Checkpoint the process tree rooted at a pid into an image directory.
    Dump {
        #[arg(short = 't', long = "tree")]
        tree: i32,
        #[arg(short = 'D', long = "images-dir")]
        dir: std::path::PathBuf,
        #[arg(long)]
        leave_running: bool,
        /// Save established and half-closed TCP connections (through TCP_REPAIR);
        /// without it (or --tcp-close) a connection refuses the dump.
        #[arg(long, conflicts_with = "tcp_close")]
        tcp_established: bool,
        /// Restore TCP connections closed: each comes back as a TCP socket that was
        /// never connected (reads fail with ENOTCONN, writes with EPIPE).
        #[arg(long)]
        tcp_close: bool,
    },
    /// Restore the process tree saved in an image directory.
    Restore {
        #[arg(short = 'D', long = "images-dir")]
        dir: std::path::PathBuf,
        #[arg(short = 'd', long)]
        detach: bool,
        /// Restore without taking the image's file locks and leases again (flock,
        /// POSIX, OFD locks, leases); the ones left out are listed on stderr.
        #[arg(long)]
        no_file_locks: bool,
    },
    /// (For `cargo xtask bench monitor`.) Attach an empty program to the tracker's
    /// syscall hook, write this pid to READY, wait for SIGINT or SIGTERM.
    #[command(hide = true)]
    HookFloor {
        #[arg(long, value_name = "READY")]
        ready: std::path::PathBuf,
    },
}

/// See `Command::HookFloor`.
fn hook_floor(ready: &std::path::Path) -> ckpt_user::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .map_err(|e| ckpt_user::Error::Other(format!("blocking SIGINT and SIGTERM: {e}")))?;
    let _floor = ckpt_user::tracker::attach_hook_floor()?;
    std::fs::write(ready, std::process::id().to_string())
        .map_err(|e| ckpt_user::Error::io(format!("writing {}", ready.display()), e))?;
    signals
        .wait()
        .map_err(|e| ckpt_user::Error::Other(format!("waiting for a signal: {e}")))?;
    Ok(())
}

#[derive(Args)]
struct MonitorArgs {
    /// Print the current table and exit.
    #[arg(long)]
    once: bool,
    /// One JSON object per line (with --once: one JSON document).
    #[arg(long)]
    json: bool,
    /// With --once: print the graph for Graphviz.
    #[arg(long, requires = "once", conflicts_with = "json")]
    dot: bool,
    /// Limit to a process and its descendants.
    #[arg(long, value_name = "PID", conflicts_with = "pid")]
    tree: Option<i32>,
    /// Limit to one process.
    #[arg(long, value_name = "PID")]
    pid: Option<i32>,
    /// Keep the tracker attached and its maps pinned for other commands; print nothing.
    #[arg(long, conflicts_with_all = ["once", "json", "dot"])]
    quiet: bool,
    /// With --once: read a running monitor's maps without reconciling them first.
    #[arg(long, requires = "once")]
    live_only: bool,
    /// Only these kinds of objects: pipe, fifo, file, dir, socket, chr, blk, anon,
    /// other (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "KIND,...",
        conflicts_with = "quiet"
    )]
    kind: Vec<String>,
    /// Light mode: attach no per-syscall hook (only fork, exec and exit), and find
    /// every other fd change by sweeping all fd tables every MS milliseconds.
    /// Events are up to MS late; an fd that lives shorter than MS is not seen.
    #[arg(long, value_name = "MS", conflicts_with_all = ["quiet", "once"],
          value_parser = clap::value_parser!(u64).range(1..))]
    sample: Option<u64>,
    /// With --once: answer a question instead of printing the table. pipes: who
    /// still holds a write end of each pipe someone reads (why no EOF); deleted:
    /// who holds deleted files open, with their size; listening: who holds each
    /// listening socket; leaks: fds kept across an exec without close-on-exec
    /// (seen while a monitor ran).
    #[arg(long, requires = "once", conflicts_with = "dot", value_name = "QUESTION",
          value_parser = clap::builder::PossibleValuesParser::new(ckpt_user::answers::QUESTIONS))]
    question: Option<String>,
    /// Serve metrics in the Prometheus text format on `GET /metrics` at this
    /// address (e.g. 127.0.0.1:9464): fds per process and kind, pipes, events by
    /// type, the tracker's loss counters.
    #[arg(long, value_name = "ADDR", conflicts_with = "once")]
    metrics: Option<std::net::SocketAddr>,
    /// Only processes of this name (as /proc/PID/comm shows it).
    #[arg(long, value_name = "NAME", conflicts_with = "quiet")]
    comm: Option<String>,
    /// Only objects whose path or address matches this glob (`*` also matches `/`):
    /// files, FIFOs, directories, devices, sockets (`unix /run/x.sock`,
    /// `tcp 127.0.0.1:80`).
    #[arg(long, value_name = "GLOB", conflicts_with = "quiet")]
    path: Option<String>,
}

fn scope(tree: Option<i32>, pid: Option<i32>) -> Scope {
    match (tree, pid) {
        (Some(t), _) => Scope::Tree(t),
        (None, Some(p)) => Scope::Pid(p),
        (None, None) => Scope::All,
    }
}

fn monitor(args: MonitorArgs) -> ckpt_user::Result<()> {
    let scope = scope(args.tree, args.pid);
    let filter = monitor::filter::EventFilter::new(&args.kind, args.comm, args.path.as_deref())?;
    if args.once {
        let freshness = if args.live_only {
            Freshness::LiveOnly
        } else {
            Freshness::Reconciled
        };
        let mut table = ckpt_user::snapshot(scope, freshness)?;
        filter.retain(&mut table);
        if let Some(q) = &args.question {
            let answer = ckpt_user::answers::answer(&table, q)?;
            let out = if args.json {
                serde_json::to_string_pretty(&answer).expect("answers serialise")
            } else {
                ckpt_user::answers::text(&answer)
            };
            print_out(&out);
            return Ok(());
        }
        let out = if args.json {
            render::json(&table)
        } else if args.dot {
            render::dot(&table)
        } else {
            render::text(&table)
        };
        print_out(&out);
        return Ok(());
    }
    monitor::run(monitor::MonitorOptions {
        scope,
        json: args.json,
        quiet: args.quiet,
        filter,
        sample: args.sample.map(std::time::Duration::from_millis),
        metrics: args.metrics,
    })
}

/// Prints a command's output; a reader that went away (`| head`) is not an error.
fn print_out(out: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{}", out.trim_end())
        .and_then(|_| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        Command::Monitor(args) => monitor(args),
        Command::Check { json } => {
            let report = check::run();
            if json {
                print_out(&serde_json::to_string_pretty(&report).expect("report serialises"));
            } else {
                print!("{}", check::text(&report));
            }
            if report.all_required_ok() {
                Ok(())
            } else {
                Err(ckpt_user::Error::Other("required checks failed".into()))
            }
        }
        Command::Show { dir, json } => ckpt_user::show::show(&dir, json).map(|out| print_out(&out)),
        Command::Dump {
            tree,
            dir,
            leave_running,
            tcp_established,
            tcp_close,
        } => ckpt_user::dump::dump(&ckpt_user::dump::DumpOptions {
            root: tree,
            dir,
            leave_running,
            tcp: if tcp_established {
                ckpt_user::kinds::tcp_conn::TcpMode::Established
            } else if tcp_close {
                ckpt_user::kinds::tcp_conn::TcpMode::Close
            } else {
                ckpt_user::kinds::tcp_conn::TcpMode::Refuse
            },
        })
        .map(|report| {
            log::info!("dump: {report:?}");
        }),
        Command::HookFloor { ready } => hook_floor(&ready),
        Command::Restore {
            dir,
            detach,
            no_file_locks,
        } => {
            match ckpt_user::restore::restore(&ckpt_user::restore::RestoreOptions {
                dir,
                detach,
                file_locks: !no_file_locks,
            }) {
                // Without --detach, ckpt exits with the restored root's status.
                Ok(report) => match report.exit_status {
                    Some(code) => return ExitCode::from(code.clamp(0, 255) as u8),
                    None => Ok(()),
                },
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
