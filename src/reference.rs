//! Image references (`[host[:port]/]path[:tag][@digest]`), normalised as containerd and
//! docker name them (`docker.io/library/…:latest`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host as written (`docker.io` for Docker Hub), with port if any.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, String> {
        let bad = |why: &str| format!("invalid image reference {input:?}: {why}");
        if input.is_empty() || input.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("digest must be sha256:<64 hex>"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("digest must be sha256:<64 hex>"));
                }
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad("tag must be [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.is_empty()
            || !repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                    && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
        {
            return Err(bad(
                "repository must be lowercase path components of [a-z0-9._-]",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".into())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host to speak the registry protocol to.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine (plain HTTP without a flag).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = Reference::parse("hello").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/hello:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Reference::parse("127.0.0.1:5000/fn/gcd:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "fn/gcd");
        assert_eq!(r.object(), "v1");
        assert!(r.is_loopback());
        let r = Reference::parse("localhost/x").unwrap();
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "localhost/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/o/f@{d}")).unwrap();
        assert_eq!(r.object(), d);
        assert!(!r.is_loopback());
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "x:",
            "x:-t",
            "x@sha256:12",
            "/x",
            "x/",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any text is a reference or a clear error; a reference, written out, parses
            /// back to itself.
            #[test]
            fn any_text_parses_or_fails_and_round_trips(input in ".{0,80}") {
                if let Ok(r) = Reference::parse(&input) {
                    prop_assert_eq!(Reference::parse(&r.to_string()), Ok(r));
                }
            }

            /// Well-formed references round trip, their parts intact.
            #[test]
            fn well_formed_references_round_trip(
                host in prop_oneof![Just(String::new()), "[a-z]{1,8}\\.[a-z]{2,3}(:[0-9]{1,5})?/", Just("localhost:5000/".to_string())],
                path in "[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,2}",
                tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
                digest in proptest::option::of("[0-9a-f]{64}"),
            ) {
                let mut input = format!("{host}{path}");
                if let Some(t) = &tag { input.push(':'); input.push_str(t); }
                if let Some(d) = &digest { input.push_str("@sha256:"); input.push_str(d); }
                let r = Reference::parse(&input).unwrap();
                // No tag and no digest means `latest`, as docker has it.
                let want_tag = match (&tag, &digest) {
                    (None, None) => Some("latest".to_string()),
                    _ => tag.clone(),
                };
                prop_assert_eq!(&r.tag, &want_tag);
                prop_assert_eq!(r.digest.clone(), digest.map(|d| format!("sha256:{d}")));
                prop_assert_eq!(Reference::parse(&r.to_string()), Ok(r));
            }
        }
    }
}
