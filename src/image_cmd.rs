//! `wasm_engine image build|push`: package a `.wasm` file as an OCI image without Docker.
//!
//! `build` writes the image as an OCI layout under the data directory (`images/`), and
//! optionally as a tar archive (`--output`, for `ctr image import`) and straight into
//! containerd (`--import`). `push` uploads a built image to its registry (plain HTTP for
//! loopback registries and those given with `--insecure-registry`; credentials from docker's
//! `config.json` when the registry asks).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use containerd_client::types::Descriptor;
use wasmengine_api::image::{self, Blob, Image, ImageSpec, Layout, MediaTypes};

use crate::containerd::Containerd;
use crate::reference::Reference;
use crate::registry::Registries;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image holding FILE (a .wasm module).
    Build(BuildArgs),
    /// Push a built image to its registry.
    Push(PushArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The module.
    pub file: PathBuf,
    /// The image reference, e.g. 127.0.0.1:5000/hello:latest.
    #[arg(short = 't', long = "tag")]
    pub reference: String,
    /// Wasm OCI artifact layout (application/wasm layer) instead of the classic one.
    #[arg(long)]
    pub artifact: bool,
    /// Docker schema-2 media types (classic layout only).
    #[arg(long, conflicts_with = "artifact")]
    pub docker: bool,
    /// Also write the image as an OCI archive (for `ctr image import`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also import the image into containerd.
    #[arg(long)]
    pub import: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image reference given to `build`.
    pub reference: String,
    /// A registry (HOST[:PORT]) reached over plain HTTP. Loopback registries always are.
    #[arg(long = "insecure-registry", value_delimiter = ',')]
    pub insecure_registries: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where built images are kept (`images/` under it).
    #[arg(
        long,
        env = "WASMENGINE_DATA_DIR",
        default_value = "/var/lib/wasmengine"
    )]
    pub data_dir: PathBuf,
    /// containerd's socket for --import (default: the system one, else the engine's private one).
    #[arg(long, env = "WASMENGINE_CONTAINERD_ADDRESS")]
    pub containerd_address: Option<PathBuf>,
    /// containerd namespace for --import.
    #[arg(long, env = "WASMENGINE_NAMESPACE", default_value = "wasmengine")]
    pub namespace: String,
}

impl StoreArgs {
    fn layout_dir(&self, reference: &Reference) -> PathBuf {
        let name: String = reference
            .to_string()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.data_dir.join("images").join(name)
    }
}

pub async fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Build(a) => build(a).await,
        ImageCommand::Push(a) => push(a).await,
    }
}

async fn build(a: BuildArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&a.reference).map_err(anyhow::Error::msg)?;
    let wasm = std::fs::read(&a.file).with_context(|| format!("read {}", a.file.display()))?;
    let file_name = a
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.ends_with(".wasm"))
        .map(str::to_string)
        .unwrap_or_else(|| "function.wasm".into());
    let mut spec = if a.artifact {
        ImageSpec::artifact(&file_name)
    } else {
        ImageSpec::classic(&file_name)
    };
    if a.docker {
        spec.media_types = MediaTypes::Docker;
    }
    let img = image::build(&wasm, &spec)?;
    let dir = a.store.layout_dir(&reference);
    let _ = std::fs::remove_dir_all(&dir);
    img.write_layout(&dir, &a.reference)?;
    println!(
        "built {} ({}, manifest {}) in {}",
        a.reference,
        match spec.layout {
            Layout::Classic => "classic layout",
            Layout::Artifact => "Wasm OCI artifact",
        },
        img.manifest.digest,
        dir.display()
    );
    if let Some(out) = &a.output {
        let f = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
        img.write_archive(f, &a.reference)?;
        println!("wrote {} (ctr image import)", out.display());
    }
    if a.import {
        let ctd = connect(&a.store).await?;
        import(&ctd, &img, &a.reference).await?;
        println!(
            "imported {} into containerd at {} (namespace {})",
            a.reference,
            ctd.address.display(),
            ctd.namespace
        );
    }
    Ok(())
}

async fn connect(store: &StoreArgs) -> anyhow::Result<Containerd> {
    let candidates = match &store.containerd_address {
        Some(a) => vec![a.clone()],
        None => vec![
            PathBuf::from(crate::embedded::SYSTEM_SOCKET),
            store.data_dir.join("containerd/containerd.sock"),
        ],
    };
    for address in &candidates {
        if crate::embedded::answers(address).await {
            return Containerd::new(address, &store.namespace);
        }
    }
    bail!(
        "no containerd answers at {} (start the engine first, or give --containerd-address)",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

/// Writes the image's blobs into containerd's content store and names it `reference`.
pub async fn import(ctd: &Containerd, img: &Image, reference: &str) -> anyhow::Result<()> {
    let lease = ctd.create_lease(Duration::from_secs(600)).await?;
    let result = async {
        for blob in std::iter::once(&img.config).chain(&img.layers) {
            ctd.write_content(&blob.digest, blob.data.clone(), HashMap::new(), &lease)
                .await?;
        }
        let mut labels = HashMap::new();
        labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            img.config.digest.clone(),
        );
        for (i, l) in img.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        ctd.write_content(
            &img.manifest.digest,
            img.manifest.data.clone(),
            labels,
            &lease,
        )
        .await?;
        ctd.put_image(reference, descriptor(&img.manifest)).await?;
        anyhow::Ok(())
    }
    .await;
    ctd.delete_lease(&lease).await;
    result
}

fn descriptor(b: &Blob) -> Descriptor {
    Descriptor {
        media_type: b.media_type.clone(),
        digest: b.digest.clone(),
        size: b.data.len() as i64,
        annotations: HashMap::new(),
    }
}

async fn push(a: PushArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&a.reference).map_err(anyhow::Error::msg)?;
    let dir = a.store.layout_dir(&reference);
    let (img, _) = Image::read_layout(&dir).with_context(|| {
        format!(
            "no built image {} in {} (run `wasm_engine image build` first)",
            a.reference,
            dir.display()
        )
    })?;
    push_image(&img, &reference, &a.insecure_registries).await?;
    println!("pushed {} ({})", reference, img.manifest.digest);
    Ok(())
}

/// Uploads blobs (skipping those the registry has) then the manifest, monolithically. A
/// registry that asks for credentials gets them from docker's `config.json`.
pub async fn push_image(
    img: &Image,
    reference: &Reference,
    insecure: &[String],
) -> anyhow::Result<()> {
    let registries = Registries::new(insecure.to_vec());
    let base = registries.base_url(reference);
    let origin = base.split("/v2/").next().unwrap_or_default().to_string();
    let mut push = Push {
        registries: &registries,
        reference,
        authorization: None,
    };
    for blob in std::iter::once(&img.config).chain(&img.layers) {
        let head = push
            .send(|h| h.head(format!("{base}/blobs/{}", blob.digest)))
            .await?;
        if head.status().is_success() {
            continue;
        }
        let start = push
            .send(|h| h.post(format!("{base}/blobs/uploads/")))
            .await?;
        if !start.status().is_success() {
            bail!("registry refused an upload: {}", start.status());
        }
        let location = start
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("registry gave no upload location")?
            .to_string();
        let location = if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = push
            .send(|h| {
                h.put(format!("{location}{sep}digest={}", blob.digest))
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(blob.data.clone())
            })
            .await?;
        if !put.status().is_success() {
            bail!("registry refused blob {}: {}", blob.digest, put.status());
        }
    }
    let put = push
        .send(|h| {
            h.put(format!("{base}/manifests/{}", reference.object()))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    img.manifest.media_type.clone(),
                )
                .body(img.manifest.data.clone())
        })
        .await?;
    if !put.status().is_success() {
        bail!(
            "registry refused the manifest: {} {}",
            put.status(),
            put.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// One push's requests, with the authorization earned from the registry's first challenge.
struct Push<'a> {
    registries: &'a Registries,
    reference: &'a Reference,
    authorization: Option<String>,
}

impl Push<'_> {
    /// Sends the request `make` builds, answering the registry's auth challenge
    /// ([`Registries::send`]).
    async fn send(
        &mut self,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        self.registries
            .send(self.reference, "pull,push", &mut self.authorization, make)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))
    }
}

/// Loads a built image (for callers that built it earlier in this process).
pub fn load(dir: &Path) -> anyhow::Result<Image> {
    Ok(Image::read_layout(dir)?.0)
}
