//! `lockstep hooks sync`: create the service-hook subscriptions the cluster's gates and traces need,
//! pointing at the receiver with its credentials; re-enable ones on probation or disabled; leave every
//! other subscription alone. Idempotent: a second run plans nothing and writes nothing. `--dry-run` prints
//! the plan only.
//!
//! Without `--project`, the organizations, projects and events come from the PipelineGates and
//! ServiceTraces in the cluster (the kubeconfig, as kubectl finds it): every project needs
//! run-state-changed, and one with a trace also git-push. Flags override what the cluster says.
//!
//! [`ensure`] is the one place that plans and writes; the controller's hook set-up
//! ([`super::setup`]) calls it too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use super::client::{HooksClient, HooksError};
use super::cluster::{list_by_org, org_filter, projects, Watched};
use super::coverage::{event_spec, plan, Action, Wanted};
use crate::ado::AdoAuth;
use crate::secret::SecretString;

/// At most this many projects per organization and run; each costs one Projects - Get.
const MAX_PROJECTS: usize = 64;
/// At most this many organizations per run.
const MAX_ORGANIZATIONS: usize = 16;

#[derive(clap::Args, Debug, Clone)]
pub struct SyncArgs {
    /// The organization (or collection) URL, e.g. https://dev.azure.com/contoso. Needed with --project;
    /// without it, every organization the cluster's gates and traces use.
    #[arg(long)]
    pub organization_url: Option<String>,
    /// A project whose pipelines and repositories need hooks (repeatable). Without it, the projects of the
    /// cluster's gates and traces (read with the kubeconfig, like kubectl).
    #[arg(long = "project")]
    pub projects: Vec<String>,
    /// With the projects from the cluster: read gates and traces only in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// The receiver's public URL, e.g. https://lockstep.example.com/hooks/azure-devops.
    #[arg(long)]
    pub url: String,
    /// Events to subscribe to (docs/webhooks.md): run-state-changed (gates), git-push (traces),
    /// build-complete, stage-state-changed. Default: run-state-changed and git-push with --project; from
    /// the cluster, run-state-changed for every project and git-push where a trace follows one.
    #[arg(long, value_delimiter = ',')]
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
    #[error("more than {MAX_PROJECTS} projects in one organization")]
    TooManyProjects,
    #[error("more than {MAX_ORGANIZATIONS} organizations in one run: pass --organization-url")]
    TooManyOrganizations,
    #[error("--project needs --organization-url")]
    ProjectWithoutOrganization,
    #[error("--url {0:?} is not an absolute http(s) URL")]
    BadUrl(String),
    #[error("could not read the cluster's PipelineGates and ServiceTraces ({0}): set KUBECONFIG, or pass --organization-url and --project")]
    Cluster(String),
    #[error("no PipelineGate or ServiceTrace in the cluster uses {0}: pass --project")]
    NothingInCluster(String),
    #[error("project {project}: {source}")]
    Project {
        project: String,
        #[source]
        source: HooksError,
    },
    #[error(transparent)]
    Hooks(#[from] HooksError),
}

impl SyncError {
    /// The user's to fix before anything is sent.
    fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::NoPat
                | Self::UnknownEvent(_)
                | Self::BadUrl(_)
                | Self::TooManyProjects
                | Self::TooManyOrganizations
                | Self::ProjectWithoutOrganization
        )
    }
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
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_usage() { 3 } else { 1 })
        }
    }
}

/// The event specs (publisher, event type, resource version) named by `names`.
pub fn events_named(
    names: &[impl AsRef<str>],
) -> Result<Vec<(&'static str, &'static str, &'static str)>, SyncError> {
    names
        .iter()
        .map(|e| {
            event_spec(e.as_ref().trim())
                .ok_or_else(|| SyncError::UnknownEvent(e.as_ref().to_string()))
        })
        .collect()
}

/// One project and the events it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectNeed {
    pub project: String,
    pub events: Vec<(&'static str, &'static str, &'static str)>,
}

/// What the cluster's objects of one organization need: run-state-changed for every project, git-push
/// too where a trace follows it; `events` (non-empty) overrides both.
pub fn needs_of(
    objects: &[Watched],
    events: &[(&'static str, &'static str, &'static str)],
) -> Result<Vec<ProjectNeed>, SyncError> {
    let mut out = Vec::new();
    for (project, git_push) in projects(objects).into_values() {
        let events = if events.is_empty() {
            let mut names = vec!["run-state-changed"];
            if git_push {
                names.push("git-push");
            }
            events_named(&names)?
        } else {
            events.to_vec()
        };
        out.push(ProjectNeed { project, events });
    }
    if out.len() > MAX_PROJECTS {
        return Err(SyncError::TooManyProjects);
    }
    Ok(out)
}

/// What one [`ensure`] did (or, dry, would do).
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Creates and replaces, done or planned.
    pub writes: usize,
    pub created: usize,
    pub replaced: usize,
    /// The ids of the subscriptions lockstep's hooks now arrive through.
    pub ids: Vec<String>,
    /// One line per wanted subscription, without secrets: `keep|create|update <event> project=<p> ...`.
    pub lines: Vec<String>,
    /// Projects that had a create or a replace.
    pub changed_projects: Vec<String>,
}

/// Plan and (unless `dry_run`) carry out the subscriptions `needs` want in `org_url`, with consumer
/// `inputs` (the receiver's URL and credentials: never printed). Subscriptions to other URLs are left
/// alone; an up-to-date one is not written.
pub async fn ensure(
    client: &HooksClient,
    org_url: &str,
    auth: &AdoAuth,
    needs: &[ProjectNeed],
    inputs: &BTreeMap<String, String>,
    dry_run: bool,
) -> Result<SyncReport, SyncError> {
    let mut wanted = Vec::new();
    let mut names = BTreeMap::new();
    for need in needs {
        let id = client
            .project_id(org_url, &need.project, auth)
            .await
            .map_err(|source| SyncError::Project {
                project: need.project.clone(),
                source,
            })?;
        names.insert(id.to_ascii_lowercase(), need.project.clone());
        for (publisher_id, event_type, resource_version) in &need.events {
            wanted.push(Wanted {
                project_id: id.clone(),
                publisher_id,
                event_type,
                resource_version,
                consumer_inputs: inputs.clone(),
            });
        }
    }
    let existing = client.list(org_url, auth).await?;
    let mut report = SyncReport::default();
    for (w, action) in plan(&wanted, &existing) {
        let project = names
            .get(&w.project_id.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| w.project_id.clone());
        let changed = !matches!(action, Action::Keep { .. });
        // Secrets are in the body and inputs: only the event, project, id and reason are printed.
        let line = match action {
            Action::Keep { id } => {
                report.ids.push(id.clone());
                format!("keep    {} project={project} id={id}", w.event_type)
            }
            Action::Create if dry_run => {
                format!("create  {} project={project} (dry run)", w.event_type)
            }
            Action::Create => {
                let created = client.create(org_url, auth, &w.body(false)).await?;
                report.ids.push(created.id.clone());
                report.created += 1;
                format!(
                    "create  {} project={project} id={}",
                    w.event_type, created.id
                )
            }
            Action::Replace { id, why } if dry_run => {
                format!(
                    "update  {} project={project} id={id}: {why} (dry run)",
                    w.event_type
                )
            }
            Action::Replace { id, why } => {
                let replaced = client.replace(org_url, auth, &id, &w.body(true)).await?;
                report.ids.push(id.clone());
                report.replaced += 1;
                format!(
                    "update  {} project={project} id={id}: {why}; now {}",
                    w.event_type,
                    replaced.state()
                )
            }
        };
        if changed {
            report.writes += 1;
            if !report.changed_projects.contains(&project) {
                report.changed_projects.push(project);
            }
        }
        report.lines.push(line);
    }
    Ok(report)
}

/// The consumer inputs of lockstep's subscriptions: the receiver's URL, and its credentials.
pub fn consumer_inputs(
    url: &str,
    basic: Option<(&str, &SecretString)>,
    token: Option<(&str, &SecretString)>,
) -> BTreeMap<String, String> {
    let mut inputs = BTreeMap::from([
        ("url".to_string(), url.to_string()),
        // lockstep reads the resource only; messages make payloads bigger for nothing.
        ("messagesToSend".to_string(), "none".to_string()),
        ("detailedMessagesToSend".to_string(), "none".to_string()),
    ]);
    if let Some((user, password)) = basic {
        inputs.insert("basicAuthUsername".into(), user.to_string());
        inputs.insert("basicAuthPassword".into(), password.expose().to_string());
    }
    if let Some((header, token)) = token {
        inputs.insert("httpHeaders".into(), format!("{header}:{}", token.expose()));
    }
    inputs
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
    let auth = AdoAuth::Pat(pat);
    if !(args.url.starts_with("https://") || args.url.starts_with("http://")) {
        return Err(SyncError::BadUrl(args.url.clone()));
    }
    if !args.projects.is_empty() && args.organization_url.is_none() {
        return Err(SyncError::ProjectWithoutOrganization);
    }
    if args.projects.len() > MAX_PROJECTS {
        return Err(SyncError::TooManyProjects);
    }
    let events = events_named(&args.events)?;
    let password = match &args.password_file {
        Some(p) => Some(read_secret("the Basic password", p)?),
        None => None,
    };
    let token = match &args.token_file {
        Some(p) => Some(read_secret("the header token", p)?),
        None => None,
    };
    let inputs = consumer_inputs(
        &args.url,
        args.username.as_deref().zip(password.as_ref()),
        token.as_ref().map(|t| (args.token_header.as_str(), t)),
    );

    // (organization URL, what its projects need), from the flags or from the cluster.
    let mut work: Vec<(String, Vec<ProjectNeed>)> = Vec::new();
    match &args.organization_url {
        Some(org) if !args.projects.is_empty() => {
            let events = if events.is_empty() {
                events_named(&["run-state-changed", "git-push"])?
            } else {
                events
            };
            let needs = args
                .projects
                .iter()
                .map(|p| ProjectNeed {
                    project: p.clone(),
                    events: events.clone(),
                })
                .collect();
            work.push((org.clone(), needs));
        }
        org => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| SyncError::Cluster(e.to_string()))?;
            let by_org = list_by_org(&client, &args.namespace, &kube::api::ListParams::default())
                .await
                .map_err(|e| SyncError::Cluster(e.to_string()))?;
            let keys = org_filter(&by_org, org.as_deref());
            if keys.is_empty() {
                return Err(SyncError::NothingInCluster(
                    org.clone()
                        .unwrap_or_else(|| "any organization".to_string()),
                ));
            }
            if keys.len() > MAX_ORGANIZATIONS {
                return Err(SyncError::TooManyOrganizations);
            }
            for key in keys {
                let objects = &by_org[&key];
                let url = objects[0].ado().organization_url.trim().to_string();
                work.push((url, needs_of(objects, &events)?));
            }
        }
    }

    let client = HooksClient::new()?;
    let (mut writes, mut ids) = (0, Vec::new());
    let many = work.len() > 1;
    for (org_url, needs) in &work {
        if many {
            println!("organization {org_url}");
        }
        let report = ensure(&client, org_url, &auth, needs, &inputs, args.dry_run).await?;
        for line in &report.lines {
            println!("{line}");
        }
        writes += report.writes;
        ids.extend(report.ids);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::coverage::{GIT_PUSH, RUN_STATE_CHANGED};

    fn object(kind: &str, project: &str) -> Watched {
        let spec = serde_json::json!({
            "azureDevOps": {"organizationUrl": "https://dev.azure.com/o", "project": project,
                            "credentials": {"secretRef": {"name": "s", "key": "token"}}},
            "pipeline": {"definitionId": 7, "branch": "main"},
            "build": {"definitionId": 7, "branch": "main"},
            "manifest": {"repository": "m", "branch": "main"},
            "deployed": {"workload": {"kind": "Deployment", "name": "w"}}
        });
        let obj = serde_json::json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": kind,
                                     "metadata": {"name": "x", "namespace": "n"}, "spec": spec});
        match kind {
            "PipelineGate" => Watched::Gate(serde_json::from_value(obj).unwrap()),
            _ => Watched::Trace(serde_json::from_value(obj).unwrap()),
        }
    }

    #[test]
    fn the_cluster_decides_the_events_unless_the_flag_does() {
        let objects = [
            object("PipelineGate", "Gates"),
            object("ServiceTrace", "Shop"),
            object("PipelineGate", "shop"),
        ];
        let needs = needs_of(&objects, &[]).unwrap();
        let events = |n: &ProjectNeed| n.events.iter().map(|e| e.1).collect::<Vec<_>>();
        assert_eq!(needs.len(), 2);
        assert_eq!(needs[0].project, "Gates");
        assert_eq!(events(&needs[0]), [RUN_STATE_CHANGED]);
        assert_eq!(needs[1].project, "Shop");
        assert_eq!(events(&needs[1]), [RUN_STATE_CHANGED, GIT_PUSH]);

        let flag = events_named(&["build-complete"]).unwrap();
        let needs = needs_of(&objects, &flag).unwrap();
        assert!(needs.iter().all(|n| events(n) == ["build.complete"]));
        assert!(matches!(
            events_named(&["nope"]),
            Err(SyncError::UnknownEvent(e)) if e == "nope"
        ));
    }

    #[test]
    fn consumer_inputs_carry_the_receiver_credentials() {
        let (pw, tok) = (SecretString::new("pw"), SecretString::new("tok"));
        let inputs = consumer_inputs("https://h/hooks", Some(("u", &pw)), Some(("X-T", &tok)));
        assert_eq!(inputs["url"], "https://h/hooks");
        assert_eq!(inputs["basicAuthUsername"], "u");
        assert_eq!(inputs["basicAuthPassword"], "pw");
        assert_eq!(inputs["httpHeaders"], "X-T:tok");
        assert_eq!(inputs["messagesToSend"], "none");
        let bare = consumer_inputs("https://h/hooks", None, None);
        assert!(!bare.contains_key("httpHeaders") && !bare.contains_key("basicAuthPassword"));
    }
}
