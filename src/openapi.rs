//! `GET /openapi.json`: the REST API as an OpenAPI 3.1 document.
//!
//! The schemas are generated from the `api/` types (utoipa's `ToSchema`, behind `api`'s
//! `openapi` feature); the operations come from [`OPERATIONS`], one row per endpoint with
//! every status it can answer. Each JSON answer has a text twin (the original engine's
//! `status code: N, message: …`), chosen by `Accept`. `test/tests/openapi.rs` checks live
//! answers of every endpoint against this document.

use std::sync::OnceLock;

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, OpenApi as Document, Ref, Required, Type};
use utoipa::OpenApi;
use wasmengine_api::function::FunctionLimits;
use wasmengine_api::invoke::HEADER_CALL_ID;
use wasmengine_api::rest::{
    DeployRequest, FunctionDetail, FunctionNameRequest, FunctionSummary, InvokeRequest, LogEntry,
    LogsRequest, Response,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "WasmEngine",
        description = "Deploy and invoke WebAssembly functions on containerd. Every answer \
                       is JSON with `Accept: application/json`, else the original engine's \
                       text form `status code: N, message: …`; the HTTP status is the real one."
    ),
    components(schemas(
        DeployRequest,
        FunctionLimits,
        FunctionNameRequest,
        InvokeRequest,
        LogsRequest,
        Response,
        FunctionSummary,
        FunctionDetail,
        LogEntry
    ))
)]
struct Schemas;

/// What an endpoint takes and answers.
struct Operation {
    method: HttpMethod,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    /// The request body's schema, if it takes one.
    request: Option<&'static str>,
    /// Every status it answers, with when.
    statuses: &'static [(u16, &'static str)],
    /// Whether it answers in the REST forms (else `text/plain` only).
    rest: bool,
}

const AUTH: (u16, &str) = (401, "Missing or wrong bearer token (with `--auth-token`).");
const TOO_LARGE: (u16, &str) = (413, "Request body over `--max-body-bytes`.");
const BAD: (u16, &str) = (400, "Malformed JSON, a missing field or an invalid name.");
const NO_CONTAINERD: (u16, &str) = (503, "containerd is unreachable.");

const OPERATIONS: &[Operation] = &[
    Operation {
        method: HttpMethod::Post,
        path: "/function/deploy",
        id: "deploy",
        summary: "Deploy a function from an OCI image.",
        request: Some("DeployRequest"),
        statuses: &[
            (200, "Deployed: the function answers."),
            BAD,
            AUTH,
            (404, "The image is not in the registry."),
            (409, "The name is deployed, or being deployed."),
            TOO_LARGE,
            (422, "The image holds no usable module, is over a size cap, or the module does not fit the deploy."),
            (502, "The registry is unreachable or refused, or a pinned digest does not match."),
            (503, "containerd is unreachable, or the task could not start."),
            (504, "The task did not become ready in time."),
        ],
        rest: true,
    },
    Operation {
        method: HttpMethod::Post,
        path: "/function/invoke",
        id: "invoke",
        summary: "Call a function with JSON args; the result in `message` (and `result`).",
        request: Some("InvokeRequest"),
        statuses: &[
            (200, "The function's result."),
            (400, "Malformed JSON, args neither an object nor an array, or args the function rejects."),
            AUTH,
            (404, "The function is not deployed."),
            TOO_LARGE,
            (429, "Every slot and queue place of the function is taken (`Retry-After`)."),
            (500, "The function trapped, exited non-zero, hit its memory or fuel limit, or returned too much."),
            (503, "The function's task could not be (re)started, or died during the call."),
            (504, "The function hit its timeout."),
        ],
        rest: true,
    },
    Operation {
        method: HttpMethod::Get,
        path: "/function/list",
        id: "list",
        summary: "The deployed functions (`functions`).",
        request: None,
        statuses: &[(200, "The functions."), AUTH, NO_CONTAINERD],
        rest: true,
    },
    Operation {
        method: HttpMethod::Post,
        path: "/function/query",
        id: "query",
        summary: "One function's details (`function`).",
        request: Some("FunctionNameRequest"),
        statuses: &[
            (200, "The function."),
            BAD,
            AUTH,
            (404, "The function is not deployed."),
            TOO_LARGE,
            NO_CONTAINERD,
        ],
        rest: true,
    },
    Operation {
        method: HttpMethod::Post,
        path: "/function/delete",
        id: "delete",
        summary: "Stop and remove a function (its image stays).",
        request: Some("FunctionNameRequest"),
        statuses: &[
            (200, "Deleted."),
            BAD,
            AUTH,
            (404, "The function is not deployed."),
            TOO_LARGE,
            NO_CONTAINERD,
        ],
        rest: true,
    },
    Operation {
        method: HttpMethod::Post,
        path: "/function/logs",
        id: "logs",
        summary: "A function's last log lines (`logs`), newest last.",
        request: Some("LogsRequest"),
        statuses: &[
            (200, "The lines (empty while its task is not running)."),
            BAD,
            AUTH,
            (404, "The function is not deployed."),
            TOO_LARGE,
            NO_CONTAINERD,
        ],
        rest: true,
    },
    Operation {
        method: HttpMethod::Get,
        path: "/healthz",
        id: "healthz",
        summary: "Whether the engine reaches containerd (no token needed).",
        request: None,
        statuses: &[(200, "containerd answers."), NO_CONTAINERD],
        rest: true,
    },
    Operation {
        method: HttpMethod::Get,
        path: "/metrics",
        id: "metrics",
        summary: "OpenMetrics text: per-function invocations, errors, latency, deploys, cold starts.",
        request: None,
        statuses: &[(200, "The metrics."), AUTH],
        rest: false,
    },
    Operation {
        method: HttpMethod::Get,
        path: "/openapi.json",
        id: "openapi",
        summary: "This document (no token needed).",
        request: None,
        statuses: &[(200, "The OpenAPI document.")],
        rest: false,
    },
];

fn schema_ref(name: &str) -> Ref {
    Ref::from_schema_name(name)
}

fn text() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn operation(op: &Operation) -> utoipa::openapi::path::Operation {
    let mut responses = ResponsesBuilder::new();
    for &(status, when) in op.statuses {
        let mut r = ResponseBuilder::new().description(when);
        if op.rest {
            r = r
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(schema_ref("Response")))
                        .build(),
                )
                .content("text/plain", text());
        } else if op.id == "openapi" {
            r = r.content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                    .build(),
            );
        } else if op.id == "metrics" && status == 200 {
            r = r.content("application/openmetrics-text", text());
        } else {
            r = r.content("text/plain", text());
        }
        if op.id == "invoke" && status != 401 {
            r = r.header(
                HEADER_CALL_ID,
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some(
                        "The call's id; the function's log lines of the call carry it.",
                    ))
                    .build(),
            );
        }
        if status == 429 {
            r = r.header(
                "retry-after",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .build(),
            );
        }
        responses = responses.response(status.to_string(), r.build());
    }
    let mut b = OperationBuilder::new()
        .operation_id(Some(op.id))
        .summary(Some(op.summary))
        .responses(responses.build());
    if let Some(request) = op.request {
        b = b.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(schema_ref(request)))
                        .build(),
                )
                .required(Some(Required::True))
                .build(),
        ));
    }
    if op.statuses.iter().any(|s| s.0 == 401) {
        b = b.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    }
    b.build()
}

/// The document, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc: Document = Schemas::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        let mut paths = PathsBuilder::new();
        for op in OPERATIONS {
            paths = paths.path(op.path, PathItem::new(op.method.clone(), operation(op)));
        }
        doc.paths = paths.build();
        if let Some(components) = doc.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
        doc.to_json().expect("the document serialises")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_statuses() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for op in OPERATIONS {
            let method = if op.method == HttpMethod::Get {
                "get"
            } else {
                "post"
            };
            let item = &doc["paths"][op.path][method];
            for (status, _) in op.statuses {
                assert!(
                    item["responses"][status.to_string()].is_object(),
                    "{} {status}",
                    op.path
                );
            }
        }
        for name in [
            "DeployRequest",
            "InvokeRequest",
            "Response",
            "FunctionDetail",
        ] {
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
    }
}
