//! `POST /v1/apps`: several functions deployed as one, all or none (a Spin application's components).

use super::functions::{part_error, read_part, CONFIG_CAP};
use crate::app::{App, AppFunction};
use crate::error::Error;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;
use wafer_api::{AppDeploy, AppDeployed, ErrorBody, MAX_APP_FUNCTIONS};
use wafer_store::FunctionVariables;

/// `POST /v1/apps`: multipart, an `app` part (AppDeploy as JSON) first, then the module parts it names.
#[utoipa::path(post, path = "/v1/apps", tag = "functions",
    request_body(description = "multipart/form-data: an `app` part first (AppDeploy as JSON: each \
        function's name, config, variables and the name of the part holding its module), then one part \
        per module, each up to the server's --max-module. Every function is checked and compiled, then \
        all are stored in one transaction and made live, or none is.",
        content((Vec<u8> = "multipart/form-data"))),
    responses((status = 201, body = AppDeployed), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn deploy(State(app): State<Arc<App>>, request: Request) -> Result<Response, Error> {
    let module_cap = app.config.defaults.max_module_bytes;
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| Error::InvalidRequest(e.body_text()))?;
    let first = multipart
        .next_field()
        .await
        .map_err(part_error)?
        .ok_or_else(|| Error::InvalidRequest("the body has no `app` part".into()))?;
    if first.name() != Some("app") {
        return Err(Error::InvalidRequest(
            "the first part must be `app`, the application's functions as JSON".into(),
        ));
    }
    let spec: AppDeploy =
        serde_json::from_slice(&read_part(first, CONFIG_CAP, "the app part").await?)
            .map_err(|e| Error::InvalidConfig(format!("the app part is not valid: {e}")))?;
    if spec.functions.is_empty() || spec.functions.len() > MAX_APP_FUNCTIONS {
        return Err(Error::InvalidConfig(format!(
            "an application deploys 1 to {MAX_APP_FUNCTIONS} functions, not {}",
            spec.functions.len()
        )));
    }
    let mut modules: HashMap<String, Bytes> = HashMap::new();
    while let Some(field) = multipart.next_field().await.map_err(part_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if !spec.functions.iter().any(|f| f.module == name) || modules.contains_key(&name) {
            return Err(Error::InvalidRequest(format!(
                "unexpected or repeated multipart part {name:?}: send each module the app part names, once"
            )));
        }
        let module = read_part(field, module_cap, &format!("module {name:?}")).await?;
        modules.insert(name, module);
    }
    let mut functions = Vec::with_capacity(spec.functions.len());
    for f in spec.functions {
        let module = modules.get(&f.module).cloned().ok_or_else(|| {
            Error::InvalidRequest(format!(
                "function `{}` names module part {:?}, which the body does not have",
                f.name, f.module
            ))
        })?;
        functions.push(AppFunction {
            name: f.name,
            module,
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
