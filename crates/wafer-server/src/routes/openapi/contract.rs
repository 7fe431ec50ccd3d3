//! What the API's description says once for many routes, added after the handlers' annotations are
//! collected: the constraints of the parameters every route names the same way (path, query and
//! header), the answers the middleware and the store give on any management route (a refused input,
//! the token, the same-origin rule, a store that went away), raw bodies as binary, an id of its own for
//! each method of a function's routes, and links spelled as OpenAPI spells them.

use serde_json::{json, Map, Value};

/// A function's name, as `validate::name` takes it.
const FUNCTION_NAME: &str = "^[a-z0-9][a-z0-9-]*$";
/// An alias: a function name that is not only digits (`validate::alias`).
const ALIAS: &str = "^(?:[a-z]|[0-9][a-z0-9-]*[a-z-])[a-z0-9-]*$";
/// A function name with an optional `:alias` or `:version`, as `/fn` takes it.
const QUALIFIED_NAME: &str = "^[a-z0-9][a-z0-9-]*(?::[a-z0-9][a-z0-9-]*)?$";
/// A Lambda client's `FunctionName`: a name, with a qualifier or not, or a function's ARN.
const LAMBDA_NAME: &str = concat!(
    "^(?:arn:aws:lambda:[a-z0-9-]+:[0-9]{12}:function:)?",
    "[a-z0-9][a-z0-9-]*(?::[a-z0-9][a-z0-9-]*)?$"
);
/// A key-value store's name (`validate::store_name`).
const STORE: &str = "^[A-Za-z0-9._-]+$";

/// A window of the traffic rollups: 1 minute to 48 hours, in minutes, hours or days.
const WINDOW: &str = concat!(
    "^(?:(?:[1-9]|[1-9][0-9]|[1-9][0-9]{2}|1[0-9]{3}|2[0-7][0-9]{2}|28[0-7][0-9]|2880)m",
    "|(?:[1-9]|[1-3][0-9]|4[0-8])h|[12]d)$"
);
/// A whole number of minutes (a window's bucket), as minutes or hours.
const MINUTES: &str = "^(?:[1-9][0-9]{0,3}m|[1-9][0-9]{0,2}h)$";
/// A duration as `units::parse_timeout_ms` takes it, short of overflowing.
const DURATION: &str = "^[0-9]{1,10}(?:ms|s|m|min|h|d)?$";
/// An absolute http or https URL (a callback's).
const HTTP_URL: &str = "^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?$";
/// An API key's scope (`auth::Scope`).
const SCOPE: &str = "^(?:admin(?::\\*)?|(?:read|deploy|invoke):[A-Za-z0-9._*-]{1,128})$";
/// The names of configuration variables and secrets (`validate::variables`).
const VARIABLE: &str = "^[A-Za-z0-9_.-]+$";

/// The schema of a query parameter named `name` on `path`, for those whose values the server checks
/// beyond their type.
fn query_parameter(path: &str, name: &str) -> Option<Value> {
    let pattern = |pattern: &str| json!({"type": "string", "pattern": pattern});
    Some(match name {
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        "since" if path.ends_with("/stats") => pattern(WINDOW),
        "since" => pattern(DURATION),
        "bucket" => pattern(MINUTES),
        "callback_url" => pattern(HTTP_URL),
        "qualifier" | "Qualifier" => {
            json!({"type": "string", "pattern": format!("^[0-9]{{1,9}}$|{ALIAS}")})
        }
        "status" => json!({"$ref": "#/components/schemas/ExecutionStatus"}),
        "level" => json!({"$ref": "#/components/schemas/LogLevel"}),
        _ => return None,
    })
}

/// The schema of a request header the server reads, for those with a fixed set of values.
fn header(name: &str) -> Option<Value> {
    Some(match name {
        "X-Amz-Invocation-Type" => {
            json!({"type": "string", "enum": ["RequestResponse", "Event", "DryRun"]})
        }
        "X-Amz-Log-Type" => json!({"type": "string", "enum": ["None", "Tail"]}),
        "Idempotency-Key" => json!({"type": "string", "pattern": "^[!-~]{1,255}$"}),
        _ => return None,
    })
}

/// The schema of a path parameter named `name` on `path`, for the names whose values the server
/// checks.
fn path_parameter(path: &str, name: &str) -> Option<Value> {
    let pattern = |pattern: &str, max: usize| json!({"type": "string", "pattern": pattern, "minLength": 1, "maxLength": max});
    Some(match name {
        "name" if path.starts_with("/fn/") => pattern(QUALIFIED_NAME, 127),
        "FunctionName" => pattern(LAMBDA_NAME, 255),
        "name" => pattern(FUNCTION_NAME, 63),
        "alias" => pattern(ALIAS, 63),
        "store" => pattern(STORE, 255),
        "key" => json!({"type": "string", "minLength": 1}),
        _ => return None,
    })
}

/// Refines the collected description with what many routes share.
pub fn refine(document: &mut Value) {
    name_map_keys(document);
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        let ids: Vec<Value> = item.values().map(|o| o["operationId"].clone()).collect();
        for (method, operation) in item.iter_mut() {
            let shared = ids.iter().filter(|id| **id == operation["operationId"]);
            if shared.count() > 1 {
                name_per_method(method, operation);
            }
            constrain_parameters(path, operation);
            spell_links(operation);
            raw_bodies_as_bytes(operation);
            if path.starts_with("/v1/") || path == "/metrics" {
                document_shared_answers(method, operation);
            }
        }
    }
}

/// Gives an operation one handler serves for several methods (a function's own routes) an id of its
/// own per method: `callFunction` becomes `callFunctionGet`, `callFunctionPost`…
fn name_per_method(method: &str, operation: &mut Value) {
    let Some(id) = operation["operationId"].as_str() else {
        return;
    };
    let mut chars = method.chars();
    let suffix: String = chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(chars)
        .collect();
    operation["operationId"] = Value::from(format!("{id}{suffix}"));
}

fn constrain_parameters(path: &str, operation: &mut Value) {
    let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for parameter in parameters {
        let Some(name) = parameter["name"].as_str() else {
            continue;
        };
        let schema = match parameter["in"].as_str() {
            Some("path") => path_parameter(path, name),
            Some("query") => query_parameter(path, name),
            Some("header") => header(name),
            _ => None,
        };
        if let Some(schema) = schema {
            parameter["schema"] = schema;
        }
    }
}

/// Spells the fields of response links as OpenAPI does (`operationId`, `requestBody`): the generator
/// writes them in snake case.
fn spell_links(operation: &mut Value) {
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let links = responses
        .values_mut()
        .filter_map(|r| r.get_mut("links").and_then(Value::as_object_mut));
    for link in links.flat_map(|links| links.values_mut()) {
        let Some(link) = link.as_object_mut() else {
            continue;
        };
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.into(), value);
            }
        }
    }
}

/// Describes a body of raw bytes (a module, a value, a request for a function or its answer) as
/// binary, not as the array of numbers a `Vec<u8>` reads as.
fn raw_bodies_as_bytes(operation: &mut Value) {
    let Some(fields) = operation.as_object_mut() else {
        return;
    };
    let bodies = fields
        .iter_mut()
        .flat_map(|(field, value)| match field.as_str() {
            "requestBody" => vec![value],
            "responses" => value
                .as_object_mut()
                .map(|r| r.values_mut().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        });
    for body in bodies {
        let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) else {
            continue;
        };
        for (media, body) in content.iter_mut() {
            let schema = &mut body["schema"];
            let bytes = schema["type"] == "array" && schema["items"]["type"] == "integer";
            if bytes && !media.starts_with("multipart/") && !media.ends_with("json") {
                *schema = json!({"type": "string", "format": "binary"});
            }
        }
    }
    // Plain bytes may be none at all: a call without a body, an empty value.
    if let Some(request) = operation.get_mut("requestBody") {
        let content = &request["content"];
        let plain = content.as_object().is_some_and(|c| c.len() == 1)
            && content.get("application/octet-stream").is_some();
        if plain {
            request["required"] = Value::Bool(false);
        }
    }
}

/// Adds the answers any management route may give that its handler does not name.
fn document_shared_answers(method: &str, operation: &mut Value) {
    let takes_input = operation["parameters"]
        .as_array()
        .is_some_and(|p| !p.is_empty())
        || operation.get("requestBody").is_some();
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if takes_input {
        add(
            responses,
            "400",
            "A malformed or invalid parameter or body (the error's `code` says which)",
        );
    }
    add(
        responses,
        "401",
        "No valid credentials where the server needs them: its token or an API key, missing, \
         wrong, revoked or expired (code `unauthorized`)",
    );
    add(
        responses,
        "403",
        match matches!(method, "post" | "put" | "delete" | "patch") {
            true => {
                "An API key whose scopes do not allow this (code `forbidden`), or a browser sent it \
                 from a page of another origin (code `cross_site`)"
            }
            false => "An API key whose scopes do not allow this (code `forbidden`)",
        },
    );
    add(
        responses,
        "429",
        "An API key over its rate limit; retry after `Retry-After` (code `rate_limited`)",
    );
    add(
        responses,
        "500",
        "An internal failure, logged by the server (code `internal`)",
    );
    add(
        responses,
        "503",
        "The store cannot be reached; retry after `Retry-After` (code `unavailable`)",
    );
}

/// Constrains the keys of the maps bodies carry (an alias's weights are keyed by version numbers, a
/// configuration by variable names) and the items of a key's scopes.
fn name_map_keys(document: &mut Value) {
    let keys = [
        (
            "/components/schemas/Alias/properties/weights",
            "^[0-9]{1,9}$",
        ),
        (
            "/components/schemas/ConfigUpdate/properties/variables",
            VARIABLE,
        ),
        (
            "/components/schemas/ConfigUpdate/properties/secrets",
            VARIABLE,
        ),
    ];
    if let Some(scope) =
        document.pointer_mut("/components/schemas/KeyRequest/properties/scopes/items")
    {
        scope["pattern"] = Value::from(SCOPE);
    }
    for (pointer, pattern) in keys {
        if let Some(map) = document.pointer_mut(pointer) {
            map["propertyNames"] =
                json!({"type": "string", "pattern": pattern, "minLength": 1, "maxLength": 255});
        }
    }
}

/// Declares `status` with an error body, unless the handler already declares it.
fn add(responses: &mut Map<String, Value>, status: &str, description: &str) {
    responses.entry(status).or_insert_with(|| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        let (_, document) = super::super::management().split_for_parts();
        let mut value = serde_json::to_value(&document).expect("the document as JSON");
        refine(&mut value);
        value
    }

    fn operations(document: &Value) -> Vec<(String, String, Value)> {
        let mut all = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                all.push((path.clone(), method.clone(), operation.clone()));
            }
        }
        all
    }

    #[test]
    fn every_operation_has_an_id_of_its_own() {
        let document = document();
        let mut ids: Vec<String> = operations(&document)
            .iter()
            .map(|(path, method, o)| {
                o["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no id"))
                    .to_string()
            })
            .collect();
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "{ids:?}");
        assert!(ids.contains(&"callFunctionPost".to_string()), "{ids:?}");
    }

    #[test]
    fn management_routes_declare_the_shared_answers_and_checked_names() {
        let document = document();
        for (path, method, operation) in operations(&document) {
            if !path.starts_with("/v1/") {
                continue;
            }
            for status in ["401", "403", "429", "500", "503"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {path} lacks {status}"
                );
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["name"] == "name" && parameter["in"] == "path" {
                    assert_eq!(parameter["schema"]["pattern"], FUNCTION_NAME, "{path}");
                    assert!(operation["responses"].get("400").is_some(), "{path}");
                }
            }
        }
    }

    #[test]
    fn links_are_spelled_as_openapi_spells_them() {
        let document = document();
        let deploy = &document["paths"]["/v1/functions/{name}/versions"]["post"];
        let links = &deploy["responses"]["201"]["links"];
        assert_eq!(links["function"]["operationId"], "getFunction");
        assert_eq!(
            links["rollback"]["requestBody"]["version"],
            "$response.body#/version"
        );
        assert!(links["function"].get("operation_id").is_none());
        let invoke = &document["paths"]["/v1/functions/{name}/invoke"]["post"];
        assert_eq!(
            invoke["responses"]["202"]["links"]["execution"]["parameters"]["id"],
            "$response.body#/execution_id"
        );
    }

    #[test]
    fn raw_bodies_are_binary_and_may_be_empty() {
        let document = document();
        for (path, method, operation) in operations(&document) {
            for field in ["requestBody", "responses", "parameters"] {
                assert!(
                    !operation.get(field).is_some_and(Value::is_null),
                    "{method} {path}"
                );
            }
        }
        let put = &document["paths"]["/v1/kv/{store}/{key}"]["put"]["requestBody"];
        assert_eq!(
            put["content"]["application/octet-stream"]["schema"]["format"],
            "binary"
        );
        assert_eq!(put["required"], false);
        let answer = &document["paths"]["/v1/functions/{name}/invoke"]["post"]["responses"]["200"];
        assert_eq!(answer["content"]["*/*"]["schema"]["format"], "binary");
        let deploy = &document["paths"]["/v1/functions/{name}/versions"]["post"]["requestBody"];
        assert_eq!(
            deploy["content"]["application/wasm"]["schema"]["type"],
            "string"
        );
        assert_eq!(deploy["required"], true);
    }
}
