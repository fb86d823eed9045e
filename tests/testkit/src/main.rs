//! `lockstep-testkit serve --dir DIR`: the Kubernetes API emulator, the Azure DevOps simulator, the
//! fake Entra ID (token endpoint + IMDS) and a forward proxy for people and scripts (demo,
//! benchmarks). Writes `DIR/kubeconfig` and `DIR/endpoints.json` (`{"kubernetes": URL,
//! "azureDevOps": URL, "entraAuthority": URL, "imdsEndpoint": URL, "proxy": URL, ...}`, see
//! tests/testkit/README.md), with `--tls` also `DIR/ca.pem`, and runs until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::time::Duration;

use lockstep_testkit::ado::{AdoSimOptions, AdoSimulator};
use lockstep_testkit::entra::{EntraConfig, EntraFake};
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};
use lockstep_testkit::proxy::{ProxyConfig, TestProxy};
use lockstep_testkit::tls::TestCa;

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
        #[command(flatten)]
        extras: Extras,
    },
}

/// The Entra, TLS and proxy test doubles (issue 14).
#[derive(clap::Args)]
struct Extras {
    /// Serve the Azure DevOps simulator and the Entra authority over HTTPS with a test CA generated
    /// now; its certificate is written to DIR/ca.pem (IMDS stays plain HTTP, like the real one).
    #[arg(long)]
    tls: bool,
    /// Subject alternative names of the server certificate (repeatable). Default: the two proxy
    /// host names, localhost and 127.0.0.1.
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Host name the proxy maps to the Azure DevOps simulator (organization URL
    /// `http(s)://NAME/{org}` through the proxy).
    #[arg(long, default_value = "dev.azure.test")]
    ado_host: String,
    /// Host name the proxy maps to the Entra authority.
    #[arg(long, default_value = "login.microsoftonline.test")]
    entra_host: String,
    /// Lifetime of the tokens the fake Entra issues, in seconds.
    #[arg(long, default_value_t = 3599)]
    token_lifetime: u64,
    /// Require `Proxy-Authorization: Basic` with USER:PASSWORD at the proxy.
    #[arg(long, value_name = "USER:PASSWORD")]
    proxy_auth: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli {
        command: Command::Serve { dir, crds, extras },
    } = Cli::parse();
    match serve(&dir, crds, extras).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lockstep-testkit: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(dir: &Path, crds: Vec<PathBuf>, extras: Extras) -> Result<(), String> {
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
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;

    let (ca, tls) = if extras.tls {
        let ca = TestCa::new().map_err(|e| format!("creating the test CA: {e}"))?;
        let sans: Vec<String> = if extras.sans.is_empty() {
            vec![
                extras.ado_host.clone(),
                extras.entra_host.clone(),
                "localhost".into(),
                "127.0.0.1".into(),
            ]
        } else {
            extras.sans.clone()
        };
        let names: Vec<&str> = sans.iter().map(String::as_str).collect();
        let tls = ca
            .server_config(&names)
            .map_err(|e| format!("issuing the server certificate: {e}"))?;
        let ca_file = dir.join("ca.pem");
        ca.write_ca_pem(&ca_file)
            .map_err(|e| format!("writing {}: {e}", ca_file.display()))?;
        (Some(ca_file), Some(tls))
    } else {
        (None, None)
    };
    let scheme = if tls.is_some() { "https" } else { "http" };

    let mut ado_options = AdoSimOptions::default();
    let mut entra_config = EntraConfig::default()
        .token_lifetime(Duration::from_secs(extras.token_lifetime.max(1)))
        .also_known_as(&format!("{scheme}://{}", extras.entra_host));
    if let Some(tls) = &tls {
        ado_options = ado_options.tls(tls.clone());
        entra_config = entra_config.tls(tls.clone());
    }
    let ado = AdoSimulator::start_with(ado_options)
        .await
        .map_err(|e| format!("starting the Azure DevOps simulator: {e}"))?;
    let entra = EntraFake::start(entra_config)
        .await
        .map_err(|e| format!("starting the fake Entra ID: {e}"))?;
    ado.trust_entra(&entra);

    let mut proxy_config = ProxyConfig::default()
        .map_host(&extras.ado_host, ado.addr())
        .map_host(&extras.entra_host, entra.addr());
    if let Some(auth) = &extras.proxy_auth {
        let (user, password) = auth
            .split_once(':')
            .ok_or("--proxy-auth takes USER:PASSWORD")?;
        proxy_config = proxy_config.basic_auth(user, password);
    }
    let proxy = TestProxy::start(proxy_config)
        .await
        .map_err(|e| format!("starting the test proxy: {e}"))?;

    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig)
        .map_err(|e| format!("writing {}: {e}", kubeconfig.display()))?;
    let endpoints = dir.join("endpoints.json");
    let body = serde_json::json!({
        "kubernetes": kube.url(),
        "azureDevOps": ado.url(),
        "entraAuthority": entra.url(),
        "imdsEndpoint": entra.imds_endpoint(),
        "proxy": proxy.url(),
        "proxyHosts": {
            &extras.ado_host: ado.addr().to_string(),
            &extras.entra_host: entra.addr().to_string(),
        },
        "viaProxy": {
            "azureDevOps": format!("{scheme}://{}", extras.ado_host),
            "entraAuthority": format!("{scheme}://{}", extras.entra_host),
        },
        "caFile": ca.as_ref().map(|p| p.display().to_string()),
    });
    std::fs::write(&endpoints, format!("{body:#}\n"))
        .map_err(|e| format!("writing {}: {e}", endpoints.display()))?;
    println!(
        "kubernetes:     {} (control API: {}/_emu, see tests/testkit/README.md)",
        kube.url(),
        kube.url()
    );
    println!(
        "azureDevOps:    {} (control API: {}/_sim, see tests/testkit/README.md)",
        ado.url(),
        ado.url()
    );
    println!(
        "entraAuthority: {} (control API: {}/_entra)",
        entra.url(),
        entra.url()
    );
    println!("imdsEndpoint:   {}", entra.imds_endpoint());
    println!(
        "proxy:          {} ({} and {} resolve only through it)",
        proxy.url(),
        extras.ado_host,
        extras.entra_host
    );
    if let Some(ca) = &ca {
        println!("test CA:        {}", ca.display());
    }
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
