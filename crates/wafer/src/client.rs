//! The HTTP client of the management API, used by every subcommand but `serve`.

use crate::cli::ClientArgs;
use crate::progress::Step;
use anyhow::{anyhow, Context, Result};
use reqwest::{Method, Response};
use serde::de::DeserializeOwned;
use wafer_api::{AsyncAccepted, ConfigUpdate, ErrorBody, FunctionConfig, VersionInfo};

/// A connection to one wafer server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server named by `--server`, sending `--token` when given.
    pub fn new(args: &ClientArgs) -> Self {
        Self {
            base: args.server.trim_end_matches('/').to_string(),
            token: args.token.clone().filter(|t| !t.is_empty()),
            http: reqwest::Client::new(),
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the wafer server at {}", self.base))?;
        check(response).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET path`, decoded from JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(self.send(self.request(Method::GET, path)).await?).await
    }

    /// `POST path` with a JSON body, decoded from JSON.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        decode(
            self.send(self.request(Method::POST, path).json(body))
                .await?,
        )
        .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }

    /// Deploys `module` (with its read-only `files`, a tar) as a new version of `name`, its upload and
    /// the server's compile shown as `step`; without `promote`, the live version stays and the new one
    /// is a candidate.
    #[allow(clippy::too_many_arguments)]
    pub async fn deploy(
        &self,
        name: &str,
        module: Vec<u8>,
        files: Option<Vec<u8>>,
        config: &FunctionConfig,
        variables: &ConfigUpdate,
        promote: bool,
        step: &Step,
    ) -> Result<VersionInfo> {
        // A container's image goes as `image` (none when its config names an oci:// image to pull).
        let container = config.kind == Some(wafer_api::Kind::Container);
        let length = module.len() as u64;
        let mut form = reqwest::multipart::Form::new();
        if !container {
            let body = step.body(module, "compiling on the server");
            form = form.part(
                "module",
                reqwest::multipart::Part::stream_with_length(body, length)
                    .file_name("module.wasm")
                    .mime_str("application/wasm")?,
            );
        } else if !module.is_empty() {
            let body = step.body(module, "unpacking the image on the server");
            form = form.part(
                "image",
                reqwest::multipart::Part::stream_with_length(body, length)
                    .file_name("image.tar")
                    .mime_str("application/x-tar")?,
            );
        }
        if let Some(files) = files {
            form = form.part("files", tar_part(files)?);
        }
        form = form.part(
            "config",
            reqwest::multipart::Part::text(serde_json::to_string(config)?)
                .mime_str("application/json")?,
        );
        if *variables != ConfigUpdate::default() {
            form = form.part(
                "variables",
                reqwest::multipart::Part::text(serde_json::to_string(variables)?)
                    .mime_str("application/json")?,
            );
        }
        let path = format!("/v1/functions/{name}/versions");
        let query = [("promote", promote)];
        decode(
            self.send(
                self.request(Method::POST, &path)
                    .query(&query)
                    .multipart(form),
            )
            .await?,
        )
        .await
    }

    /// Deploys an application's functions as one (`POST /v1/apps`); `modules` and `files` (tars) are
    /// the parts `app` names.
    pub async fn deploy_app(
        &self,
        app: &wafer_api::AppDeploy,
        modules: Vec<(String, Vec<u8>)>,
        files: Vec<(String, Vec<u8>)>,
        step: &Step,
    ) -> Result<wafer_api::AppDeployed> {
        let mut form = reqwest::multipart::Form::new().part(
            "app",
            reqwest::multipart::Part::text(serde_json::to_string(app)?)
                .mime_str("application/json")?,
        );
        for (name, module) in modules {
            let length = module.len() as u64;
            let body = step.body(module, "compiling on the server");
            form = form.part(
                name,
                reqwest::multipart::Part::stream_with_length(body, length)
                    .file_name("module.wasm")
                    .mime_str("application/wasm")?,
            );
        }
        for (name, files) in files {
            form = form.part(name, tar_part(files)?);
        }
        decode(
            self.send(self.request(Method::POST, "/v1/apps").multipart(form))
                .await?,
        )
        .await
    }

    /// Sends `body` with `method` to `path` and returns the raw response, or wafer's error.
    pub async fn raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.body(body);
        }
        self.send(request).await
    }

    /// PUTs `body` as JSON to `path` and decodes the answer.
    pub async fn put_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        decode(
            self.send(self.request(Method::PUT, path).json(body))
                .await?,
        )
        .await
    }

    /// Invokes `name` (at `qualifier`, an alias or version, when given) with `body`; the function's own
    /// response, or an error if wafer refused the call.
    pub async fn invoke(
        &self,
        name: &str,
        body: Vec<u8>,
        qualifier: Option<&str>,
    ) -> Result<Response> {
        let path = format!("/v1/functions/{name}/invoke");
        let query: Vec<_> = qualifier.map(|q| ("qualifier", q)).into_iter().collect();
        self.send(self.request(Method::POST, &path).query(&query).body(body))
            .await
    }

    /// Queues an invocation of `name` with `body`; returns its execution id.
    pub async fn invoke_async(
        &self,
        name: &str,
        body: Vec<u8>,
        options: &AsyncOptions<'_>,
    ) -> Result<AsyncAccepted> {
        let path = format!("/v1/functions/{name}/invoke");
        let mut query = vec![("async", "true")];
        query.extend(options.callback.map(|url| ("callback_url", url)));
        query.extend(options.qualifier.map(|q| ("qualifier", q)));
        let mut request = self.request(Method::POST, &path).query(&query).body(body);
        if let Some(key) = options.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        decode(self.send(request).await?).await
    }

    /// `GET path` with a query, decoded from JSON.
    pub async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        decode(
            self.send(self.request(Method::GET, path).query(query))
                .await?,
        )
        .await
    }

    /// `GET path` with a query, the response left open to be streamed.
    pub async fn stream(&self, path: &str, query: &[(&str, String)]) -> Result<Response> {
        self.send(self.request(Method::GET, path).query(query))
            .await
    }
}

/// How an async invocation is asked for.
#[derive(Debug, Default)]
pub struct AsyncOptions<'a> {
    /// Where the server posts the finished execution.
    pub callback: Option<&'a str>,
    /// The alias or version to run instead of `live`.
    pub qualifier: Option<&'a str>,
    /// Makes a repeated submission the same execution.
    pub idempotency_key: Option<&'a str>,
}

/// Passes a successful response through; turns wafer's error answers into an error with its message.
///
/// A failing status without wafer's error marker is a function's own answer and passes through too.
async fn check(response: Response) -> Result<Response> {
    if response.status().is_success() || response.headers().get(ERROR_HEADER).is_none() {
        return Ok(response);
    }
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Err(anyhow!("{} ({})", body.error.message, body.error.code)),
        Err(_) => Err(anyhow!("the server answered {status}: {text}")),
    }
}

/// The header wafer sets on its own error answers, telling them from a function's.
pub const ERROR_HEADER: &str = "x-wafer-error";

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T> {
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(anyhow!("the server answered {status}: {text}"));
    }
    response
        .json()
        .await
        .context("the server's answer is not the JSON expected")
}

/// A files bundle as a multipart part.
fn tar_part(files: Vec<u8>) -> Result<reqwest::multipart::Part> {
    Ok(reqwest::multipart::Part::bytes(files)
        .file_name("files.tar")
        .mime_str("application/x-tar")?)
}
