//! The REST API: the original WasmEngine endpoints, answered in the original text form
//! (`status code: N, message: …`) or as JSON with `Accept: application/json`, always with the
//! real HTTP status.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;
use wasmengine_api::invoke::HEADER_CALL_ID;
use wasmengine_api::rest::{self, DeployRequest, FunctionNameRequest, InvokeRequest, LogsRequest};

use crate::error::{ApiError, ApiResult};
use crate::functions::Functions;

pub struct AppState {
    pub functions: Arc<Functions>,
    pub auth_token: Option<String>,
    pub max_body_bytes: usize,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/function/deploy", post(deploy))
        .route("/function/delete", post(delete))
        .route("/function/list", get(list))
        .route("/function/query", post(query))
        .route("/function/invoke", post(invoke))
        .route("/function/logs", post(logs))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// What a handler answers: a status, a message, and the form's extra fields.
struct Reply {
    json: bool,
    body: rest::Response,
    /// An invoke's call id, returned in [`HEADER_CALL_ID`].
    call_id: Option<String>,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.body.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = if self.json {
            (status, axum::Json(self.body)).into_response()
        } else {
            // Built directly: every text-form invoke answer comes through here.
            let mut r = Response::new(Body::from(self.body.to_text()));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        if let Some(id) = self
            .call_id
            .and_then(|id| header::HeaderValue::from_maybe_shared(axum::body::Bytes::from(id)).ok())
        {
            response.headers_mut().insert(HEADER_CALL_ID, id);
        }
        // A function with every slot and queue place taken: come back in a second.
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

fn reply(headers: &HeaderMap, status: u16, message: impl Into<String>) -> Reply {
    Reply {
        json: wants_json(headers),
        body: rest::Response {
            status,
            message: message.into(),
            result: None,
            functions: None,
            function: None,
            logs: None,
        },
        call_id: None,
    }
}

fn error_reply(headers: &HeaderMap, e: ApiError) -> Reply {
    reply(headers, e.status, e.message)
}

/// Reads and parses a JSON body, within the size limit.
async fn body<T: DeserializeOwned>(state: &AppState, body: Body) -> ApiResult<T> {
    let bytes = to_bytes(body, state.max_body_bytes).await.map_err(|_| {
        ApiError::new(
            413,
            format!("request body over {} bytes", state.max_body_bytes),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed request body: {e}")))
}

async fn authorize(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.auth_token {
        // Health and the API's description are public.
        if !matches!(req.uri().path(), "/healthz" | "/openapi.json") {
            let ok = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
            if !ok {
                let mut r = error_reply(
                    req.headers(),
                    ApiError::new(401, "missing or wrong bearer token"),
                )
                .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
                return r;
            }
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn deploy(State(state): State<Arc<AppState>>, headers: HeaderMap, b: Body) -> Reply {
    let req: DeployRequest = match body(&state, b).await {
        Ok(r) => r,
        Err(e) => return error_reply(&headers, e),
    };
    match state.functions.deploy(&req).await {
        Ok(()) => {
            // The deploy may have filled its group: start the next one ahead of the next deploy.
            tokio::spawn(state.functions.clone().keep_spare_group());
            reply(
                &headers,
                200,
                format!("deploy function {} successfully!", req.function_name),
            )
        }
        Err(e) => error_reply(&headers, e),
    }
}

async fn delete(State(state): State<Arc<AppState>>, headers: HeaderMap, b: Body) -> Reply {
    let req: FunctionNameRequest = match body(&state, b).await {
        Ok(r) => r,
        Err(e) => return error_reply(&headers, e),
    };
    match state.functions.delete(&req.function_name).await {
        Ok(()) => reply(
            &headers,
            200,
            format!("delete function {} successfully!", req.function_name),
        ),
        Err(e) => error_reply(&headers, e),
    }
}

async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    match state.functions.list().await {
        Ok(fns) => {
            let v = Value::Array(fns.iter().map(|f| f.summary()).collect());
            let mut r = reply(&headers, 200, v.to_string());
            r.body.functions = Some(v);
            r
        }
        Err(e) => error_reply(&headers, e),
    }
}

async fn query(State(state): State<Arc<AppState>>, headers: HeaderMap, b: Body) -> Reply {
    let req: FunctionNameRequest = match body(&state, b).await {
        Ok(r) => r,
        Err(e) => return error_reply(&headers, e),
    };
    match state.functions.query(&req.function_name).await {
        Ok(f) => {
            let v = f.detail();
            let mut r = reply(&headers, 200, v.to_string());
            r.body.function = Some(v);
            r
        }
        Err(e) => error_reply(&headers, e),
    }
}

async fn invoke(State(state): State<Arc<AppState>>, req: Request) -> Reply {
    // The request's own headers, not a copy (the hot path).
    let (parts, b) = req.into_parts();
    // Every answer past the token check names its call, refused ones included.
    let call_id = next_call_id();
    let mut r = invoke_call(&state, &parts.headers, b, &call_id).await;
    r.call_id = Some(call_id);
    r
}

async fn invoke_call(state: &AppState, headers: &HeaderMap, b: Body, call_id: &str) -> Reply {
    let req: InvokeRequest = match body(state, b).await {
        Ok(r) => r,
        Err(e) => return error_reply(headers, e),
    };
    // Valid JSON already (the request parsed); only its kind is checked, not its contents.
    let args = req.args_json();
    if !(args.starts_with(['{', '[']) || args == "null") {
        return error_reply(
            headers,
            ApiError::bad_request("args must be an object (key/value) or an array (positional)"),
        );
    }
    match state
        .functions
        .invoke(&req.function_name, args.as_bytes(), call_id)
        .await
    {
        Ok(result) => {
            // The JSON form carries the result twice (message and result); the text form once.
            let mut r = reply(headers, 200, String::new());
            if r.json {
                r.body.message.clone_from(&result);
                r.body.result = Some(result);
            } else {
                r.body.message = result;
            }
            r
        }
        Err(e) => error_reply(headers, e),
    }
}

/// A call id unique to this engine process and unlikely to repeat across its restarts: the
/// process's start time and a counter.
fn next_call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    });
    let mut id = String::with_capacity(24);
    push_hex(&mut id, start);
    id.push('-');
    push_hex(&mut id, NEXT.fetch_add(1, Ordering::Relaxed));
    id
}

/// Appends `n` in lower-case hexadecimal, as `{:x}` would.
fn push_hex(out: &mut String, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        let d = (n >> (i * 4)) & 0xf;
        out.push(char::from_digit(d as u32, 16).expect("a hex digit"));
    }
}

async fn logs(State(state): State<Arc<AppState>>, headers: HeaderMap, b: Body) -> Reply {
    let req: LogsRequest = match body(&state, b).await {
        Ok(r) => r,
        Err(e) => return error_reply(&headers, e),
    };
    match state.functions.logs(&req.function_name, req.tail).await {
        Ok(lines) => {
            let text: Vec<String> = lines
                .iter()
                .map(|l| format!("{} {} {}", rfc3339_ms(l.time_ms), l.call_id, l.text))
                .collect();
            let mut r = reply(&headers, 200, text.join("\n"));
            r.body.logs = Some(Value::Array(
                lines
                    .iter()
                    .map(|l| {
                        serde_json::json!(rest::LogEntry {
                            time: rfc3339_ms(l.time_ms),
                            call_id: l.call_id.clone(),
                            text: l.text.clone(),
                        })
                    })
                    .collect(),
            ));
            r
        }
        Err(e) => error_reply(&headers, e),
    }
}

fn rfc3339_ms(ms: u64) -> String {
    crate::containerd::humantime_rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
    )
}

async fn healthz(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    match state.functions.ctd.version().await {
        Ok(v) => reply(&headers, 200, format!("ok (containerd {v})")),
        Err(e) => error_reply(&headers, e),
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.functions.metrics.render(),
    )
        .into_response()
}

async fn not_found(headers: HeaderMap, req: Request) -> Reply {
    error_reply(
        &headers,
        ApiError::not_found(format!("no endpoint {} {}", req.method(), req.uri().path())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_hex_as_format_writes_them() {
        for n in [0u64, 1, 0xf, 0x10, 0xdead_beef, u64::MAX] {
            let mut s = String::new();
            push_hex(&mut s, n);
            assert_eq!(s, format!("{n:x}"));
        }
        let (a, b) = (next_call_id(), next_call_id());
        assert_ne!(a, b);
        assert!(a.split_once('-').is_some_and(|(s, n)| {
            u64::from_str_radix(s, 16).is_ok() && u64::from_str_radix(n, 16).is_ok()
        }));
    }
}
