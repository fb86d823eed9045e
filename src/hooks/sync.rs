//! `lockstep hooks sync`: create the service-hook subscriptions lockstep needs, pointing at the receiver
//! with its credentials; re-enable ones on probation or disabled; leave every other subscription alone.
//! Idempotent: a second run plans nothing and writes nothing. `--dry-run` prints the plan only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use super::client::{HooksClient, HooksError};
use super::coverage::{event_spec, plan, Action, Wanted};
use crate::secret::SecretString;

/// At most this many projects per run; each costs one Projects - Get.
const MAX_PROJECTS: usize = 64;

#[derive(clap::Args, Debug, Clone)]
pub struct SyncArgs {
    /// The organization (or collection) URL, e.g. https://dev.azure.com/contoso.
    #[arg(long)]
    pub organization_url: String,
    /// A project whose pipelines and repositories the cluster's gates and traces follow (repeatable).
    #[arg(long = "project", required = true)]
    pub projects: Vec<String>,
    /// The receiver's public URL, e.g. https://lockstep.example.com/hooks/azure-devops.
    #[arg(long)]
    pub url: String,
    /// Events to subscribe to (docs/webhooks.md): run-state-changed (gates), git-push (traces),
    /// build-complete, stage-state-changed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "run-state-changed,git-push"
    )]
    pub events: Vec<String>,
    /// HTTP Basic username the receiver expects (--webhook-username).
    #[arg(long)]
    pub username: Option<String>,
    /// File with the HTTP Basic password (the receiver's --webhook-password-file).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// File with the header token (the receiver's --webhook-token-file).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[arg(long, default_value = crate::webhook::DEFAULT_TOKEN_HEADER)]
    pub token_header: String,
    /// File with a PAT allowed to edit service hooks (Service Hooks read & write); default: the
    /// AZURE_DEVOPS_EXT_PAT environment variable.
    #[arg(long)]
    pub pat_file: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Why a sync could not run; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("could not read {what} from {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no PAT: pass --pat-file or set AZURE_DEVOPS_EXT_PAT")]
    NoPat,
    #[error("unknown event {0:?}: use run-state-changed, git-push, build-complete or stage-state-changed")]
    UnknownEvent(String),
    #[error("more than {MAX_PROJECTS} projects in one run")]
    TooManyProjects,
    #[error("--url {0:?} is not an absolute http(s) URL")]
    BadUrl(String),
    #[error("project {project}: {source}")]
    Project {
        project: String,
        #[source]
        source: HooksError,
    },
    #[error(transparent)]
    Hooks(#[from] HooksError),
}

fn read_secret(what: &'static str, path: &PathBuf) -> Result<SecretString, SyncError> {
    std::fs::read_to_string(path)
        .map(|s| SecretString::new(s.trim_end_matches(['\r', '\n']).to_string()))
        .map_err(|source| SyncError::ReadFile {
            what,
            path: path.clone(),
            source,
        })
}

/// Run `lockstep hooks sync`: 0 done (or planned), 1 failed, 3 usage.
pub async fn run(args: SyncArgs) -> ExitCode {
    match sync(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            e @ (SyncError::NoPat
            | SyncError::UnknownEvent(_)
            | SyncError::BadUrl(_)
            | SyncError::TooManyProjects),
        ) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn sync(args: &SyncArgs) -> Result<(), SyncError> {
    let pat = match &args.pat_file {
        Some(p) => read_secret("the PAT", p)?,
        None => std::env::var("AZURE_DEVOPS_EXT_PAT")
            .ok()
            .filter(|v| !v.is_empty())
            .map(SecretString::new)
            .ok_or(SyncError::NoPat)?,
    };
    if !(args.url.starts_with("https://") || args.url.starts_with("http://")) {
        return Err(SyncError::BadUrl(args.url.clone()));
    }
    if args.projects.len() > MAX_PROJECTS {
        return Err(SyncError::TooManyProjects);
    }
    let events = args
        .events
        .iter()
        .map(|e| event_spec(e.trim()).ok_or_else(|| SyncError::UnknownEvent(e.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut inputs = BTreeMap::from([
        ("url".to_string(), args.url.clone()),
        // lockstep reads the resource only; messages make payloads bigger for nothing.
        ("messagesToSend".to_string(), "none".to_string()),
        ("detailedMessagesToSend".to_string(), "none".to_string()),
    ]);
    if let Some(user) = &args.username {
        inputs.insert("basicAuthUsername".into(), user.clone());
    }
    if let Some(p) = &args.password_file {
        inputs.insert(
            "basicAuthPassword".into(),
            read_secret("the Basic password", p)?.expose().to_string(),
        );
    }
    if let Some(p) = &args.token_file {
        let token = read_secret("the header token", p)?;
        inputs.insert(
            "httpHeaders".into(),
            format!("{}:{}", args.token_header, token.expose()),
        );
    }

    let client = HooksClient::new()?;
    let mut wanted = Vec::new();
    let mut names = BTreeMap::new();
    for project in &args.projects {
        let id = client
            .project_id(&args.organization_url, project, &pat)
            .await
            .map_err(|source| SyncError::Project {
                project: project.clone(),
                source,
            })?;
        names.insert(id.to_ascii_lowercase(), project.clone());
        for (publisher_id, event_type, resource_version) in &events {
            wanted.push(Wanted {
                project_id: id.clone(),
                publisher_id,
                event_type,
                resource_version,
                consumer_inputs: inputs.clone(),
            });
        }
    }
    let existing = client.list(&args.organization_url, &pat).await?;
    let steps = plan(&wanted, &existing);
    let mut writes = 0;
    let mut ids = Vec::new();
    for (w, action) in steps {
        let project = names
            .get(&w.project_id.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| w.project_id.clone());
        // Secrets are in the body and inputs: only the event, project, id and reason are printed.
        match action {
            Action::Keep { id } => {
                println!("keep    {} project={project} id={id}", w.event_type);
                ids.push(id);
            }
            Action::Create if args.dry_run => {
                println!("create  {} project={project} (dry run)", w.event_type);
                writes += 1;
            }
            Action::Create => {
                let created = client
                    .create(&args.organization_url, &pat, &w.body(false))
                    .await?;
                println!(
                    "create  {} project={project} id={}",
                    w.event_type, created.id
                );
                ids.push(created.id);
                writes += 1;
            }
            Action::Replace { id, why } if args.dry_run => {
                println!(
                    "update  {} project={project} id={id}: {why} (dry run)",
                    w.event_type
                );
                writes += 1;
            }
            Action::Replace { id, why } => {
                let replaced = client
                    .replace(&args.organization_url, &pat, &id, &w.body(true))
                    .await?;
                println!(
                    "update  {} project={project} id={id}: {why}; now {}",
                    w.event_type,
                    replaced.state()
                );
                ids.push(id);
                writes += 1;
            }
        }
    }
    if args.dry_run {
        println!("dry run: {writes} write(s) planned, nothing changed");
    } else {
        println!("{writes} write(s)");
    }
    if !ids.is_empty() {
        println!(
            "subscription ids (for --webhook-allowed-subscriptions): {}",
            ids.join(",")
        );
    }
    Ok(())
}
