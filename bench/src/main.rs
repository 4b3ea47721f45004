//! `cos-bench`: load benchmarks of the Campaign OS mesh, run against the machine's real
//! PostgreSQL, Redis and RabbitMQ (the same services the end-to-end tests use).
//!
//! ```text
//! cargo run --release -p cos-bench -- gateway [--duration-secs 10] [--concurrency 64] [--warmup-secs 2]
//! cargo run --release -p cos-bench -- segmentation [--contacts 1000000] [--regenerate] [--repeats 20]
//! cargo run --release -p cos-bench -- fanout [--recipients 100000] [--full]
//! ```
//!
//! See docs/benchmarks.md for what is measured and the figures.

mod cpu;
mod fanout;
mod gateway;
mod micro;
mod segmentation;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cos-bench", about = "Load benchmarks of the Campaign OS mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The same cheap authenticated RPC (identity GetMe) called directly over gRPC and through
    /// the gateway over HTTP/JSON, at saturation, in one run: req/s of both, their ratio, and
    /// latency percentiles.
    Gateway(gateway::Args),
    /// Segmentation at 1,000,000 generated contacts, in one run: count(*) as the baseline, the
    /// count of an unindexed and of a selective indexed criteria tree (service compiler, tenant
    /// transaction under RLS) as ratios to it, ListSegmentMembers first-page latency and
    /// StreamMembers throughput with the process's RSS.
    Segmentation(segmentation::Args),
    /// Campaign fan-out, in one run: a raw lapin publish -> consume -> ack loop (durable queue,
    /// persistent messages, publisher confirms, manual acks) as the baseline, then a real launch
    /// of a campaign to the sandbox channel through the gateway, from the launch call to the
    /// last delivery recorded: messages/s of both, the ratio, and peak RSS.
    Fanout(fanout::Args),
}

/// Cores this process may use.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gateway(args) => gateway::run(args),
        Command::Segmentation(args) => segmentation::run(args),
        Command::Fanout(args) => fanout::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
