//! `POST /v1/apps`: several functions deployed as one, all or none (a Spin application's components).

use super::functions::{form, CONFIG_CAP, FORM_OVERHEAD};
use crate::app::{App, Upload};
use crate::auth::{Caller, Permission};
use crate::error::Error;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;
use wafer_api::{AppDeploy, AppDeployed, ErrorBody, MAX_APP_FUNCTIONS};
use wafer_store::FunctionVariables;

/// How many modules' worth of bytes an application deploy may send in all (each is held to the module
/// cap).
const APP_MODULES: usize = 8;

/// The parts of an application deploy, as the API's description shows them: `app` first, then the
/// parts it names, each a module or a tar of files.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AppForm {
    app: AppDeploy,
    #[schema(value_type = Option<String>, format = Binary)]
    module: Vec<u8>,
}

/// `POST /v1/apps`: multipart, an `app` part (AppDeploy as JSON) first, then the module parts it names.
#[utoipa::path(post, path = "/v1/apps", operation_id = "deployApp", tag = "functions",
    request_body(description = "multipart/form-data: an `app` part first (AppDeploy as JSON: each \
        function's name, config, variables and the names of the parts holding its module and its \
        read-only files), then one part per module or files bundle (a tar), each up to the server's \
        --max-module. Every function is checked and compiled, then \
        all are stored in one transaction and made live, or none is.",
        content((AppForm = "multipart/form-data"))),
    responses((status = 201, body = AppDeployed), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 507, body = ErrorBody, description = "No space left to store the modules")))]
pub async fn deploy(State(app): State<Arc<App>>, request: Request) -> Result<Response, Error> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Error::Internal("the caller was not identified".into()))?;
    let module_cap = app.config.defaults.max_module_bytes;
    let total = module_cap
        .saturating_add(FORM_OVERHEAD)
        .saturating_mul(APP_MODULES);
    let mut form = form(request, total)?;
    let first = form
        .next()
        .await?
        .ok_or_else(|| Error::InvalidRequest("the body has no `app` part".into()))?;
    if first.name() != "app" {
        return Err(Error::InvalidRequest(
            "the first part must be `app`, the application's functions as JSON".into(),
        ));
    }
    let spec: AppDeploy =
        wafer_formats::json::object(&first.read(CONFIG_CAP, "the app part").await?)
            .map_err(|e| Error::InvalidConfig(format!("the app part is not valid: {e}")))?;
    if spec.functions.is_empty() || spec.functions.len() > MAX_APP_FUNCTIONS {
        return Err(Error::InvalidConfig(format!(
            "an application deploys 1 to {MAX_APP_FUNCTIONS} functions, not {}",
            spec.functions.len()
        )));
    }
    for function in &spec.functions {
        caller.require(Permission::Deploy, Some(&function.name))?;
    }
    let named = |part: &str| {
        spec.functions
            .iter()
            .any(|f| f.module == part || f.files.as_deref() == Some(part))
    };
    let mut parts: HashMap<String, Bytes> = HashMap::new();
    while let Some(part) = form.next().await? {
        let name = part.name().to_string();
        if !named(&name) || parts.contains_key(&name) {
            return Err(Error::InvalidRequest(format!(
                "unexpected or repeated multipart part {name:?}: send each module and files bundle \
                 the app part names, once"
            )));
        }
        let bytes = part.read(module_cap, &format!("part {name:?}")).await?;
        parts.insert(name, bytes);
    }
    let part = |function: &str, what: &str, name: &str| {
        parts.get(name).cloned().ok_or_else(|| {
            Error::InvalidRequest(format!(
                "function `{function}` names {what} part {name:?}, which the body does not have"
            ))
        })
    };
    let mut functions = Vec::with_capacity(spec.functions.len());
    for f in spec.functions {
        let module = part(&f.name, "module", &f.module)?;
        let files = match &f.files {
            Some(files) => Some(part(&f.name, "files", files)?),
            None => None,
        };
        functions.push(Upload {
            name: f.name,
            module,
            files,
            config: f.config,
            variables: FunctionVariables {
                variables: f.variables.variables,
                secrets: f
                    .variables
                    .secrets
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v?)))
                    .collect(),
            },
        });
    }
    let deployed = app.deploy_app(functions).await?;
    let functions = deployed
        .iter()
        .map(|(function, _)| function.live.to_info(true))
        .collect();
    Ok((StatusCode::CREATED, Json(AppDeployed { functions })).into_response())
}
