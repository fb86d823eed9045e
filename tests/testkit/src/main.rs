//! `lockstep-testkit serve --dir DIR`: the Kubernetes API emulator and the Azure DevOps simulator for
//! people and scripts (demo, benchmarks). Writes `DIR/kubeconfig` and `DIR/endpoints.json`
//! (`{"kubernetes": URL, "azureDevOps": URL}`) and runs until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lockstep_testkit::ado::AdoSimulator;
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};

#[derive(Parser)]
#[command(name = "lockstep-testkit", about = "Test doubles for lockstep")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start both test doubles on 127.0.0.1 (ephemeral ports) and write their endpoints to DIR.
    Serve {
        /// Where kubeconfig and endpoints.json are written (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// CRD directories to load into the emulator (repeatable). Default: `crds` and
        /// `tests/testkit/crds` when they exist in the current directory.
        #[arg(long = "crds")]
        crds: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli {
        command: Command::Serve { dir, crds },
    } = Cli::parse();
    match serve(&dir, crds).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lockstep-testkit: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(dir: &Path, crds: Vec<PathBuf>) -> Result<(), String> {
    let crds = if crds.is_empty() {
        ["crds", "tests/testkit/crds"]
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .collect()
    } else {
        crds
    };
    let config = crds
        .iter()
        .fold(EmulatorConfig::default(), |c, d| c.crds_dir(d));
    let kube = KubeEmulator::start(config)
        .await
        .map_err(|e| format!("starting the Kubernetes emulator: {e}"))?;
    let ado = AdoSimulator::start()
        .await
        .map_err(|e| format!("starting the Azure DevOps simulator: {e}"))?;

    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig)
        .map_err(|e| format!("writing {}: {e}", kubeconfig.display()))?;
    let endpoints = dir.join("endpoints.json");
    let body = serde_json::json!({"kubernetes": kube.url(), "azureDevOps": ado.url()});
    std::fs::write(&endpoints, format!("{body:#}\n"))
        .map_err(|e| format!("writing {}: {e}", endpoints.display()))?;
    println!(
        "kubernetes:  {} (control API: {}/_emu, see tests/testkit/README.md)",
        kube.url(),
        kube.url()
    );
    println!(
        "azureDevOps: {} (control API: {}/_sim, see tests/testkit/README.md)",
        ado.url(),
        ado.url()
    );
    println!("wrote {} and {}", kubeconfig.display(), endpoints.display());

    wait_for_shutdown().await
}

async fn wait_for_shutdown() -> Result<(), String> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(|e| format!("waiting for Ctrl-C: {e}")),
        _ = term.recv() => Ok(()),
    }
}
