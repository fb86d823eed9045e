//! Definitions - Get (`GET {org}/{project}/_apis/build/definitions/{id}`): the BuildDefinition in the
//! shape of `tests/fixtures/azure-devops/build-definition.json` (a real response recorded by the
//! Azure DevOps CLI), so a client can tell "this definition does not exist" from "it has no runs".

use serde_json::{json, Value};

use super::ids::ado_time;
use super::render::{self, Ctx};
use super::state::Definition;

/// The real service's 404 for an id that is not a definition of the project: the Build2 server
/// throws `DefinitionNotFoundException` (see `Microsoft.TeamFoundation.Build.WebApi`), and the
/// message text is the one reported in MicrosoftDocs/vsts-rest-api-specs#356 ("Build pipeline 54 was
/// not found").
pub(crate) const NOT_FOUND_TYPE_NAME: &str =
    "Microsoft.TeamFoundation.Build.WebApi.DefinitionNotFoundException, Microsoft.TeamFoundation.Build2.WebApi";
pub(crate) const NOT_FOUND_TYPE_KEY: &str = "DefinitionNotFoundException";

pub(crate) fn not_found_message(id: &str) -> String {
    format!("Build pipeline {id} was not found.")
}

/// Looks the definition up by its numeric id; anything else (a name, garbage) is not found.
pub(crate) fn find<'a>(ctx: &Ctx<'a>, id: &str) -> Option<(i64, &'a Definition)> {
    let id = id.trim().parse::<i64>().ok()?;
    ctx.project.definitions.get(&id).map(|d| (id, d))
}

/// The BuildDefinition object, keys in the order of the recorded response.
pub(crate) fn definition(ctx: &Ctx, id: i64, def: &Definition) -> Value {
    let project_url = format!("{}/{}", ctx.org_url, ctx.project.id);
    let repo_name = def
        .repository
        .clone()
        .unwrap_or_else(|| ctx.project.name.clone());
    let repo = ctx.project.repository(&repo_name);
    let repo_id = repo.map_or_else(
        || {
            super::ids::stable_guid(&format!(
                "repo/{}/{}",
                ctx.project.id,
                repo_name.to_ascii_lowercase()
            ))
        },
        |r| r.id.clone(),
    );
    let default_branch = repo.map_or("refs/heads/main", |r| r.default_branch.as_str());
    let self_url = format!(
        "{project_url}/_apis/build/Definitions/{id}?revision={}",
        def.revision
    );
    json!({
        "triggers": [{
            "branchFilters": [],
            "pathFilters": [],
            "settingsSourceType": 2,
            "batchChanges": false,
            "maxConcurrentBuildsPerBranch": 1,
            "triggerType": "continuousIntegration",
        }],
        "properties": {},
        "tags": [],
        "_links": {
            "self": {"href": self_url},
            "web": {"href": format!("{project_url}/_build/definition?definitionId={id}")},
            "editor": {"href": format!("{project_url}/_build/designer?id={id}&_a=edit-build-definition")},
            "badge": {"href": format!("{project_url}/_apis/build/status/{id}")},
        },
        "comment": "Simulated pipeline",
        "jobAuthorizationScope": "projectCollection",
        "process": {"yamlFilename": "azure-pipelines.yml", "type": 2},
        "repository": {
            "properties": {
                "fullName": repo_name,
                "safeRepository": repo_id,
                "reportBuildStatus": "true",
            },
            "id": repo_id,
            "type": "TfsGit",
            "name": repo_name,
            "url": format!("{}/{}/_git/{}", ctx.org_url, ctx.project.name, repo_name),
            "defaultBranch": default_branch,
            "clean": null,
            "checkoutSubmodules": false,
        },
        "quality": "definition",
        "authoredBy": render::user_identity(ctx),
        "drafts": [],
        "queue": {
            "_links": {"self": {"href": format!("{}/_apis/build/Queues/20767", ctx.org_url)}},
            "id": 20767,
            "name": "Azure Pipelines",
            "url": format!("{}/_apis/build/Queues/20767", ctx.org_url),
            "pool": {"id": 9, "name": "Azure Pipelines", "isHosted": true},
        },
        "id": id,
        "name": def.name,
        "url": self_url,
        "uri": format!("vstfs:///Build/Definition/{id}"),
        "path": "\\",
        "type": "build",
        "queueStatus": "enabled",
        "revision": def.revision,
        "createdDate": ado_time(def.created),
        "project": render::project_ref(ctx),
    })
}
