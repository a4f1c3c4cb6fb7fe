//! A namespaced client for the containerd services the engine uses: content, images, leases,
//! snapshots, diff, containers and tasks.
//!
//! The gRPC channel is lazy and reconnects by itself, so the engine starts (and keeps
//! serving) while containerd is away; calls then fail with 503 and work again once it
//! returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    ApplyRequest, Container, CreateContainerRequest, CreateImageRequest, CreateRequest,
    CreateTaskRequest, DeleteContainerRequest, DeleteRequest, DeleteTaskRequest,
    GetContainerRequest, GetImageRequest, GetRequest, Image, Info, InfoRequest, KillRequest,
    ListContainersRequest, ReadContentRequest, StartRequest, UpdateImageRequest, UpdateRequest,
    WaitRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::v1::Status as ProcessStatus;
use containerd_client::types::{Descriptor, Mount};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use crate::error::{ApiError, ApiResult, GrpcContext};

/// The snapshotter functions' root filesystems live in.
pub const SNAPSHOTTER: &str = "overlayfs";
/// The `type_url` containerd uses for an OCI runtime spec in a container record.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Content is written in chunks of this size (gRPC's default message limit is 4 MiB).
const WRITE_CHUNK: usize = 1 << 20;

#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    pub namespace: String,
    pub address: PathBuf,
}

/// A task's state as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Missing,
    Created,
    Running,
    Stopped(u32),
    Other,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Missing => "no task",
            TaskState::Created => "created",
            TaskState::Running => "running",
            TaskState::Stopped(_) => "stopped",
            TaskState::Other => "unknown",
        }
    }
}

impl Containerd {
    /// A client for the containerd at `address` (a unix socket), in `namespace`.
    pub fn new(address: &Path, namespace: &str) -> anyhow::Result<Containerd> {
        let path = address.to_path_buf();
        let channel = Endpoint::try_from("http://[::]")?
            .connect_timeout(Duration::from_secs(2))
            .connect_with_connector_lazy(UnixConnector(path));
        Ok(Containerd {
            channel,
            namespace: namespace.to_string(),
            address: address.to_path_buf(),
        })
    }

    fn req<T>(&self, message: T) -> Request<T> {
        self.leased(message, None)
    }

    /// A request in our namespace, and under `lease` when given (so what it creates is not
    /// collected before it is referenced).
    fn leased<T>(&self, message: T, lease: Option<&str>) -> Request<T> {
        let mut r = Request::new(message);
        let md = r.metadata_mut();
        md.insert(
            "containerd-namespace",
            MetadataValue::try_from(self.namespace.as_str()).expect("valid namespace"),
        );
        if let Some(lease) = lease {
            md.insert(
                "containerd-lease",
                MetadataValue::try_from(lease).expect("valid lease id"),
            );
        }
        r
    }

    /// containerd's version: also the health check.
    pub async fn version(&self) -> ApiResult<String> {
        let v = VersionClient::new(self.channel.clone())
            .version(())
            .await
            .ctx("version")?;
        Ok(v.into_inner().version)
    }

    // ---- images and content ----

    pub async fn image(&self, name: &str) -> ApiResult<Option<Image>> {
        let r = ImagesClient::new(self.channel.clone())
            .get(self.req(GetImageRequest { name: name.into() }))
            .await;
        match r {
            Ok(r) => Ok(r.into_inner().image),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(ApiError::containerd("get image", &s)),
        }
    }

    /// Creates the image record, or points an existing one at `target`.
    pub async fn put_image(&self, name: &str, target: Descriptor) -> ApiResult<()> {
        let now = prost_types::Timestamp::from(SystemTime::now());
        let image = Image {
            name: name.into(),
            labels: HashMap::new(),
            target: Some(target),
            created_at: Some(now),
            updated_at: Some(now),
        };
        let mut client = ImagesClient::new(self.channel.clone());
        match client
            .create(self.req(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => client
                .update(self.req(UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".into()],
                    }),
                    source_date_epoch: None,
                }))
                .await
                .map(|_| ())
                .ctx("update image"),
            Err(s) => Err(ApiError::containerd("create image", &s)),
        }
    }

    pub async fn content_info(&self, digest: &str) -> ApiResult<Option<Info>> {
        let r = ContentClient::new(self.channel.clone())
            .info(self.req(InfoRequest {
                digest: digest.into(),
            }))
            .await;
        match r {
            Ok(r) => Ok(r.into_inner().info),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(ApiError::containerd("content info", &s)),
        }
    }

    /// A whole blob from the content store.
    pub async fn read_content(&self, digest: &str) -> ApiResult<Vec<u8>> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.req(ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            }))
            .await
            .ctx(&format!("read {digest}"))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await.ctx(&format!("read {digest}"))? {
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }

    /// Writes a blob (verified against `digest` by containerd) with GC `labels`.
    pub async fn write_content(
        &self,
        digest: &str,
        data: Vec<u8>,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> ApiResult<()> {
        let total = data.len() as i64;
        let reference = format!("wasmengine-{digest}-{}", unique());
        let mut requests = Vec::new();
        let mut offset = 0usize;
        loop {
            let end = (offset + WRITE_CHUNK).min(data.len());
            let last = end == data.len();
            requests.push(WriteContentRequest {
                action: if last {
                    WriteAction::Commit as i32
                } else {
                    WriteAction::Write as i32
                },
                r#ref: reference.clone(),
                total,
                expected: digest.into(),
                offset: offset as i64,
                data: data[offset..end].to_vec(),
                labels: if last { labels.clone() } else { HashMap::new() },
            });
            offset = end;
            if last {
                break;
            }
        }
        let stream = tokio_stream::iter(requests);
        let mut responses = match ContentClient::new(self.channel.clone())
            .write(self.leased(stream, Some(lease)))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(ApiError::containerd(&format!("write {digest}"), &s)),
        };
        loop {
            match responses.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(ApiError::containerd(&format!("write {digest}"), &s)),
            }
        }
    }

    /// Sets labels on a blob (keeps the others).
    pub async fn label_content(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> ApiResult<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel.clone())
            .update(self.req(UpdateRequest {
                info: Some(Info {
                    digest: digest.into(),
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map(|_| ())
            .ctx("label content")
    }

    // ---- leases ----

    /// A lease that expires by itself after `ttl` (so a crash mid-pull leaves nothing for
    /// long).
    pub async fn create_lease(&self, ttl: Duration) -> ApiResult<String> {
        let id = format!("wasmengine-{}", unique());
        let expire = humantime_rfc3339(SystemTime::now() + ttl);
        let mut labels = HashMap::new();
        labels.insert("containerd.io/gc.expire".to_string(), expire);
        LeasesClient::new(self.channel.clone())
            .create(self.req(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .ctx("create lease")?;
        Ok(id)
    }

    pub async fn delete_lease(&self, id: &str) {
        let r = LeasesClient::new(self.channel.clone())
            .delete(self.req(DeleteRequest {
                id: id.into(),
                sync: false,
            }))
            .await;
        if let Err(s) = r {
            tracing::warn!("delete lease {id}: {}", s.message());
        }
    }

    // ---- snapshots and diff ----

    pub async fn snapshot_exists(&self, key: &str) -> ApiResult<bool> {
        let r = SnapshotsClient::new(self.channel.clone())
            .stat(self.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(ApiError::containerd("stat snapshot", &s)),
        }
    }

    pub async fn prepare_snapshot(
        &self,
        key: &str,
        parent: &str,
        lease: Option<&str>,
    ) -> ApiResult<Vec<Mount>> {
        let r = SnapshotsClient::new(self.channel.clone())
            .prepare(self.leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.into(),
                    parent: parent.into(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .ctx(&format!("prepare snapshot {key}"))?;
        Ok(r.into_inner().mounts)
    }

    pub async fn commit_snapshot(
        &self,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
        lease: Option<&str>,
    ) -> ApiResult<()> {
        SnapshotsClient::new(self.channel.clone())
            .commit(self.leased(
                CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: name.into(),
                    key: key.into(),
                    labels,
                },
                lease,
            ))
            .await
            .map(|_| ())
            .ctx(&format!("commit snapshot {name}"))
    }

    pub async fn snapshot_mounts(&self, key: &str) -> ApiResult<Vec<Mount>> {
        let r = SnapshotsClient::new(self.channel.clone())
            .mounts(self.req(MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await
            .ctx(&format!("snapshot mounts {key}"))?;
        Ok(r.into_inner().mounts)
    }

    /// Removes a snapshot; a missing one is not an error.
    pub async fn remove_snapshot(&self, key: &str) -> ApiResult<()> {
        let r = SnapshotsClient::new(self.channel.clone())
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ApiError::containerd(&format!("remove snapshot {key}"), &s)),
        }
    }

    /// Applies a layer onto mounted snapshot `mounts` (containerd decompresses and unpacks).
    pub async fn apply_layer(
        &self,
        layer: Descriptor,
        mounts: Vec<Mount>,
        lease: Option<&str>,
    ) -> ApiResult<Descriptor> {
        let r = DiffClient::new(self.channel.clone())
            .apply(self.leased(
                ApplyRequest {
                    diff: Some(layer),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                lease,
            ))
            .await
            .ctx("apply layer")?;
        r.into_inner()
            .applied
            .ok_or_else(|| ApiError::internal("containerd applied no layer"))
    }

    // ---- containers ----

    pub async fn create_container(
        &self,
        id: &str,
        image: &str,
        labels: HashMap<String, String>,
        spec: &serde_json::Value,
        snapshot_key: &str,
    ) -> ApiResult<()> {
        let now = prost_types::Timestamp::from(SystemTime::now());
        let container = Container {
            id: id.into(),
            labels,
            image: image.into(),
            runtime: Some(Runtime {
                name: wasmengine_api::RUNTIME_NAME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(spec).expect("spec serialises"),
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: snapshot_key.into(),
            created_at: Some(now),
            updated_at: Some(now),
            ..Default::default()
        };
        ContainersClient::new(self.channel.clone())
            .create(self.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map(|_| ())
            .map_err(|s| match s.code() {
                Code::AlreadyExists => {
                    ApiError::conflict(format!("function {id} is already deployed"))
                }
                _ => ApiError::containerd("create container", &s),
            })
    }

    pub async fn container(&self, id: &str) -> ApiResult<Option<Container>> {
        let r = ContainersClient::new(self.channel.clone())
            .get(self.req(GetContainerRequest { id: id.into() }))
            .await;
        match r {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(ApiError::containerd("get container", &s)),
        }
    }

    /// Containers carrying label `key` (any value).
    pub async fn containers_with_label(&self, key: &str) -> ApiResult<Vec<Container>> {
        let r = ContainersClient::new(self.channel.clone())
            .list(self.req(ListContainersRequest {
                filters: vec![format!("labels.\"{key}\"")],
            }))
            .await
            .ctx("list containers")?;
        Ok(r.into_inner().containers)
    }

    pub async fn delete_container(&self, id: &str) -> ApiResult<()> {
        let r = ContainersClient::new(self.channel.clone())
            .delete(self.req(DeleteContainerRequest { id: id.into() }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ApiError::containerd("delete container", &s)),
        }
    }

    // ---- tasks ----

    pub async fn create_task(&self, id: &str, rootfs: Vec<Mount>) -> ApiResult<u32> {
        let r = TasksClient::new(self.channel.clone())
            .create(self.req(CreateTaskRequest {
                container_id: id.into(),
                rootfs,
                ..Default::default()
            }))
            .await
            .ctx("create task")?;
        Ok(r.into_inner().pid)
    }

    pub async fn start_task(&self, id: &str) -> ApiResult<()> {
        TasksClient::new(self.channel.clone())
            .start(self.req(StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map(|_| ())
            .ctx("start task")
    }

    pub async fn task_state(&self, id: &str) -> ApiResult<TaskState> {
        let r = TasksClient::new(self.channel.clone())
            .get(self.req(GetRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await;
        let process = match r {
            Ok(r) => r.into_inner().process,
            Err(s) if s.code() == Code::NotFound => return Ok(TaskState::Missing),
            Err(s) => return Err(ApiError::containerd("get task", &s)),
        };
        let Some(p) = process else {
            return Ok(TaskState::Missing);
        };
        Ok(match ProcessStatus::try_from(p.status) {
            Ok(ProcessStatus::Created) => TaskState::Created,
            Ok(ProcessStatus::Running) => TaskState::Running,
            Ok(ProcessStatus::Stopped) => TaskState::Stopped(p.exit_status),
            _ => TaskState::Other,
        })
    }

    pub async fn kill_task(&self, id: &str, signal: i32) -> ApiResult<()> {
        let r = TasksClient::new(self.channel.clone())
            .kill(self.req(KillRequest {
                container_id: id.into(),
                exec_id: String::new(),
                signal: signal as u32,
                all: true,
            }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ApiError::containerd("kill task", &s)),
        }
    }

    /// Waits for the task to exit, at most `timeout`; its exit status if it did.
    pub async fn wait_task(&self, id: &str, timeout: Duration) -> ApiResult<Option<u32>> {
        let mut client = TasksClient::new(self.channel.clone());
        let wait = client.wait(self.req(WaitRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }));
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Ok(None),
            Ok(Ok(r)) => Ok(Some(r.into_inner().exit_status)),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(Some(0)),
            Ok(Err(s)) => Err(ApiError::containerd("wait task", &s)),
        }
    }

    /// Deletes a stopped task; a missing one is not an error.
    pub async fn delete_task(&self, id: &str) -> ApiResult<()> {
        let r = TasksClient::new(self.channel.clone())
            .delete(self.req(DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(ApiError::containerd("delete task", &s)),
        }
    }

    /// Stops a task: SIGTERM, `grace`, then SIGKILL; then deletes it.
    pub async fn stop_task(&self, id: &str, grace: Duration) -> ApiResult<()> {
        match self.task_state(id).await? {
            TaskState::Missing => return Ok(()),
            TaskState::Stopped(_) => {}
            _ => {
                self.kill_task(id, libc::SIGTERM).await?;
                if self.wait_task(id, grace).await?.is_none() {
                    self.kill_task(id, libc::SIGKILL).await?;
                    self.wait_task(id, Duration::from_secs(10)).await?;
                }
            }
        }
        self.delete_task(id).await
    }
}

/// Connects the gRPC channel to containerd's unix socket.
#[derive(Clone)]
struct UnixConnector(PathBuf);

impl tower_service::Service<tonic::transport::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::transport::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// A process-unique suffix for references and lease ids.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// RFC 3339 in UTC, as containerd's GC labels want it.
pub fn humantime_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_028_800);
        assert_eq!(humantime_rfc3339(t), "2025-11-25T00:00:00Z");
        assert_eq!(
            humantime_rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00Z"
        );
    }
}
