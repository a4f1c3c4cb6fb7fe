//! The authentication samples' logic: md5(arg_uri "#" arg_body "#" arg_func) must equal
//! arg_secret. Shared by the string-ABI and WASI crates through `#[path]`.

use md5::{Digest, Md5};
use serde_json::Value;

fn reply(status: &str, body: &str) -> String {
    // Same field order as the C build: status first.
    format!(r#"{{"status":"{status}","body":{}}}"#, Value::from(body))
}

pub fn respond(input: &[u8]) -> String {
    let Ok(Value::Object(args)) = serde_json::from_slice::<Value>(input) else {
        return reply("400", "expected a JSON object with arg_uri, arg_body, arg_secret");
    };
    let mut fields = Vec::new();
    for key in ["arg_uri", "arg_body", "arg_secret"] {
        match args.get(key) {
            None => return reply("400", &format!("missing {key}")),
            Some(Value::String(s)) => fields.push(s.as_str()),
            Some(_) => return reply("400", &format!("{key} must be a string")),
        }
    }
    let func = match args.get("arg_func") {
        None => "argfunc",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return reply("400", "arg_func must be a string"),
    };
    let (uri, body, secret) = (fields[0], fields[1], fields[2]);
    let digest = Md5::digest(format!("{uri}#{body}#{func}"));
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    if hash == secret {
        reply(
            "200",
            "<html><body><h1>Welcome</h1><p>welcome, you are authenticated</p></body></html>",
        )
    } else {
        reply(
            "403",
            &format!(
                "<html><body><h1>403 Forbidden</h1><p>forbidden: wrong secret, expected hash {hash}</p></body></html>"
            ),
        )
    }
}
