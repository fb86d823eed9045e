use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lockstep::check::{self, CheckArgs, CheckExit};

/// Keeps GitOps deployments in lockstep with Azure DevOps pipelines.
#[derive(Parser)]
#[command(name = "lockstep", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Run the operator: reconcile PipelineGates (and serve metrics, probes and webhooks).
    Run(Box<lockstep::run::RunArgs>),
    /// Gate a pipeline step on the newest run of another pipeline (exit 0 open, 1 blocked, 2 timed
    /// out, 3 usage or authentication error).
    Check(CheckArgs),
    /// Azure DevOps service-hook subscriptions.
    #[command(subcommand)]
    Hooks(HooksCommand),
}

#[derive(Subcommand)]
enum HooksCommand {
    /// Create the subscriptions lockstep needs (pointing at the receiver with its credentials), re-enable
    /// disabled ones, leave the rest alone. A second run changes nothing. Exit 0 done, 1 failed, 3 usage.
    Sync(Box<lockstep::hooks::sync::SyncArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help`/`--version` go to stdout and succeed; bad usage is exit 3, as documented.
            let _ = e.print();
            return if e.use_stderr() {
                CheckExit::Usage.into()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Crd => match lockstep::crd::crds_yaml() {
            Ok(docs) => {
                for (_, yaml) in docs {
                    print!("---\n{yaml}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: could not render the CRDs: {e}");
                ExitCode::from(3)
            }
        },
        Command::Hooks(HooksCommand::Sync(args)) => match runtime() {
            Ok(rt) => rt.block_on(lockstep::hooks::sync::run(*args)),
            Err(e) => {
                eprintln!("error: could not start the async runtime: {e}");
                ExitCode::from(3)
            }
        },
        Command::Check(args) => match runtime() {
            Ok(rt) => rt.block_on(check::run(args)).into(),
            Err(e) => {
                eprintln!("error: could not start the async runtime: {e}");
                CheckExit::Usage.into()
            }
        },
    }
}

fn run(args: lockstep::run::RunArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(lockstep::run::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
