//! `wasm_engine fn …`: a command line for people (and scripts, with `--json`) that talks to a
//! running engine's REST API: deploy, invoke, list, query, delete, logs.
//!
//! Readable output by default; `--json` prints the engine's JSON answer as it came. A failed
//! request prints the engine's message on stderr and exits non-zero: 1 for an error status
//! from the engine, 2 when no request could be made or no answer came (`--args` that is not
//! JSON, an engine that cannot be reached).

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use wasmengine_api::rest::Response;

#[derive(Debug, Args)]
pub struct FnArgs {
    /// The engine's REST API.
    #[arg(
        long,
        env = "WASMENGINE_URL",
        default_value = "http://127.0.0.1:10000",
        global = true
    )]
    pub engine: String,

    /// Bearer token for an engine started with --auth-token.
    #[arg(
        long,
        env = "WASMENGINE_AUTH_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Print the engine's JSON answer instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: FnCommand,
}

#[derive(Debug, Subcommand)]
pub enum FnCommand {
    /// Deploy IMAGE as function NAME.
    #[command(
        after_help = "Example:\n  wasm_engine fn deploy gcd localhost/gcd:latest --export gcd --timeout-ms 500"
    )]
    Deploy(DeployArgs),
    /// Call function NAME and print its result.
    #[command(
        after_help = "Example:\n  wasm_engine fn invoke gcd --args '[12, 18]'\n  \
                            wasm_engine fn invoke authentication --args '{\"arg_uri\":\"yes\",\"arg_body\":\"yes\",\"arg_secret\":\"x\"}'"
    )]
    Invoke {
        name: String,
        /// The args as JSON: an object (named) or an array (positional).
        #[arg(long, default_value = "null")]
        args: String,
    },
    /// List the deployed functions.
    #[command(after_help = "Example:\n  wasm_engine fn list --json")]
    List,
    /// Show what the engine knows of function NAME.
    #[command(after_help = "Example:\n  wasm_engine fn query gcd")]
    Query { name: String },
    /// Delete function NAME.
    #[command(after_help = "Example:\n  wasm_engine fn delete gcd")]
    Delete { name: String },
    /// Show function NAME's log: its WASI calls' stderr and its failed calls' errors.
    #[command(after_help = "Example:\n  wasm_engine fn logs probe --tail 20")]
    Logs {
        name: String,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    pub name: String,
    /// The image reference (a registry's, or one containerd already holds).
    pub image: String,
    /// The module is a WASI command (args as argv, result on stdout).
    #[arg(long)]
    pub wasi: bool,
    /// The export to call (string ABI or numeric).
    #[arg(long)]
    pub export: Option<String>,
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    #[arg(long)]
    pub memory_limit_mb: Option<u64>,
    #[arg(long)]
    pub fuel: Option<u64>,
    #[arg(long)]
    pub max_output_bytes: Option<u64>,
    /// Seconds without calls after which the function is scaled to zero.
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
    /// An environment variable for the module (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = key_value)]
    pub env: Vec<(String, String)>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// Runs one command; the process's exit status.
pub async fn run(args: FnArgs) -> i32 {
    match request(&args).await {
        Ok((status, answer)) if (200..300).contains(&status) => {
            print!("{}", render(&args, &answer));
            0
        }
        Ok((status, answer)) => {
            if args.json {
                println!("{}", serde_json::to_string(&answer).unwrap_or_default());
            } else {
                eprintln!("error ({status}): {}", answer.message);
            }
            1
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

/// The request a command makes, and the engine's answer.
async fn request(args: &FnArgs) -> anyhow::Result<(u16, Response)> {
    let base = args.engine.trim_end_matches('/');
    let client = reqwest::Client::new();
    let (method, path, body) = match &args.command {
        FnCommand::Deploy(d) => {
            let mut body = json!({
                "function_name": d.name,
                "function_image": d.image,
                "wasi_cap": d.wasi,
            });
            let optional = [
                ("export", d.export.clone().map(Value::from)),
                ("timeout_ms", d.timeout_ms.map(Value::from)),
                ("memory_limit_mb", d.memory_limit_mb.map(Value::from)),
                ("fuel", d.fuel.map(Value::from)),
                ("max_output_bytes", d.max_output_bytes.map(Value::from)),
                ("idle_timeout_secs", d.idle_timeout_secs.map(Value::from)),
            ];
            for (key, value) in optional {
                if let Some(v) = value {
                    body[key] = v;
                }
            }
            if !d.env.is_empty() {
                body["env"] = json!(d.env.iter().cloned().collect::<BTreeMap<_, _>>());
            }
            (reqwest::Method::POST, "/function/deploy", Some(body))
        }
        FnCommand::Invoke { name, args } => {
            let args: Value =
                serde_json::from_str(args).context("--args is not JSON (e.g. '[12, 18]')")?;
            (
                reqwest::Method::POST,
                "/function/invoke",
                Some(json!({"function_name": name, "args": args})),
            )
        }
        FnCommand::List => (reqwest::Method::GET, "/function/list", None),
        FnCommand::Query { name } => (
            reqwest::Method::POST,
            "/function/query",
            Some(json!({"function_name": name})),
        ),
        FnCommand::Delete { name } => (
            reqwest::Method::POST,
            "/function/delete",
            Some(json!({"function_name": name})),
        ),
        FnCommand::Logs { name, tail } => (
            reqwest::Method::POST,
            "/function/logs",
            Some(json!({"function_name": name, "tail": tail})),
        ),
    };
    let mut req = client
        .request(method, format!("{base}{path}"))
        .header("accept", "application/json");
    if let Some(token) = &args.token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the engine at {base}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.context("read the engine's answer")?;
    let answer: Response = serde_json::from_str(&text)
        .with_context(|| format!("the engine answered {status} with something else: {text}"))?;
    Ok((status, answer))
}

/// A successful answer as the command shows it.
fn render(args: &FnArgs, answer: &Response) -> String {
    if args.json {
        let part = match &args.command {
            FnCommand::List => answer.functions.as_ref(),
            FnCommand::Query { .. } => answer.function.as_ref(),
            FnCommand::Logs { .. } => answer.logs.as_ref(),
            _ => None,
        };
        return match part {
            Some(v) => format!("{v}\n"),
            None => format!("{}\n", serde_json::to_string(answer).unwrap_or_default()),
        };
    }
    match &args.command {
        FnCommand::Invoke { .. } => {
            format!("{}\n", answer.result.as_deref().unwrap_or(&answer.message))
        }
        FnCommand::List => {
            let rows: Vec<[String; 3]> = answer
                .functions
                .as_ref()
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|f| {
                    let s = |k: &str| match &f[k] {
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        v => v.to_string(),
                    };
                    [s("func_name"), s("func_image_name"), s("wasi_cap")]
                })
                .collect();
            table(&["NAME", "IMAGE", "WASI"], &rows)
        }
        FnCommand::Query { .. } => match &answer.function {
            Some(Value::Object(f)) => f
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}: {s}\n"),
                    v => format!("{k}: {v}\n"),
                })
                .collect(),
            _ => format!("{}\n", answer.message),
        },
        FnCommand::Logs { .. } if answer.message.is_empty() => String::new(),
        FnCommand::Deploy(_) | FnCommand::Delete { .. } | FnCommand::Logs { .. } => {
            format!("{}\n", answer.message)
        }
    }
}

/// Columns padded to their widest cell.
fn table(head: &[&str; 3], rows: &[[String; 3]]) -> String {
    let mut width = head.map(str::len);
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 3]| {
        format!(
            "{:w0$}  {:w1$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            w0 = width[0],
            w1 = width[1]
        )
    };
    let mut out = line(*head);
    for row in rows {
        out.push_str(&line([&row[0], &row[1], &row[2]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up() {
        let rows = vec![
            [
                "gcd".to_string(),
                "localhost/gcd:latest".into(),
                "false".into(),
            ],
            ["a-longer-name".to_string(), "x".into(), "true".into()],
        ];
        let t = table(&["NAME", "IMAGE", "WASI"], &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        // The second column starts after the widest name and two spaces, on every line.
        let at = "a-longer-name".len() + 2;
        assert!(lines[0][at..].starts_with("IMAGE"), "{t}");
        assert!(lines[1][at..].starts_with("localhost/gcd"), "{t}");
        assert!(lines[2][at..].starts_with("x "), "{t}");
        assert_eq!(key_value("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(key_value("nope").is_err());
    }
}
