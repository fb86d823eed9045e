use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    }
}

fn run(args: lockstep::run::RunArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
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
