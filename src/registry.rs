//! Client-side pull: fetch an image through the registry protocol (distribution v2) and write
//! its blobs into containerd's content store, with the labels containerd's garbage collector
//! follows, then create the image record.
//!
//! Loopback registries are reached over plain HTTP; others over HTTPS unless listed as
//! insecure. Bearer-token and basic auth are supported, with credentials from docker's
//! `config.json` (`docker_credential`: its `auths`, or a credential helper it names).

use std::collections::HashMap;

use base64::Engine as _;
use containerd_client::types::Descriptor;
use reqwest::{header, StatusCode};
use serde_json::Value;
use wasmengine_api::image as media;

use crate::containerd::Containerd;
use crate::error::{ApiError, ApiResult};
use crate::layers::SizeCaps;
use crate::reference::Reference;

const MANIFEST_TYPES: &[&str] = &[
    media::OCI_INDEX,
    media::OCI_MANIFEST,
    media::DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub struct Registries {
    http: reqwest::Client,
    insecure: Vec<String>,
}

/// One pull's view of a registry: base URL and the authorization earned so far.
struct Session<'a> {
    registries: &'a Registries,
    base: String,
    reference: &'a Reference,
    authorization: Option<String>,
    caps: SizeCaps,
}

impl Registries {
    pub fn new(insecure: Vec<String>) -> Registries {
        Registries {
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("http client"),
            insecure,
        }
    }

    /// The `Authorization` value that answers a registry's `WWW-Authenticate` challenge for
    /// `actions` (`pull`, or `pull,push`) on `reference`'s repository: basic auth with the
    /// docker credentials, or a bearer token from the realm the challenge names.
    pub async fn authorize(
        &self,
        reference: &Reference,
        challenge: &str,
        actions: &str,
    ) -> ApiResult<String> {
        let registry = reference.registry.clone();
        let creds = tokio::task::spawn_blocking(move || docker_credentials(&registry))
            .await
            .ok()
            .flatten();
        let creds = creds.as_ref();
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return creds.map(|c| format!("Basic {c}")).ok_or_else(|| {
                ApiError::bad_gateway(format!(
                    "registry {} wants credentials (docker login)",
                    reference.registry
                ))
            });
        }
        let params = parse_challenge(params);
        let realm = params.get("realm").ok_or_else(|| {
            ApiError::bad_gateway("registry sent an auth challenge without realm")
        })?;
        let mut req = self.http.get(realm.as_str()).query(&[(
            "scope",
            format!("repository:{}:{actions}", reference.repository),
        )]);
        if let Some(service) = params.get("service") {
            req = req.query(&[("service", service)]);
        }
        // The registry's credentials go to its own token service only: a realm elsewhere gets
        // an anonymous token request (enough for public images).
        let plain = self.base_url(reference).starts_with("http:");
        match creds {
            Some(c) if realm_is_trusted(reference, realm, plain) => {
                req = req.header(header::AUTHORIZATION, format!("Basic {c}"));
            }
            Some(_) => tracing::warn!(
                "{}: not sending its credentials to the token service at {realm}, which is \
                 not on the registry's host",
                reference.registry
            ),
            None => {}
        }
        let resp = req.send().await.map_err(|e| unreachable(reference, e))?;
        if !resp.status().is_success() {
            return Err(ApiError::bad_gateway(format!(
                "registry token service refused: {}",
                resp.status()
            )));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| ApiError::bad_gateway(format!("registry token: {e}")))?;
        let token = body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .ok_or_else(|| ApiError::bad_gateway("registry token service sent no token"))?;
        Ok(format!("Bearer {token}"))
    }

    /// Sends the request `make` builds, with `authorization` if one was earned; on a first
    /// 401, answers the registry's challenge for `actions` on `reference` (keeping the
    /// answer in `authorization` for the session's later requests) and sends it again once.
    /// The one place pulls and pushes meet a registry's auth.
    pub async fn send(
        &self,
        reference: &Reference,
        actions: &str,
        authorization: &mut Option<String>,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> ApiResult<reqwest::Response> {
        loop {
            let mut req = make(&self.http);
            if let Some(a) = authorization.as_deref() {
                req = req.header(header::AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| unreachable(reference, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || authorization.is_some() {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            *authorization = Some(self.authorize(reference, &challenge, actions).await?);
        }
    }

    pub fn base_url(&self, r: &Reference) -> String {
        let plain = r.is_loopback() || self.insecure.iter().any(|h| h == &r.registry);
        let scheme = if plain { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", r.api_host(), r.repository)
    }

    /// Pulls `reference` into containerd under `lease` and records it as image `name`.
    /// Returns the image's target descriptor.
    pub async fn pull(
        &self,
        ctd: &Containerd,
        reference: &Reference,
        name: &str,
        lease: &str,
        caps: SizeCaps,
    ) -> ApiResult<Descriptor> {
        let mut session = Session {
            registries: self,
            base: self.base_url(reference),
            reference,
            authorization: None,
            caps,
        };
        let (top_type, top) = session.manifest(reference.object()).await?;
        // A reference pinned by digest names exactly one document: nothing else is accepted.
        if let Some(pinned) = &reference.digest {
            if &sha256(&top) != pinned {
                return Err(ApiError::bad_gateway(format!(
                    "registry sent a manifest that does not match the pinned {pinned}"
                )));
            }
        }
        let top_desc = descriptor(&top_type, &top);
        let top_json: Value = serde_json::from_slice(&top)
            .map_err(|e| ApiError::bad_gateway(format!("registry sent a bad manifest: {e}")))?;
        if top_type == media::OCI_INDEX || top_type == DOCKER_MANIFEST_LIST {
            let (index, chosen) = choose_platform(&top_json)?;
            let digest = chosen["digest"].as_str().unwrap_or_default().to_string();
            let (mtype, manifest) = session.manifest(&digest).await?;
            if sha256(&manifest) != digest {
                return Err(ApiError::bad_gateway(format!(
                    "registry sent a manifest that does not match {digest}"
                )));
            }
            self.store_manifest(ctd, &mut session, &mtype, manifest, lease)
                .await?;
            let mut labels = HashMap::new();
            labels.insert(format!("containerd.io/gc.ref.content.m.{index}"), digest);
            ctd.write_content(&top_desc.digest, top, labels, lease)
                .await?;
        } else {
            self.store_manifest(ctd, &mut session, &top_type, top, lease)
                .await?;
        }
        ctd.put_image(name, top_desc.clone()).await?;
        Ok(top_desc)
    }

    async fn store_manifest(
        &self,
        ctd: &Containerd,
        session: &mut Session<'_>,
        media_type: &str,
        manifest: Vec<u8>,
        lease: &str,
    ) -> ApiResult<()> {
        let m: Value = serde_json::from_slice(&manifest)
            .map_err(|e| ApiError::bad_gateway(format!("registry sent a bad manifest: {e}")))?;
        if media_type != media::OCI_MANIFEST && media_type != media::DOCKER_MANIFEST {
            return Err(ApiError::unprocessable(format!(
                "unsupported manifest type {media_type}"
            )));
        }
        let mut labels = HashMap::new();
        let config = m["config"]["digest"].as_str().unwrap_or_default();
        let mut blobs = vec![config.to_string()];
        labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            config.to_string(),
        );
        let layers = m["layers"].as_array().cloned().unwrap_or_default();
        session
            .caps
            .check_layers(layers.iter().map(|l| l["size"].as_i64().unwrap_or(0)))?;
        for (i, l) in layers.iter().enumerate() {
            let d = l["digest"].as_str().unwrap_or_default().to_string();
            labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), d.clone());
            blobs.push(d);
        }
        for digest in blobs {
            if ctd.content_info(&digest).await?.is_some() {
                continue;
            }
            let data = session.blob(&digest).await?;
            ctd.write_content(&digest, data, HashMap::new(), lease)
                .await?;
        }
        let digest = sha256(&manifest);
        ctd.write_content(&digest, manifest, labels, lease).await
    }
}

impl Session<'_> {
    async fn manifest(&mut self, object: &str) -> ApiResult<(String, Vec<u8>)> {
        let url = format!("{}/manifests/{object}", self.base);
        let resp = self.get(&url, &MANIFEST_TYPES.join(", ")).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(ApiError::not_found(format!(
                "image {} not found in the registry",
                self.reference
            )));
        }
        let resp = check(resp, self.reference)?;
        let mtype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let body = read_capped(resp, MAX_MANIFEST_BYTES, "a manifest's size").await?;
        let mtype = if MANIFEST_TYPES.contains(&mtype.as_str()) {
            mtype
        } else {
            // Some registries answer with a generic type: trust the document's own.
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                .unwrap_or(media::OCI_MANIFEST.to_string())
        };
        Ok((mtype, body))
    }

    async fn blob(&mut self, digest: &str) -> ApiResult<Vec<u8>> {
        let url = format!("{}/blobs/{digest}", self.base);
        let resp = self.get(&url, "*/*").await?;
        let resp = check(resp, self.reference)?;
        let body = read_capped(resp, self.caps.compressed, "--max-image-bytes").await?;
        if sha256(&body) != digest {
            return Err(ApiError::bad_gateway(format!(
                "registry sent a blob that does not match {digest}"
            )));
        }
        Ok(body)
    }

    /// GET with the session's authorization, answering one auth challenge.
    async fn get(&mut self, url: &str, accept: &str) -> ApiResult<reqwest::Response> {
        let (registries, reference) = (self.registries, self.reference);
        registries
            .send(reference, "pull", &mut self.authorization, |http| {
                http.get(url).header(header::ACCEPT, accept)
            })
            .await
    }
}

/// Largest manifest or index accepted from a registry.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A response body, refused as soon as it passes `cap` bytes (whatever it announced).
async fn read_capped(mut resp: reqwest::Response, cap: u64, what: &str) -> ApiResult<Vec<u8>> {
    let over = || {
        ApiError::unprocessable(format!(
            "registry sent more than {cap} bytes for one object (cap: {what})"
        ))
    };
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(over());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ApiError::bad_gateway(format!("registry: {e}")))?
    {
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(over());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn check(resp: reqwest::Response, r: &Reference) -> ApiResult<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        Ok(resp)
    } else if status == StatusCode::NOT_FOUND {
        Err(ApiError::not_found(format!(
            "image {r} not found in the registry (blob missing)"
        )))
    } else {
        Err(ApiError::bad_gateway(format!(
            "registry {} refused: {status}",
            r.registry
        )))
    }
}

fn unreachable(r: &Reference, e: reqwest::Error) -> ApiError {
    ApiError::bad_gateway(format!("registry {} unreachable: {e}", r.registry))
}

/// `key="value", …` of a `WWW-Authenticate` header.
/// Whether a token service at `realm` may get `reference`'s registry credentials: it is on the
/// registry's own host over https (Docker Hub's is `auth.docker.io`), or it is the very
/// host and port of a registry that is itself reached over plain HTTP.
fn realm_is_trusted(reference: &Reference, realm: &str, plain: bool) -> bool {
    let Ok(url) = reqwest::Url::parse(realm) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let authority = reference.api_host();
    let registry_host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
    .trim_start_matches('[')
    .trim_end_matches(']');
    let same_host = host.eq_ignore_ascii_case(registry_host)
        || (reference.registry == "docker.io" && host == "auth.docker.io");
    match url.scheme() {
        "https" => same_host,
        "http" => {
            let realm_authority = match url.port() {
                Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_string(),
            };
            plain && same_host && realm_authority.eq_ignore_ascii_case(authority)
        }
        _ => false,
    }
}

fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for part in params.split(',') {
        if let Some((k, v)) = part.split_once('=') {
            out.insert(
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            );
        }
    }
    out
}

/// The index entry to run here: a Wasm platform first, then this machine's Linux, else the
/// only entry.
pub(crate) fn choose_platform(index: &Value) -> ApiResult<(usize, Value)> {
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let platform = |e: &Value| {
        (
            e["platform"]["os"].as_str().unwrap_or_default().to_string(),
            e["platform"]["architecture"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    let pick = entries
        .iter()
        .position(|e| {
            let (os, a) = platform(e);
            a == "wasm" || os.starts_with("wasi")
        })
        .or_else(|| {
            entries.iter().position(|e| {
                let (os, a) = platform(e);
                os == "linux" && a == arch
            })
        })
        .or(if entries.len() == 1 { Some(0) } else { None });
    match pick {
        Some(i) => Ok((i, entries[i].clone())),
        None => Err(ApiError::unprocessable(format!(
            "image index has no manifest for wasm or linux/{arch}"
        ))),
    }
}

fn descriptor(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: sha256(data),
        size: data.len() as i64,
        annotations: HashMap::new(),
    }
}

fn sha256(data: &[u8]) -> String {
    media::sha256_digest(data)
}

/// `auths` of docker's config.json: registry host → base64 `user:password`.
/// A registry's credentials from docker's config (`$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`: its `auths`, or the credential helper or store it names), as
/// base64 `user:password` for basic auth. Read when a registry asks, so a `docker login`
/// after the engine started counts.
fn docker_credentials(registry: &str) -> Option<String> {
    // docker's config names Docker Hub by its old index URL, others by host[:port].
    let keys = if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".to_string(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    };
    for key in keys {
        match docker_credential::get_credential(&key) {
            Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
                return Some(
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
                )
            }
            Ok(docker_credential::DockerCredential::IdentityToken(_)) => {
                tracing::warn!("{registry}: docker's identity tokens are not supported");
            }
            Err(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_the_registrys_own_token_service() {
        let r = |s: &str| Reference::parse(s).unwrap();
        let quay = r("quay.io/org/app:v1");
        assert!(realm_is_trusted(&quay, "https://quay.io/v2/auth", false));
        assert!(realm_is_trusted(
            &quay,
            "https://QUAY.io:8443/v2/auth",
            false
        ));
        assert!(!realm_is_trusted(
            &quay,
            "https://evil.example/token",
            false
        ));
        assert!(!realm_is_trusted(&quay, "http://quay.io/v2/auth", false));
        assert!(!realm_is_trusted(
            &quay,
            "https://quay.io.evil.example/t",
            false
        ));
        assert!(!realm_is_trusted(&quay, "not a url", false));
        let hub = r("docker.io/library/app:v1");
        assert!(realm_is_trusted(
            &hub,
            "https://auth.docker.io/token",
            false
        ));
        let local = r("127.0.0.1:5000/app:v1");
        assert!(realm_is_trusted(
            &local,
            "http://127.0.0.1:5000/token",
            true
        ));
        assert!(!realm_is_trusted(
            &local,
            "http://127.0.0.1:5001/token",
            true
        ));
        assert!(realm_is_trusted(
            &local,
            "https://127.0.0.1:5443/token",
            true
        ));
    }

    #[test]
    fn challenge_params() {
        let p = parse_challenge(r#"realm="https://auth.example/token",service="reg""#);
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "reg");
    }

    #[test]
    fn prefers_wasm_then_host_linux() {
        let index = serde_json::json!({"manifests":[
            {"digest":"a","platform":{"os":"linux","architecture":"arm64"}},
            {"digest":"b","platform":{"os":"wasip1","architecture":"wasm"}}]});
        assert_eq!(choose_platform(&index).unwrap().0, 1);
        let index = serde_json::json!({"manifests":[
            {"digest":"a","platform":{"os":"linux","architecture":"s390x"}},
            {"digest":"b","platform":{"os":"linux","architecture":"s390x"}}]});
        assert_eq!(choose_platform(&index).unwrap_err().status, 422);
    }
}
