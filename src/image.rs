//! An image as containerd holds it: resolve the manifest for this machine, check it holds
//! exactly one runnable Wasm module, and unpack its layers into snapshots.

use std::collections::HashMap;

use containerd_client::types::Descriptor;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmengine_api::image as media;

use crate::containerd::{Containerd, SNAPSHOTTER};
use crate::error::{ApiError, ApiResult};
use crate::layers::{Node, SizeCaps, Tree};

/// What the engine needs to run an image.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub manifest_digest: String,
    pub config_digest: String,
    /// `Entrypoint` + `Cmd` of the image config, or the module's path.
    pub args: Vec<String>,
    /// `Env` of the image config.
    pub env: Vec<String>,
    /// Layers to unpack (empty for a Wasm artifact: the shim reads its layer from content).
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<String>,
    /// The digest of a Wasm artifact's module layer.
    pub wasm_layer: Option<String>,
}

/// Where an image's module is in containerd's content store: a Wasm layer (`path` empty), or
/// the file `path` in a tar layer (gzipped or not). Kept in a grouped function's labels, so
/// that the engine can load it into its group again without walking the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModuleRef {
    pub layer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

impl ResolvedImage {
    /// The snapshot a function's rootfs is prepared on ("" for an empty rootfs).
    pub fn top_chain_id(&self) -> String {
        chain_ids(&self.diff_ids).pop().unwrap_or_default()
    }
}

/// Reads the image `target` points at and checks it holds one runnable module.
pub async fn resolve(
    ctd: &Containerd,
    target: &Descriptor,
    caps: SizeCaps,
) -> ApiResult<ResolvedImage> {
    let mut manifest_digest = target.digest.clone();
    let mut manifest: Value = json(&ctd.read_content(&manifest_digest).await?)?;
    if manifest["manifests"].is_array() {
        let (_, entry) = crate::registry::choose_platform(&manifest)?;
        manifest_digest = entry["digest"].as_str().unwrap_or_default().to_string();
        manifest = json(&ctd.read_content(&manifest_digest).await.map_err(|e| {
            if e.status == 404 {
                ApiError::unprocessable(format!(
                    "image content for {manifest_digest} is missing (imported for another platform?)"
                ))
            } else {
                e
            }
        })?)?;
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| ApiError::unprocessable("image manifest has no config"))?
        .to_string();
    let config: Value = json(&ctd.read_content(&config_digest).await?)?;
    let layers: Vec<Descriptor> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| Descriptor {
            media_type: l["mediaType"].as_str().unwrap_or_default().into(),
            digest: l["digest"].as_str().unwrap_or_default().into(),
            size: l["size"].as_i64().unwrap_or_default(),
            annotations: HashMap::new(),
        })
        .collect();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let mut args = strings(&config["config"]["Entrypoint"]);
    args.extend(strings(&config["config"]["Cmd"]));
    let env = strings(&config["config"]["Env"]);

    caps.check_layers(layers.iter().map(|l| l.size))?;
    let wasm_layers: Vec<&Descriptor> = layers
        .iter()
        .filter(|l| {
            l.media_type == media::WASM_LAYER || l.media_type == media::WASM_COMPONENT_LAYER
        })
        .collect();
    if !wasm_layers.is_empty() {
        if wasm_layers[0].size as u64 > caps.unpacked {
            return Err(ApiError::unprocessable(format!(
                "the Wasm layer takes {} bytes, over the {}-byte cap (--max-image-unpacked-bytes)",
                wasm_layers[0].size, caps.unpacked
            )));
        }
        if wasm_layers.len() > 1 {
            let wasm_layers = wasm_layers.len();
            return Err(ApiError::unprocessable(format!(
                "image holds {wasm_layers} Wasm layers: a function runs exactly one module"
            )));
        }
        if args.is_empty() {
            args.push("/function.wasm".into());
        }
        return Ok(ResolvedImage {
            manifest_digest,
            config_digest,
            args,
            env,
            layers: Vec::new(),
            diff_ids: Vec::new(),
            wasm_layer: Some(wasm_layers[0].digest.clone()),
        });
    }

    // Classic layout: the module is a file in the layers.
    let diff_ids = strings(&config["rootfs"]["diff_ids"]);
    if diff_ids.len() != layers.len() {
        return Err(ApiError::unprocessable(
            "image config's diff_ids do not match its layers",
        ));
    }
    // The rootfs as the snapshotter will lay it out: the module must be Wasm after every
    // layer, not only in the layer that first put it there.
    let mut tree = Tree::default();
    for layer in &layers {
        let blob = ctd.read_content(&layer.digest).await?;
        tree.apply(&layer.media_type, &blob, caps.unpacked)?;
    }
    if let Some(path) = args.first().and_then(|a| a.split('#').next()) {
        match tree.get(path) {
            Some(Node::Wasm) | None => {}
            Some(node) => {
                return Err(ApiError::unprocessable(format!(
                    "image entrypoint {path} is not a Wasm module in the image's final rootfs \
                     (it is {}): only Wasm runs as a function",
                    match node {
                        Node::File => "a file of another kind",
                        Node::Dir => "a directory",
                        Node::Link => "a link, or below one",
                        _ => "a special file",
                    }
                )))
            }
        }
    }
    let module = choose_module(args.first(), &tree.wasm_files())?;
    if args.is_empty() {
        args.push(module);
    }
    Ok(ResolvedImage {
        manifest_digest,
        config_digest,
        args,
        env,
        layers,
        diff_ids,
        wasm_layer: None,
    })
}

/// Where `image`'s module is: its Wasm layer, or the top-most tar layer that holds the file
/// its entrypoint names (what the final rootfs has there; `resolve` checked it is Wasm).
pub async fn locate_module(ctd: &Containerd, image: &ResolvedImage) -> ApiResult<ModuleRef> {
    if let Some(layer) = &image.wasm_layer {
        return Ok(ModuleRef {
            layer: layer.clone(),
            path: String::new(),
        });
    }
    let path = module_path(image);
    for layer in image.layers.iter().rev() {
        let blob = ctd.read_content(&layer.digest).await?;
        if crate::layers::read_file(&blob, &path, 0)?.is_some() {
            return Ok(ModuleRef {
                layer: layer.digest.clone(),
                path,
            });
        }
    }
    Err(ApiError::unprocessable(format!(
        "image module {path} is in none of its layers"
    )))
}

/// The module's bytes, at most `cap` of them.
pub async fn read_module(ctd: &Containerd, module: &ModuleRef, cap: u64) -> ApiResult<Vec<u8>> {
    let blob = ctd.read_content(&module.layer).await?;
    if module.path.is_empty() {
        return Ok(blob);
    }
    crate::layers::read_file(&blob, &module.path, cap)?.ok_or_else(|| {
        ApiError::unprocessable(format!(
            "module {} is missing from layer {}",
            module.path, module.layer
        ))
    })
}

/// A classic image's module path: the entrypoint's file, without a `#export`.
fn module_path(image: &ResolvedImage) -> String {
    let first = image.args.first().map(String::as_str).unwrap_or_default();
    crate::layers::normalise(first.split('#').next().unwrap_or_default())
}

/// The module a classic image runs: the entrypoint's file (`/m.wasm#export` names `/m.wasm`),
/// which must be among `files`; with no entrypoint, the one `.wasm` file at the root.
fn choose_module(entrypoint: Option<&String>, files: &[String]) -> ApiResult<String> {
    if let Some(first) = entrypoint {
        let path = first.split('#').next().unwrap_or_default();
        if !files.iter().any(|f| f == path) {
            return Err(ApiError::unprocessable(format!(
                "image entrypoint {path} is not a Wasm module in the image (found: {})",
                list(files)
            )));
        }
        return Ok(path.to_string());
    }
    let at_root: Vec<&str> = files
        .iter()
        .filter(|f| f.matches('/').count() == 1)
        .map(String::as_str)
        .collect();
    match at_root.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(ApiError::unprocessable(
            "image holds no Wasm module (no entrypoint and no .wasm file at its root)",
        )),
        several => Err(ApiError::unprocessable(format!(
            "image holds several Wasm modules at its root ({}) and no entrypoint to choose one",
            several.join(", ")
        ))),
    }
}

fn list(files: &[String]) -> String {
    if files.is_empty() {
        "none".into()
    } else {
        files.join(", ")
    }
}

fn json(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::unprocessable(format!("image holds malformed JSON: {e}")))
}

/// containerd's chain ids: chain[0] = diff[0], chain[i] = sha256(chain[i-1] + " " + diff[i]).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => {
                let h = Sha256::digest(format!("{parent} {d}").as_bytes());
                format!(
                    "sha256:{}",
                    h.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )
            }
        };
        out.push(next);
    }
    out
}

/// Makes sure every layer of `image` is a committed snapshot (as `ctr image import` or
/// containerd's own unpack would leave them), and that the image keeps them from the GC.
pub async fn unpack(ctd: &Containerd, image: &ResolvedImage, lease: &str) -> ApiResult<()> {
    let chain = chain_ids(&image.diff_ids);
    let mut parent = String::new();
    for (layer, chain_id) in image.layers.iter().zip(&chain) {
        if !ctd.snapshot_exists(chain_id).await? {
            let key = format!("extract-{}-{chain_id}", crate::containerd::unique());
            let mounts = ctd.prepare_snapshot(&key, &parent, Some(lease)).await?;
            let applied = ctd.apply_layer(layer.clone(), mounts, Some(lease)).await;
            let committed = match applied {
                Ok(_) => {
                    ctd.commit_snapshot(chain_id, &key, HashMap::new(), Some(lease))
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                let _ = ctd.remove_snapshot(&key).await;
                // Another deploy may have committed the same layer meanwhile.
                if !ctd.snapshot_exists(chain_id).await? {
                    return Err(e);
                }
            }
        }
        parent = chain_id.clone();
    }
    if !parent.is_empty() {
        let mut labels = HashMap::new();
        labels.insert(
            format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
            parent,
        );
        ctd.label_content(&image.config_digest, labels).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_containerd() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        let expect = Sha256::digest(format!("{a} {b}").as_bytes());
        assert!(c[1].ends_with(&format!("{:x}", expect)));
    }

    #[test]
    fn chooses_the_module_of_a_classic_image() {
        let files = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let entry = "/lib/m.wasm#run".to_string();
        assert_eq!(
            choose_module(Some(&entry), &files(&["/a.wasm", "/lib/m.wasm"])).unwrap(),
            "/lib/m.wasm"
        );
        let err = choose_module(Some(&entry), &files(&["/a.wasm"])).unwrap_err();
        assert_eq!(err.status, 422);
        assert!(err.message.contains("/lib/m.wasm"), "{}", err.message);
        assert_eq!(
            choose_module(None, &files(&["/a.wasm", "/lib/m.wasm"])).unwrap(),
            "/a.wasm"
        );
        let err = choose_module(None, &files(&["/lib/m.wasm"])).unwrap_err();
        assert_eq!(err.status, 422);
        assert!(err.message.contains("no Wasm module"), "{}", err.message);
        let err = choose_module(None, &files(&["/a.wasm", "/b.wasm"])).unwrap_err();
        assert_eq!(err.status, 422);
        assert!(err.message.contains("/a.wasm, /b.wasm"), "{}", err.message);
    }
}
