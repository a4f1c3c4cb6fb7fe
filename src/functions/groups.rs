//! Function groups: with `--group-size N`, functions share containers N at a time. A group
//! is one container (one shim, one process, one wasmtime engine) that serves its functions on
//! one socket (`wasmengine_api::group`); a function of a group is still a containerd
//! container (its labels and spec are its record, as for any function) but has no task of
//! its own.
//!
//! - deploy: the function's container (no snapshot: its module is read from the image's
//!   content), a place in the first group with room (a new group when none has), the group's
//!   task started if it is not running, then the module loaded into it.
//! - invoke: over the group's connections, to `/invoke/NAME`. A group that does not hold the
//!   function (its task was restarted, or the function was idle) answers `not_loaded`, and the
//!   engine loads it and calls again; a group whose task died is started again first.
//! - idle: the function is unloaded from its group (the group keeps serving the others).
//! - delete: unloaded, its container deleted; the last function out deletes the group.
//!
//! containerd holds everything: membership is the functions' `LABEL_GROUP`, and what a group
//! has loaded is only a cache of it, rebuilt on demand after any crash.

use std::collections::{BTreeMap, BTreeSet};

use wasmengine_api::group::{encode_load, function_path};

use super::*;
use crate::image::{self, ModuleRef};
use crate::invoker::Pool;

/// On a function's container: the group that serves it.
pub const LABEL_GROUP: &str = "io.wasmengine.group";
/// On a group's container: its id.
pub const LABEL_GROUP_SERVER: &str = "io.wasmengine.group-server";
/// On a grouped function's container: where its module is ([`ModuleRef`] as JSON).
pub const LABEL_MODULE: &str = "io.wasmengine.module";
/// Keeps the module's layer from containerd's garbage collector while the function exists.
const LABEL_GC_MODULE: &str = "containerd.io/gc.ref.content.wasmengine.module";
/// Group ids are `group.N`: a dot, which no function name has.
const GROUP_PREFIX: &str = "group.";

#[derive(Default)]
pub(super) struct Groups {
    /// Group id → its functions; read from containerd at first use.
    members: tokio::sync::Mutex<Option<BTreeMap<String, BTreeSet<String>>>>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// One lifecycle lock per group: its task is started (or removed) by one caller at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Functions {
    /// Whether a deploy goes into a group: groups are on, and the function needs no fuel
    /// (a group's engine has no fuel metering).
    pub(super) fn grouped(&self, req: &DeployRequest) -> bool {
        self.defaults.group_size > 0 && req.limits.fuel.is_none()
    }

    pub(super) fn group_pool(&self, group: &str) -> Arc<Pool> {
        self.groups
            .pools
            .lock()
            .unwrap()
            .entry(group.to_string())
            .or_insert_with(|| Pool::new(&self.socket_dir(group).join(SOCKET_NAME)))
            .clone()
    }

    fn group_lock(&self, group: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.groups
            .locks
            .lock()
            .unwrap()
            .entry(group.to_string())
            .or_default()
            .clone()
    }

    async fn members(
        &self,
    ) -> ApiResult<tokio::sync::MappedMutexGuard<'_, BTreeMap<String, BTreeSet<String>>>> {
        let mut guard = self.groups.members.lock().await;
        if guard.is_none() {
            let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for c in self.ctd.containers_with_label(LABEL_GROUP_SERVER).await? {
                map.entry(c.id).or_default();
            }
            for c in self.ctd.containers_with_label(LABEL_GROUP).await? {
                if let Some(g) = c.labels.get(LABEL_GROUP) {
                    map.entry(g.clone()).or_default().insert(c.id);
                }
            }
            *guard = Some(map);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |m| {
            m.as_mut().expect("filled above")
        }))
    }

    /// A place for `name`: the first group with room, else a new one.
    async fn join_group(&self, name: &str) -> ApiResult<String> {
        let mut members = self.members().await?;
        let size = self.defaults.group_size;
        let group = match members.iter().find(|(_, m)| m.len() < size) {
            Some((g, _)) => g.clone(),
            None => (0..)
                .map(|n| format!("{GROUP_PREFIX}{n}"))
                .find(|g| !members.contains_key(g))
                .expect("a free number"),
        };
        members
            .entry(group.clone())
            .or_default()
            .insert(name.to_string());
        Ok(group)
    }

    /// At start: the spare group (`--spare-group`), or without it, the removal of a group an
    /// earlier run left with no functions (its spare).
    pub async fn start_groups(self: Arc<Self>) {
        if self.defaults.spare_group {
            self.keep_spare_group().await;
        } else {
            self.remove_empty_groups().await;
        }
    }

    /// With `--spare-group`: makes sure a group with room is running, starting a new one
    /// when every group is full, so that the next grouped deploy only loads its module (task
    /// creation, tens of milliseconds, happens here, ahead of it).
    pub async fn keep_spare_group(self: Arc<Self>) {
        if !self.defaults.spare_group || self.defaults.group_size == 0 {
            return;
        }
        let group = {
            let Ok(mut members) = self.members().await else {
                return;
            };
            let size = self.defaults.group_size;
            match members.iter().find(|(_, m)| m.len() < size) {
                Some((g, _)) => g.clone(),
                None => {
                    let g = (0..)
                        .map(|n| format!("{GROUP_PREFIX}{n}"))
                        .find(|g| !members.contains_key(g))
                        .expect("a free number");
                    members.insert(g.clone(), BTreeSet::new());
                    g
                }
            }
        };
        match self.ensure_group(&group).await {
            Ok(()) => tracing::debug!("{group} is the spare group"),
            Err(e) => tracing::warn!("spare group {group}: {e}"),
        }
    }

    async fn remove_empty_groups(&self) {
        let Ok(mut members) = self.members().await else {
            return;
        };
        let empty: Vec<String> = members
            .iter()
            .filter(|(_, m)| m.is_empty())
            .map(|(g, _)| g.clone())
            .collect();
        for group in empty {
            members.remove(&group);
            let lock = self.group_lock(&group);
            let _lifecycle = lock.lock().await;
            if let Err(e) = self.remove_group(&group).await {
                tracing::warn!("remove {group}: {e}");
            }
        }
    }

    /// Takes `name` out of `group`; the last one out removes the group's container.
    pub(super) async fn leave_group(&self, name: &str, group: &str) {
        let Ok(mut members) = self.members().await else {
            return;
        };
        let empty = members.get_mut(group).is_some_and(|m| {
            m.remove(name);
            m.is_empty()
        });
        if !empty {
            return;
        }
        members.remove(group);
        // Under the members lock: no deploy can pick this group while it goes.
        let lock = self.group_lock(group);
        let _lifecycle = lock.lock().await;
        if let Err(e) = self.remove_group(group).await {
            tracing::warn!("remove {group}: {e}");
        }
    }

    async fn remove_group(&self, group: &str) -> ApiResult<()> {
        if let Some(c) = self.ctd.container(group).await? {
            self.ctd.stop_task(group, STOP_GRACE).await?;
            self.ctd.delete_container(group).await?;
            if !c.snapshot_key.is_empty() {
                self.ctd.remove_snapshot(&c.snapshot_key).await?;
            }
        }
        let _ = std::fs::remove_dir_all(self.socket_dir(group));
        self.groups.pools.lock().unwrap().remove(group);
        tracing::info!("removed {group}: no functions left in it");
        Ok(())
    }

    /// Makes sure `group`'s task runs and answers: creates its container the first time,
    /// starts a new task when the old one is gone.
    pub(super) async fn ensure_group(&self, group: &str) -> ApiResult<()> {
        let pool = self.group_pool(group);
        let probe = Invoker::in_pool(pool.clone(), "", 0, 1);
        if probe.ready().await {
            return Ok(());
        }
        let lock = self.group_lock(group);
        let _lifecycle = lock.lock().await;
        if probe.ready().await {
            return Ok(());
        }
        let start = Instant::now();
        let dir = self.socket_dir(group);
        function_owned_dir(&dir)?;
        let _ = std::fs::remove_file(dir.join(SOCKET_NAME));
        let _ = std::fs::remove_file(dir.join(ERROR_FILE_NAME));
        let snapshot_key = format!("wasmengine-{group}");
        if self.ctd.container(group).await?.is_none() {
            // Under a lease until the container holds the snapshot: the garbage collector
            // takes an unreferenced one at any time.
            let lease = self.ctd.create_lease(LEASE_TTL).await?;
            let created = async {
                if !self.ctd.snapshot_exists(&snapshot_key).await? {
                    self.ctd
                        .prepare_snapshot(&snapshot_key, "", Some(&lease))
                        .await?;
                }
                let mut labels = HashMap::new();
                labels.insert(LABEL_GROUP_SERVER.to_string(), group.to_string());
                let spec = self.group_spec(group, &dir);
                self.ctd
                    .create_container(group, "", labels, &spec, &snapshot_key)
                    .await
            }
            .await;
            // Cleanup the group's start need not wait for (see `deploy`).
            let ctd = self.ctd.clone();
            tokio::spawn(async move { ctd.delete_lease(&lease).await });
            created?;
        } else {
            self.ctd.stop_task(group, STOP_GRACE).await?;
        }
        pool.reset();
        let mounts = self.ctd.snapshot_mounts(&snapshot_key).await?;
        let stages = self.start_new_task(group, mounts).await?;
        tracing::info!("{group} started in {:?}: {stages}", start.elapsed());
        Ok(())
    }

    /// Whether `group` holds `name` now.
    pub(super) async fn group_holds(&self, name: &str, group: &str) -> bool {
        let probe = Invoker::in_pool(self.group_pool(group), "", 64, 1);
        matches!(
            probe.send("GET", &function_path(name), b"").await,
            Ok((200, _))
        )
    }

    /// Loads `name` into `group`: its configuration from its container's spec, its module
    /// from the image's content.
    pub(super) async fn load_into_group(&self, name: &str, group: &str) -> ApiResult<()> {
        let container = self
            .ctd
            .container(name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("function {name} is not deployed")))?;
        let module: ModuleRef = container
            .labels
            .get(LABEL_MODULE)
            .and_then(|m| serde_json::from_str(m).ok())
            .ok_or_else(|| ApiError::internal(format!("function {name} has no module label")))?;
        let spec: Value = container
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .ok_or_else(|| ApiError::internal(format!("function {name} has no spec")))?;
        let env: Vec<String> = spec["process"]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect();
        let wasm =
            image::read_module(&self.ctd, &module, self.defaults.image_caps.unpacked).await?;
        let probe = Invoker::in_pool(self.group_pool(group), "", 0, 1);
        match probe
            .send("PUT", &function_path(name), &encode_load(&env, &wasm))
            .await
        {
            Ok((200, _)) => Ok(()),
            Ok((_, body)) => {
                let why = serde_json::from_slice::<InvokeError>(&body)
                    .map(|e| e.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
                Err(ApiError::unprocessable(format!(
                    "function {name} cannot be loaded: {why}"
                )))
            }
            Err(e) => Err(ApiError::unavailable(format!(
                "function {name}: its group {group} is not answering: {e}"
            ))),
        }
    }

    /// Unloads `name` from `group` (idle; with `forget`, deleted: its log goes too); a group
    /// that is not running holds nothing anyway.
    pub(super) async fn unload_from_group(&self, name: &str, group: &str, forget: bool) {
        let probe = Invoker::in_pool(self.group_pool(group), "", 64, 1);
        let path = function_path(name) + if forget { "?forget" } else { "" };
        let _ = probe.send("DELETE", &path, b"").await;
    }

    /// Stops `group`'s task when every function in it is idle (unloaded): an idle group
    /// costs no process. The next call of any of them starts it again.
    pub(super) async fn stop_group_if_idle(&self, group: &str) -> ApiResult<()> {
        let all_idle =
            |names: &BTreeSet<String>| !names.is_empty() && names.iter().all(|n| self.is_idle(n));
        let names = self
            .members()
            .await?
            .get(group)
            .cloned()
            .unwrap_or_default();
        if !all_idle(&names) {
            return Ok(());
        }
        let lock = self.group_lock(group);
        let _lifecycle = lock.lock().await;
        // A call that woke one of them meanwhile cleared its marker before loading it.
        if !all_idle(&names) || self.ctd.task_state(group).await? != TaskState::Running {
            return Ok(());
        }
        self.ctd.stop_task(group, STOP_GRACE).await?;
        self.group_pool(group).reset();
        tracing::info!("{group}: every function in it is idle, task stopped");
        Ok(())
    }

    /// Deploy of a grouped function, once its image is resolved: its container, its group,
    /// its module loaded. Undone on failure.
    pub(super) async fn deploy_grouped(
        &self,
        req: &DeployRequest,
        image_name: &str,
        image: &image::ResolvedImage,
        stages: &mut Stages,
    ) -> ApiResult<()> {
        let name = req.function_name.as_str();
        let module = image::locate_module(&self.ctd, image).await?;
        stages.mark("locate module");
        let dir = self.socket_dir(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::internal(format!("create {}: {e}", dir.display())))?;
        let _ = std::fs::remove_file(dir.join("idle"));
        let group = self.join_group(name).await?;
        let spec = self.spec(req, image, &dir);
        let mut labels = labels(req, image);
        labels.insert(LABEL_GROUP.to_string(), group.clone());
        labels.insert(
            LABEL_MODULE.to_string(),
            serde_json::to_string(&module).expect("serialises"),
        );
        labels.insert(LABEL_GC_MODULE.to_string(), module.layer.clone());
        if let Err(e) = self
            .ctd
            .create_container(name, image_name, labels, &spec, "")
            .await
        {
            self.leave_group(name, &group).await;
            return Err(e);
        }
        stages.mark("container");
        let loaded = async {
            self.ensure_group(&group).await?;
            stages.mark("group ready");
            self.load_into_group(name, &group).await?;
            stages.mark("load");
            ApiResult::Ok(())
        }
        .await;
        if let Err(e) = loaded {
            let _ = self.ctd.delete_container(name).await;
            let _ = std::fs::remove_dir_all(&dir);
            self.leave_group(name, &group).await;
            return Err(e);
        }
        self.touch(name);
        Ok(())
    }
}
