//! `blobswarm`: peer-to-peer distribution of container images to every node of a cluster.
//!
//! This file only parses arguments, sets up tracing and dispatches; each subcommand
//! lives in its own module under `cli/`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let log_format = args.log_format;
    cli::init_tracing(args.command.default_log_level(), log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(args.command.run());
    // Dropping the runtime would wait for every blocking task (an import, a disk write,
    // a checkpoint pass) however long it takes; a process told to stop must stop. What
    // such a task leaves half-done is what a crash leaves, and a restart resumes from it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            cli::report_exit_error(log_format, &e);
            std::process::ExitCode::FAILURE
        }
    }
}
