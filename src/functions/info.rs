//! What containerd says about deployed functions: `list` and `query`.

use wasmengine_api::rest::{FunctionDetail, FunctionSummary};

use super::*;

/// A deployed function, as containerd describes it.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    pub name: String,
    pub image: String,
    pub image_digest: String,
    pub wasi: bool,
    pub export: Option<String>,
    pub limits: FunctionLimits,
    pub created: Option<SystemTime>,
    pub state: TaskState,
    /// Its task was stopped for being idle; the next call starts it.
    pub idle: bool,
    /// Its idle period from the deploy, in seconds (absent: the engine's).
    pub idle_timeout_secs: Option<u64>,
    /// The functions it may call.
    pub calls: Vec<String>,
}

impl FunctionInfo {
    /// The original list fields.
    pub fn summary(&self) -> Value {
        json!(FunctionSummary {
            func_name: self.name.clone(),
            func_image_name: self.image.clone(),
            wasi_cap: self.wasi,
        })
    }

    /// The query fields: the original ones and what containerd knows.
    pub fn detail(&self) -> Value {
        let status = if self.idle && self.state != TaskState::Running {
            "idle"
        } else {
            self.state.as_str()
        };
        json!(FunctionDetail {
            func_name: self.name.clone(),
            func_image_name: self.image.clone(),
            wasi_cap: self.wasi,
            image_digest: self.image_digest.clone(),
            export: self.export.clone(),
            limits: self.limits.clone(),
            status: status.to_string(),
            idle_timeout_secs: self.idle_timeout_secs,
            calls: self.calls.clone(),
            exit_status: match self.state {
                TaskState::Stopped(code) => Some(code),
                _ => None,
            },
            created: self.created.map(crate::containerd::humantime_rfc3339),
        })
    }
}

impl Functions {
    pub async fn list(&self) -> ApiResult<Vec<FunctionInfo>> {
        let containers = self.ctd.containers_with_label(LABEL_FUNCTION).await?;
        let mut out = Vec::new();
        for c in containers {
            out.push(self.info(c, false).await?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn query(&self, name: &str) -> ApiResult<FunctionInfo> {
        validate_name(name)?;
        match self.ctd.container(name).await? {
            Some(c) if c.labels.contains_key(LABEL_FUNCTION) => self.info(c, true).await,
            _ => Err(ApiError::not_found(format!(
                "function {name} is not deployed"
            ))),
        }
    }

    pub(super) async fn info(
        &self,
        c: containerd_client::services::v1::Container,
        with_state: bool,
    ) -> ApiResult<FunctionInfo> {
        let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let state = if with_state {
            // A grouped function runs while its group does and holds it.
            match c.labels.get(groups::LABEL_GROUP) {
                Some(_) if self.is_idle(&c.id) => TaskState::Other,
                Some(group) => self.ctd.task_state(group).await?,
                None => self.ctd.task_state(&c.id).await?,
            }
        } else {
            TaskState::Other
        };
        Ok(FunctionInfo {
            name: c.id.clone(),
            image: label(LABEL_IMAGE),
            image_digest: label(LABEL_IMAGE_DIGEST),
            wasi: label(LABEL_WASI) == "true",
            export: c.labels.get(LABEL_EXPORT).cloned(),
            limits: serde_json::from_str(&label(LABEL_LIMITS)).unwrap_or_default(),
            created: c.created_at.and_then(|t| SystemTime::try_from(t).ok()),
            state,
            idle: self.is_idle(&c.id),
            idle_timeout_secs: c
                .labels
                .get(LABEL_IDLE_TIMEOUT)
                .and_then(|v| v.parse().ok()),
            calls: calls_of(&c.labels),
        })
    }
}
