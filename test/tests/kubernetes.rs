//! `deploy/kubernetes/`: every manifest parses into the real Kubernetes types with nothing
//! unknown, the function Deployment configures a TCP function server the shim accepts, and
//! the node installer is idempotent.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmengine_api::function::FunctionConfig;
use wasmengine_e2e::{release_dir, workspace, SHIM_BINARY};

fn manifests_dir() -> PathBuf {
    workspace().join("deploy/kubernetes")
}

/// Every document of every manifest, as JSON.
fn documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(manifests_dir()).unwrap().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !value.is_null() {
                out.push((path.display().to_string(), value));
            }
        }
    }
    out
}

/// Parses `doc` as `T` and says what of it `T` did not keep (unknown or misspelt fields,
/// values of the wrong type).
fn parse<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).unwrap();
    let mut lost = Vec::new();
    not_kept(doc, &back, "", &mut lost);
    if lost.is_empty() {
        Ok(typed)
    } else {
        Err(format!("not kept: {lost:?}"))
    }
}

fn not_kept(orig: &Value, back: &Value, at: &str, lost: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                match b.get(k) {
                    Some(bv) => not_kept(v, bv, &format!("{at}.{k}"), lost),
                    None => lost.push(format!("{at}.{k}")),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => {
            for (i, (v, bv)) in o.iter().zip(b).enumerate() {
                not_kept(v, bv, &format!("{at}[{i}]"), lost);
            }
        }
        _ if orig == back => {}
        _ => lost.push(format!("{at} = {orig}")),
    }
}

fn check(doc: &Value) -> Result<(), String> {
    match doc["kind"].as_str().unwrap_or("") {
        "RuntimeClass" => parse::<RuntimeClass>(doc).map(drop),
        "DaemonSet" => parse::<DaemonSet>(doc).map(drop),
        "Deployment" => parse::<Deployment>(doc).map(drop),
        "Service" => parse::<Service>(doc).map(drop),
        "ServiceAccount" => parse::<ServiceAccount>(doc).map(drop),
        "ClusterRole" => parse::<ClusterRole>(doc).map(drop),
        "ClusterRoleBinding" => parse::<ClusterRoleBinding>(doc).map(drop),
        other => Err(format!("unexpected kind {other:?}")),
    }
}

#[test]
fn every_manifest_parses_into_the_kubernetes_types_with_nothing_unknown() {
    let docs = documents();
    let kinds: Vec<_> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    for want in ["RuntimeClass", "DaemonSet", "Deployment", "Service"] {
        assert!(kinds.contains(&want), "no {want} in {kinds:?}");
    }
    for (file, doc) in &docs {
        check(doc)
            .unwrap_or_else(|e| panic!("{file}: {} {}: {e}", doc["kind"], doc["metadata"]["name"]));
    }
    // The check itself refuses what it should.
    let mut bad = docs
        .iter()
        .find(|(_, d)| d["kind"] == "Deployment")
        .unwrap()
        .1
        .clone();
    bad["spec"]["template"]["spec"]["runtimeClass"] = "wasmengine".into();
    assert!(check(&bad).unwrap_err().contains("runtimeClass"));
}

#[test]
fn the_function_deployment_configures_a_tcp_server_on_the_runtime_class() {
    let docs = documents();
    let class: RuntimeClass = parse(
        &docs
            .iter()
            .find(|(_, d)| d["kind"] == "RuntimeClass")
            .unwrap()
            .1,
    )
    .unwrap();
    let deployment: Deployment = parse(
        &docs
            .iter()
            .find(|(_, d)| d["kind"] == "Deployment")
            .unwrap()
            .1,
    )
    .unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.runtime_class_name.as_deref(),
        class.metadata.name.as_deref()
    );
    assert_eq!(class.handler, "wasmengine");
    let container = &pod.containers[0];
    let env: Vec<String> = container
        .env
        .iter()
        .flatten()
        .map(|e| format!("{}={}", e.name, e.value.clone().unwrap_or_default()))
        .collect();
    let config = FunctionConfig::from_env(&env).unwrap().expect("serve mode");
    let port = container
        .ports
        .iter()
        .flatten()
        .next()
        .unwrap()
        .container_port;
    assert_eq!(config.listen, Some(format!("0.0.0.0:{port}")));
    assert_eq!(config.socket, None);
}

/// Runs install.sh against a fake host root; gives its output.
fn install(root: &Path, restarts: &Path) -> String {
    let out = Command::new("sh")
        .arg(manifests_dir().join("installer/install.sh"))
        .env("HOST_ROOT", root)
        .env("SHIM_SRC", release_dir().join(SHIM_BINARY))
        .env(
            "RESTART_CMD",
            format!("echo restart >> {}", restarts.display()),
        )
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn the_node_installer_registers_the_runtime_once_and_restarts_containerd_once() {
    for (version, section) in [
        (
            "2",
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmengine]",
        ),
        (
            "3",
            "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmengine]",
        ),
    ] {
        let root = tempfile::tempdir().unwrap();
        let restarts = root.path().join("restarts");
        let config = root.path().join("etc/containerd/config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(
            &config,
            format!("version = {version}\n[grpc]\n  address = \"/x\"\n"),
        )
        .unwrap();
        install(root.path(), &restarts);
        let shim = root.path().join("usr/local/bin").join(SHIM_BINARY);
        assert_eq!(
            std::fs::read(&shim).unwrap(),
            std::fs::read(release_dir().join(SHIM_BINARY)).unwrap()
        );
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(section), "{text}");
        assert!(text.contains("runtime_type = \"io.containerd.wasmengine.v1\""));
        assert!(
            text.starts_with(&format!("version = {version}\n[grpc]")),
            "{text}"
        );
        // A second run changes nothing and restarts nothing.
        let out = install(root.path(), &restarts);
        assert!(out.contains("already"), "{out}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
        assert_eq!(std::fs::read_to_string(&restarts).unwrap(), "restart\n");
    }
}
