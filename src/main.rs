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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
