//! `GET /openapi.json` describes what the engine really answers: live answers of every
//! endpoint, in both forms (JSON with `Accept: application/json`, the original text form
//! without) and for each status they can give, are validated against the document's schema
//! for that path, method, status and content type. A status or content type the document does
//! not list fails the test.

use std::io::{Read, Write};

use serde_json::{json, Value};
use wasmengine_api::image::ImageSpec;
use wasmengine_e2e::{app, fixture, Containerd, Engine};

const TOKEN: &str = "open-sesame";

/// One answer: status, content type (without parameters), headers, body.
struct Answer {
    status: u16,
    content_type: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn request(e: &Engine, method: &str, path: &str, json: bool, token: bool, body: &str) -> Answer {
    let mut conn = std::net::TcpStream::connect(e.addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: e\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if json {
        head += "accept: application/json\r\n";
    }
    if token {
        head += &format!("authorization: Bearer {TOKEN}\r\n");
    }
    head += "\r\n";
    conn.write_all(head.as_bytes()).unwrap();
    let _ = conn.write_all(body.as_bytes());
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "a chunked answer: {head}"
    );
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.split(';').next().unwrap().trim().to_string())
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        headers,
        body: body.to_string(),
    }
}

/// Checks `answer` against the document; returns the number of answers checked (1).
fn check(doc: &Value, method: &str, path: &str, answer: &Answer) -> usize {
    let what = format!(
        "{method} {path} → {} {}",
        answer.status, answer.content_type
    );
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{what}: no such operation in the document");
    let response = &op["responses"][answer.status.to_string()];
    assert!(response.is_object(), "{what}: status not documented");
    let schema = &response["content"][&answer.content_type]["schema"];
    assert!(schema.is_object(), "{what}: content type not documented");
    let instance = if answer.content_type == "application/json" {
        serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", answer.body))
    } else {
        Value::String(answer.body.clone())
    };
    // The schema with the document's components beside it, so its `$ref`s resolve.
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::options()
        .build(&root)
        .unwrap_or_else(|e| panic!("{what}: schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {errors:?}\nbody: {}",
        answer.body
    );
    for (name, _) in response["headers"].as_object().into_iter().flatten() {
        if name != "retry-after" {
            assert!(
                answer.headers.iter().any(|(k, _)| k == name),
                "{what}: header {name} missing"
            );
        }
    }
    1
}

#[test]
fn every_endpoint_answers_as_the_openapi_document_says() {
    let c = Containerd::start().expect("containerd");
    let e =
        Engine::start(&c, &["--auth-token", TOKEN, "--max-body-bytes", "4096"]).expect("engine");
    c.import_wasm(
        &app("gcd"),
        &ImageSpec::classic("gcd.wasm"),
        "localhost/gcd:oa",
    )
    .unwrap();
    c.import_wasm(
        &fixture("probe"),
        &ImageSpec::classic("probe.wasm"),
        "localhost/probe:oa",
    )
    .unwrap();

    // The document itself: public, JSON, OpenAPI 3.
    let doc_answer = request(&e, "GET", "/openapi.json", false, false, "");
    assert_eq!(doc_answer.status, 200);
    let doc: Value = serde_json::from_str(&doc_answer.body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let mut checked = check(&doc, "GET", "/openapi.json", &doc_answer);

    // Each request in both forms: (method, path, body, expected status).
    let deploy = |name: &str, image: &str, wasi: bool, extra: Value| {
        let mut b = json!({"function_name": name, "function_image": image, "wasi_cap": wasi});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b.to_string()
    };
    let name = |n: &str| json!({"function_name": n}).to_string();
    let invoke = |n: &str, args: Value| json!({"function_name": n, "args": args}).to_string();
    let too_large = format!("{{\"function_name\":\"{}\"}}", "a".repeat(5000));
    for form in [true, false] {
        let s = if form { "j" } else { "t" };
        let gcd = format!("gcd-{s}");
        let probe = format!("probe-{s}");
        let cases: Vec<(&str, &str, String, u16)> = vec![
            ("GET", "/healthz", String::new(), 200),
            ("GET", "/function/list", String::new(), 200),
            (
                "POST",
                "/function/deploy",
                deploy(&gcd, "localhost/gcd:oa", false, json!({"export": "gcd"})),
                200,
            ),
            (
                "POST",
                "/function/deploy",
                deploy(
                    &probe,
                    "localhost/probe:oa",
                    true,
                    json!({"timeout_ms": 300}),
                ),
                200,
            ),
            (
                "POST",
                "/function/deploy",
                deploy(&gcd, "localhost/gcd:oa", false, json!({})),
                409,
            ),
            (
                "POST",
                "/function/deploy",
                deploy("Bad Name", "localhost/gcd:oa", false, json!({})),
                400,
            ),
            (
                "POST",
                "/function/deploy",
                deploy(&format!("wrong-{s}"), "localhost/gcd:oa", true, json!({})),
                422,
            ),
            (
                "POST",
                "/function/deploy",
                deploy(&format!("far-{s}"), "127.0.0.1:9/nope:1", false, json!({})),
                502,
            ),
            ("POST", "/function/deploy", too_large.clone(), 413),
            (
                "POST",
                "/function/invoke",
                invoke(&gcd, json!([12, 18])),
                200,
            ),
            (
                "POST",
                "/function/invoke",
                invoke(&gcd, json!(["x", "y"])),
                400,
            ),
            ("POST", "/function/invoke", invoke("nobody", json!([])), 404),
            (
                "POST",
                "/function/invoke",
                invoke(&probe, json!(["probe", "trap"])),
                500,
            ),
            (
                "POST",
                "/function/invoke",
                invoke(&probe, json!(["probe", "spin"])),
                504,
            ),
            ("POST", "/function/query", name(&gcd), 200),
            ("POST", "/function/query", name("nobody"), 404),
            ("POST", "/function/query", name("Bad Name"), 400),
            (
                "POST",
                "/function/logs",
                json!({"function_name": probe, "tail": 5}).to_string(),
                200,
            ),
            ("POST", "/function/logs", name("nobody"), 404),
            ("GET", "/function/list", String::new(), 200),
            ("POST", "/function/delete", name(&gcd), 200),
            ("POST", "/function/delete", name(&probe), 200),
            ("POST", "/function/delete", name(&gcd), 404),
        ];
        for (method, path, body, want) in &cases {
            let a = request(&e, method, path, form, true, body);
            assert_eq!(a.status, *want, "{method} {path} {body}: {}", a.body);
            checked += check(&doc, method, path, &a);
        }
        // Without the token: 401 from every endpoint that needs one.
        for (method, path) in [
            ("POST", "/function/deploy"),
            ("POST", "/function/invoke"),
            ("GET", "/function/list"),
            ("POST", "/function/query"),
            ("POST", "/function/delete"),
            ("POST", "/function/logs"),
        ] {
            let a = request(&e, method, path, form, false, &name(&gcd));
            assert_eq!(a.status, 401, "{method} {path}");
            checked += check(&doc, method, path, &a);
        }
    }
    let metrics = request(&e, "GET", "/metrics", false, true, "");
    assert_eq!(metrics.status, 200);
    checked += check(&doc, "GET", "/metrics", &metrics);
    let metrics = request(&e, "GET", "/metrics", false, false, "");
    assert_eq!(metrics.status, 401);
    checked += check(&doc, "GET", "/metrics", &metrics);
    assert!(checked > 60, "{checked}");

    // Every documented operation was exercised above.
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, 9);
}
