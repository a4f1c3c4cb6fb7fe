//! What a classic image's rootfs holds after every layer is applied, as the snapshotter will
//! lay it out: later layers replace files, OCI whiteouts (`.wh.NAME`) delete them, opaque
//! markers (`.wh..wh..opq`) empty a directory. A module in the first layer that a later layer
//! replaces with a script is not a module any more, and a deploy must see that.
//!
//! The walk also counts what the layers unpack to, so an image can be refused before its
//! layers reach the node's disk.

use std::collections::BTreeMap;
use std::io::Read;

use crate::error::{ApiError, ApiResult};

/// Caps on what one image may take on the node.
#[derive(Debug, Clone, Copy)]
pub struct SizeCaps {
    /// Layers as stored (compressed), all together.
    pub compressed: u64,
    /// Layers unpacked, all together.
    pub unpacked: u64,
}

impl Default for SizeCaps {
    fn default() -> Self {
        SizeCaps {
            compressed: 128 << 20,
            unpacked: 512 << 20,
        }
    }
}

impl SizeCaps {
    /// Refuses layers whose stored sizes already add up to more than the compressed cap.
    pub fn check_layers(&self, sizes: impl IntoIterator<Item = i64>) -> ApiResult<()> {
        let total: u64 = sizes.into_iter().map(|s| s.max(0) as u64).sum();
        if total > self.compressed {
            return Err(ApiError::unprocessable(format!(
                "image layers take {total} bytes, over the {}-byte cap (--max-image-bytes)",
                self.compressed
            )));
        }
        Ok(())
    }
}

/// What a path holds in the final rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// A regular file that starts with the Wasm magic number.
    Wasm,
    /// Any other regular file (a script, a binary, data).
    File,
    Dir,
    /// A symbolic or hard link: what it reaches is not checked here.
    Link,
    Other,
}

/// The final rootfs of a classic image, path by path (absolute, no trailing slash).
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Bytes of regular files, every layer counted (a replaced file still took disk).
    pub unpacked_bytes: u64,
}

impl Tree {
    /// Applies one layer (a tar, gzipped or not). `cap` bounds the unpacked bytes of the
    /// whole image so far.
    pub fn apply(&mut self, media_type: &str, blob: &[u8], cap: u64) -> ApiResult<()> {
        if !blob.starts_with(&[0x1f, 0x8b]) && !media_type.contains("tar") {
            return Err(ApiError::unprocessable(format!(
                "image layer type {media_type} is neither a tar layer nor a Wasm layer"
            )));
        }
        let mut archive = archive(blob);
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let path = entry
                .path()
                .map(|p| normalise(&p.to_string_lossy()))
                .map_err(bad)?;
            if path == "/" {
                continue;
            }
            let (dir, base) = path.rsplit_once('/').unwrap_or(("", &path));
            let dir = if dir.is_empty() { "/" } else { dir };
            if base == ".wh..wh..opq" {
                self.remove_below(dir);
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                let gone = format!("{}/{gone}", dir.trim_end_matches('/'));
                self.remove_below(&gone);
                self.nodes.remove(&gone);
                continue;
            }
            let kind = entry.header().entry_type();
            let node = if kind.is_file() {
                self.unpacked_bytes = self.unpacked_bytes.saturating_add(entry.size());
                if self.unpacked_bytes > cap {
                    return Err(ApiError::unprocessable(format!(
                        "image unpacks to more than the {cap}-byte cap (--max-image-unpacked-bytes)"
                    )));
                }
                let mut magic = [0u8; 4];
                if entry.read_exact(&mut magic).is_ok() && &magic == b"\0asm" {
                    Node::Wasm
                } else {
                    Node::File
                }
            } else if kind.is_dir() {
                Node::Dir
            } else if kind.is_symlink() || kind.is_hard_link() {
                Node::Link
            } else {
                Node::Other
            };
            // A directory stays what it was (its contents too); anything else replaces the
            // path and whatever was below it.
            if node != Node::Dir || self.nodes.get(&path) != Some(&Node::Dir) {
                self.remove_below(&path);
                self.nodes.insert(path, node);
            }
        }
        Ok(())
    }

    fn remove_below(&mut self, dir: &str) {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let below: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            self.nodes.remove(&p);
        }
    }

    /// What `path` holds in the final rootfs. A path below something that is not a directory
    /// (a link, say) is `Link`: the runtime would resolve it through that.
    pub fn get(&self, path: &str) -> Option<Node> {
        let path = normalise(path);
        let mut at = String::new();
        for part in path.trim_start_matches('/').split('/') {
            if let Some(node) = self.nodes.get(&at).copied().filter(|_| !at.is_empty()) {
                if node != Node::Dir {
                    return Some(Node::Link);
                }
            }
            at.push('/');
            at.push_str(part);
        }
        self.nodes.get(&path).copied()
    }

    /// The Wasm modules of the final rootfs.
    pub fn wasm_files(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(p, n)| **n == Node::Wasm && self.get(p) == Some(Node::Wasm))
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// The bytes of the regular file at `path` in one layer (a tar, gzipped or not), at most
/// `cap` of them (0: only whether it is there, with no bytes); `None` if the layer has no
/// regular file there.
pub fn read_file(blob: &[u8], path: &str, cap: u64) -> ApiResult<Option<Vec<u8>>> {
    let mut archive = archive(blob);
    let mut found = None;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let at = entry
            .path()
            .map(|p| normalise(&p.to_string_lossy()))
            .map_err(bad)?;
        if at != path || !entry.header().entry_type().is_file() {
            continue;
        }
        if entry.size() > cap {
            if cap == 0 {
                found = Some(Vec::new());
                continue;
            }
            return Err(ApiError::unprocessable(format!(
                "module {path} is larger than {cap} bytes"
            )));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(bad)?;
        // A later entry of the same path in one layer replaces an earlier one.
        found = Some(bytes);
    }
    Ok(found)
}

/// A layer's tar, gunzipped if it is gzipped.
fn archive(blob: &[u8]) -> tar::Archive<Box<dyn Read + '_>> {
    let reader: Box<dyn Read + '_> = if blob.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else {
        Box::new(blob)
    };
    tar::Archive::new(reader)
}

fn bad(e: std::io::Error) -> ApiError {
    ApiError::unprocessable(format!("image layer is not a tar: {e}"))
}

/// `./a//b/` → `/a/b`.
pub fn normalise(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            if kind.is_symlink() {
                h.set_link_name("/bin/sh").unwrap();
            }
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    const WASM: &[u8] = b"\0asm\x01\0\0\0";
    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    use tar::EntryType::{Directory, Regular, Symlink};

    #[test]
    fn a_later_layer_replaces_the_module() {
        let mut t = Tree::default();
        t.apply(TAR, &layer(&[("fn.wasm", Regular, WASM)]), u64::MAX)
            .unwrap();
        assert_eq!(t.wasm_files(), vec!["/fn.wasm"]);
        t.apply(
            TAR,
            &layer(&[("fn.wasm", Regular, b"#!/bin/sh\n")]),
            u64::MAX,
        )
        .unwrap();
        assert_eq!(t.get("/fn.wasm"), Some(Node::File));
        assert!(t.wasm_files().is_empty());
    }

    #[test]
    fn whiteouts_links_and_opaque_dirs() {
        let mut t = Tree::default();
        t.apply(
            TAR,
            &layer(&[
                ("a.wasm", Regular, WASM),
                ("app", Directory, b""),
                ("app/m.wasm", Regular, WASM),
                ("lib", Directory, b""),
                ("lib/x.wasm", Regular, WASM),
            ]),
            u64::MAX,
        )
        .unwrap();
        t.apply(
            TAR,
            &layer(&[
                (".wh.a.wasm", Regular, b""),
                ("app", Symlink, b""),
                ("lib/.wh..wh..opq", Regular, b""),
            ]),
            u64::MAX,
        )
        .unwrap();
        assert_eq!(t.get("/a.wasm"), None);
        // Below a link now: whatever it reaches is not the module that was there.
        assert_eq!(t.get("/app/m.wasm"), Some(Node::Link));
        assert_eq!(t.get("/lib/x.wasm"), None);
        assert!(t.wasm_files().is_empty());
    }

    #[test]
    fn unpacked_size_is_capped() {
        let mut t = Tree::default();
        let big = vec![0u8; 10_000];
        let err = t
            .apply(TAR, &layer(&[("zeros", Regular, &big)]), 5_000)
            .unwrap_err();
        assert_eq!(err.status, 422);
        assert!(err.message.contains("5000-byte cap"), "{}", err.message);
    }
}
