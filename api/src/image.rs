//! OCI images for one `.wasm` file, written by us so nothing needs Docker.
//!
//! Two layouts, both runnable by our shim:
//! - [`Layout::Classic`]: what `FROM scratch` + `ADD fn.wasm /` builds: one tar layer with the
//!   module at the root of the filesystem, an image config for a Linux platform (as
//!   `docker build` records it), optionally an entrypoint. Media types OCI or Docker schema 2.
//! - [`Layout::Artifact`]: the Wasm OCI artifact: config `application/vnd.wasm.config.v0+json`,
//!   one `application/wasm` layer holding the module bytes themselves.
//!
//! [`Image::write_layout`] writes an OCI image layout directory and [`Image::write_archive`]
//! the same as a tar (what `ctr image import` and `skopeo copy oci-archive:` read). Layers are
//! reproducible: same module, same digests.

use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";
pub const WASM_COMPONENT_LAYER: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

/// Annotation containerd's importer reads for the full image name.
const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Classic,
    Artifact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypes {
    Oci,
    /// Docker schema 2 (what `docker build` pushes, or `skopeo --format v2s2`).
    Docker,
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub layout: Layout,
    pub media_types: MediaTypes,
    /// Name of the module file in a classic image's filesystem (`hello.wasm`).
    pub file_name: String,
    /// The image's entrypoint (classic only). [`ImageSpec::classic`] sets the module's path, so
    /// `ctr run IMAGE ID` needs no arguments; `None` is like an image with no `ENTRYPOINT`.
    pub entrypoint: Option<Vec<String>>,
    /// `K=V` entries for the image config (classic only).
    pub env: Vec<String>,
}

impl ImageSpec {
    pub fn classic(file_name: &str) -> ImageSpec {
        ImageSpec {
            layout: Layout::Classic,
            media_types: MediaTypes::Oci,
            file_name: file_name.into(),
            entrypoint: Some(vec![format!("/{file_name}")]),
            env: Vec::new(),
        }
    }

    pub fn artifact(file_name: &str) -> ImageSpec {
        ImageSpec {
            layout: Layout::Artifact,
            ..ImageSpec::classic(file_name)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a WebAssembly module or component (no \\0asm header)")]
    NotWasm,
    #[error("invalid file name {0:?}: one path component ending in .wasm")]
    FileName(String),
    #[error("a Wasm OCI artifact has OCI media types only")]
    ArtifactMediaTypes,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A content-addressed blob.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl Blob {
    fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.into(),
            digest: sha256_digest(&data),
            data,
        }
    }

    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// The platform recorded for the manifest in an index.
    pub platform: (String, String),
}

/// Builds the image for `wasm` as `spec` describes.
pub fn build(wasm: &[u8], spec: &ImageSpec) -> Result<Image, ImageError> {
    if !wasm.starts_with(b"\0asm") {
        return Err(ImageError::NotWasm);
    }
    let name = &spec.file_name;
    if name.is_empty() || name.contains('/') || !name.ends_with(".wasm") {
        return Err(ImageError::FileName(name.clone()));
    }
    match spec.layout {
        Layout::Classic => classic(wasm, spec),
        Layout::Artifact if spec.media_types == MediaTypes::Docker => {
            Err(ImageError::ArtifactMediaTypes)
        }
        Layout::Artifact => Ok(artifact(wasm)),
    }
}

fn classic(wasm: &[u8], spec: &ImageSpec) -> Result<Image, ImageError> {
    let tar = layer_tar(&spec.file_name, wasm)?;
    let diff_id = sha256_digest(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar)?;
    let (manifest_type, config_type, layer_type) = match spec.media_types {
        MediaTypes::Oci => (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_TAR_GZIP),
        MediaTypes::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
    };
    let layer = Blob::new(layer_type, gz.finish()?);
    let (os, arch) = ("linux".to_string(), host_arch().to_string());
    let mut process = json!({});
    if let Some(ep) = &spec.entrypoint {
        process["Entrypoint"] = json!(ep);
    }
    if !spec.env.is_empty() {
        process["Env"] = json!(spec.env);
    }
    let config = Blob::new(
        config_type,
        serde_json::to_vec(&json!({
            "architecture": arch,
            "os": os,
            "config": process,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": format!("ADD {} /", spec.file_name)}],
        }))
        .unwrap(),
    );
    let manifest = Blob::new(
        manifest_type,
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }))
        .unwrap(),
    );
    Ok(Image {
        manifest,
        config,
        layers: vec![layer],
        platform: (os, arch),
    })
}

/// A component (binary layer 1) goes in a component layer for WASI preview 2; a core module
/// in an `application/wasm` layer for preview 1.
fn artifact(wasm: &[u8]) -> Image {
    let component = wasm.get(6..8) == Some(&[1, 0]);
    let (layer_type, os) = if component {
        (WASM_COMPONENT_LAYER, "wasip2")
    } else {
        (WASM_LAYER, "wasip1")
    };
    let layer = Blob::new(layer_type, wasm.to_vec());
    let config = Blob::new(
        WASM_CONFIG,
        serde_json::to_vec(&json!({
            "architecture": "wasm",
            "os": os,
            "layerDigests": [layer.digest],
        }))
        .unwrap(),
    );
    let manifest = Blob::new(
        OCI_MANIFEST,
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": WASM_CONFIG,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }))
        .unwrap(),
    );
    Image {
        manifest,
        config,
        layers: vec![layer],
        platform: (os.into(), "wasm".into()),
    }
}

/// A tar holding `name` (mode 0755) at the root, with fixed metadata so digests repeat.
fn layer_tar(name: &str, wasm: &[u8]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(wasm.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, wasm)?;
    b.into_inner()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The tag part of a reference (`host:5000/name:tag` → `tag`), `latest` when absent.
fn tag_of(reference: &str) -> &str {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

impl Image {
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        [&self.manifest, &self.config]
            .into_iter()
            .chain(self.layers.iter())
    }

    /// The index entry naming this image `reference`.
    fn index(&self, reference: &str) -> Value {
        let mut desc = self.manifest.descriptor();
        desc["annotations"] = json!({
            CONTAINERD_IMAGE_NAME: reference,
            OCI_REF_NAME: tag_of(reference),
        });
        if self.manifest.media_type != DOCKER_MANIFEST {
            desc["platform"] = json!({"os": self.platform.0, "architecture": self.platform.1});
        }
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]})
    }

    /// Writes an OCI image layout directory (creating it; an existing index is replaced).
    pub fn write_layout(&self, dir: &Path, reference: &str) -> io::Result<()> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        for blob in self.blobs() {
            let hex = blob.digest.trim_start_matches("sha256:");
            std::fs::write(blobs.join(hex), &blob.data)?;
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&self.index(reference))?,
        )?;
        Ok(())
    }

    /// Reads back an image layout written by [`Image::write_layout`] (its first manifest):
    /// the image and the reference it was written under.
    pub fn read_layout(dir: &Path) -> io::Result<(Image, String)> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let read_json = |path: &Path| -> io::Result<Value> {
            serde_json::from_slice(&std::fs::read(path)?)
                .map_err(|e| bad(format!("{}: {e}", path.display())))
        };
        let blob = |desc: &Value| -> io::Result<Blob> {
            let digest = desc["digest"].as_str().unwrap_or_default();
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| bad(format!("unsupported digest {digest:?}")))?;
            let data = std::fs::read(dir.join("blobs/sha256").join(hex))?;
            let media_type = desc["mediaType"].as_str().unwrap_or_default();
            let b = Blob::new(media_type, data);
            if b.digest != digest {
                return Err(bad(format!("blob {digest} does not match its content")));
            }
            Ok(b)
        };
        let index = read_json(&dir.join("index.json"))?;
        let entry = &index["manifests"][0];
        let reference = entry["annotations"][CONTAINERD_IMAGE_NAME]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let manifest = blob(entry)?;
        let m: Value =
            serde_json::from_slice(&manifest.data).map_err(|e| bad(format!("manifest: {e}")))?;
        let config = blob(&m["config"])?;
        let layers = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(blob)
            .collect::<io::Result<Vec<_>>>()?;
        let platform = (
            entry["platform"]["os"]
                .as_str()
                .unwrap_or("linux")
                .to_string(),
            entry["platform"]["architecture"]
                .as_str()
                .unwrap_or(host_arch())
                .to_string(),
        );
        Ok((
            Image {
                manifest,
                config,
                layers,
                platform,
            },
            reference,
        ))
    }

    /// Writes the same layout as a tar archive.
    pub fn write_archive(&self, out: impl Write, reference: &str) -> io::Result<()> {
        let mut tar = tar::Builder::new(out);
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, data)
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add("index.json", &serde_json::to_vec(&self.index(reference))?)?;
        for blob in self.blobs() {
            let hex = blob.digest.trim_start_matches("sha256:");
            add(&format!("blobs/sha256/{hex}"), &blob.data)?;
        }
        tar.into_inner()?.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn layouts_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let image = build(WASM, &ImageSpec::artifact("fn.wasm")).unwrap();
        image
            .write_layout(dir.path(), "localhost:5000/fn:v1")
            .unwrap();
        let (back, reference) = Image::read_layout(dir.path()).unwrap();
        assert_eq!(reference, "localhost:5000/fn:v1");
        assert_eq!(back.manifest.digest, image.manifest.digest);
        assert_eq!(back.layers[0].data, WASM);
        assert_eq!(back.config.media_type, WASM_CONFIG);
    }

    #[test]
    fn classic_image_has_the_module_at_the_root() {
        let image = build(WASM, &ImageSpec::classic("fn.wasm")).unwrap();
        assert_eq!(image.layers[0].media_type, OCI_LAYER_TAR_GZIP);
        let tar = flate2::read::GzDecoder::new(&image.layers[0].data[..]);
        let mut archive = tar::Archive::new(tar);
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries, ["fn.wasm"]);
        let config: Value = serde_json::from_slice(&image.config.data).unwrap();
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["Entrypoint"], json!(["/fn.wasm"]));
        let manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
        assert_eq!(manifest["config"]["digest"], image.config.digest);
    }

    #[test]
    fn images_are_reproducible() {
        let a = build(WASM, &ImageSpec::classic("fn.wasm")).unwrap();
        let b = build(WASM, &ImageSpec::classic("fn.wasm")).unwrap();
        assert_eq!(a.manifest.digest, b.manifest.digest);
    }

    #[test]
    fn artifact_layer_is_the_module() {
        let image = build(WASM, &ImageSpec::artifact("fn.wasm")).unwrap();
        assert_eq!(image.layers[0].media_type, WASM_LAYER);
        assert_eq!(image.layers[0].data, WASM);
        assert_eq!(image.config.media_type, WASM_CONFIG);
        let component = b"\0asm\x0d\0\x01\0";
        let image = build(component, &ImageSpec::artifact("fn.wasm")).unwrap();
        assert_eq!(image.layers[0].media_type, WASM_COMPONENT_LAYER);
        let config: Value = serde_json::from_slice(&image.config.data).unwrap();
        assert_eq!(config["os"], "wasip2");
    }

    #[test]
    fn docker_media_types() {
        let spec = ImageSpec {
            media_types: MediaTypes::Docker,
            ..ImageSpec::classic("fn.wasm")
        };
        let image = build(WASM, &spec).unwrap();
        assert_eq!(image.manifest.media_type, DOCKER_MANIFEST);
        assert_eq!(image.layers[0].media_type, DOCKER_LAYER);
        let spec = ImageSpec {
            media_types: MediaTypes::Docker,
            ..ImageSpec::artifact("fn.wasm")
        };
        assert!(matches!(
            build(WASM, &spec),
            Err(ImageError::ArtifactMediaTypes)
        ));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(
            build(b"nope", &ImageSpec::classic("a.wasm")),
            Err(ImageError::NotWasm)
        ));
        assert!(matches!(
            build(WASM, &ImageSpec::classic("a/b.wasm")),
            Err(ImageError::FileName(_))
        ));
    }

    #[test]
    fn layout_directory_has_index_and_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let image = build(WASM, &ImageSpec::classic("fn.wasm")).unwrap();
        image.write_layout(dir.path(), "localhost/fn:v1").unwrap();
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let desc = &index["manifests"][0];
        assert_eq!(desc["digest"], image.manifest.digest);
        assert_eq!(desc["annotations"][OCI_REF_NAME], "v1");
        for blob in image.blobs() {
            let hex = blob.digest.trim_start_matches("sha256:");
            assert!(dir.path().join("blobs/sha256").join(hex).exists());
        }
        let mut tarball = Vec::new();
        image
            .write_archive(&mut tarball, "localhost/fn:v1")
            .unwrap();
        assert!(tarball.len() > 1024);
    }
}
