//! containerd's CRI plugin, driven the way kubelet drives it: a private containerd with the
//! plugin on, our runtime registered as the `wasmengine` handler, a locally built sandbox
//! image, and a CRI v1 client over the plugin's gRPC socket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;
use wasmengine_api::image::{self, ImageSpec, Layout};

use crate::{add_layer, core_wat, set_config, Containerd};

/// The runtime handler a pod names (a RuntimeClass's `handler`).
pub const HANDLER: &str = "wasmengine";
/// CRI's own containerd namespace.
pub const NAMESPACE: &str = "k8s.io";
/// The sandbox image: a static busybox sleeping, built here (no registry is reachable).
pub const SANDBOX_IMAGE: &str = "localhost/wasmengine-pause:test";

/// containerd's config with the CRI plugin on; `dir` holds its root, state, socket and CNI
/// directories.
pub fn config_toml(dir: &Path, address: &Path, sandbox_image: &str) -> String {
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # This machine kind does not let root lower oom_score_adj, which a sandbox asks for.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}]
      runtime_type = "io.containerd.wasmengine.v1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni/bin"
    conf_dir = "{dir}/cni/net.d"
"#,
        dir = dir.display(),
        sock = address.display(),
    )
}

/// The sandbox image: `/bin/busybox sleep` for about 68 years (a pod's pause process must
/// never exit; CRI stops it with SIGKILL).
pub fn sandbox_image() -> Result<image::Image> {
    let mut img = image::build(&core_wat("fresh"), &ImageSpec::classic("unused.wasm"))?;
    let busybox =
        std::fs::read("/bin/busybox").context("busybox-static (scripts/install-deps.sh)")?;
    add_layer(&mut img, &[("bin/busybox", 0o755, &busybox)])?;
    set_config(&mut img, |config| {
        config["config"]["Entrypoint"] = serde_json::json!(["/bin/busybox", "sleep"]);
        config["config"]["Cmd"] = serde_json::json!(["2147483647"]);
    })?;
    Ok(img)
}

/// A private containerd with the CRI plugin, and a client of it.
pub struct Cri {
    pub containerd: Containerd,
    /// Where pods' logs go (kubelet's `/var/log/pods`).
    pub log_root: PathBuf,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

/// A running pod sandbox.
#[derive(Clone)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

impl Cri {
    /// Starts containerd with the CRI plugin and imports the sandbox image.
    pub fn start() -> Result<Cri> {
        let containerd = Containerd::start_with(
            |dir, address| config_toml(dir, address, SANDBOX_IMAGE),
            NAMESPACE,
        )?;
        containerd.import_image(&sandbox_image()?, Layout::Classic, SANDBOX_IMAGE)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let path = containerd.address.clone();
        let channel = rt.block_on(async move {
            tonic::transport::Endpoint::try_from("http://[::]:50051")?
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
                .context("connect to the CRI socket")
        })?;
        let log_root = containerd.dir.path().join("pods");
        let mut cri = Cri {
            containerd,
            log_root,
            rt,
            client: RuntimeServiceClient::new(channel),
        };
        // The plugin answers "not initialized" until it has loaded its state.
        let start = Instant::now();
        loop {
            match cri.status() {
                Ok(true) => break,
                _ if start.elapsed() > Duration::from_secs(20) => {
                    bail!("CRI not ready: {}", cri.containerd.log())
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Ok(cri)
    }

    /// Whether the runtime reports itself ready (network readiness does not matter to
    /// host-network pods).
    fn status(&mut self) -> Result<bool> {
        let mut client = self.client.clone();
        let status = self
            .rt
            .block_on(client.status(StatusRequest { verbose: false }))?;
        Ok(status.into_inner().status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "RuntimeReady" && c.status)
        }))
    }

    fn call<T, F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>>(
        &self,
        f: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> Result<T> {
        let client = self.client.clone();
        Ok(self.rt.block_on(f(client))?.into_inner())
    }

    /// Runs a host-network pod sandbox with `handler` (our `wasmengine`, or `runc`).
    pub fn run_pod(&self, name: &str, handler: &str) -> Result<Pod> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            // A host-network pod shares the host's UTS namespace: no hostname of its own.
            hostname: String::new(),
            log_directory: self
                .log_root
                .join(format!("default_{name}_uid-{name}"))
                .display()
                .to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        let id = self
            .call(|mut c| async move { c.run_pod_sandbox(req).await })?
            .pod_sandbox_id;
        Ok(Pod { id, config })
    }

    /// Creates a container in `pod` as kubelet would: its log at `<name>/<attempt>.log` in
    /// the pod's log directory, pid namespace of its own.
    pub fn create(&self, pod: &Pod, container: ContainerSpec) -> Result<String> {
        let name = container.name.clone();
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.clone(),
                attempt: container.attempt,
            }),
            image: Some(k8s_cri::v1::ImageSpec {
                image: container.image,
                ..Default::default()
            }),
            command: container.command,
            args: container.args,
            envs: container
                .env
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
            log_path: format!("{name}/{}.log", container.attempt),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: if container.share_pid {
                            NamespaceMode::Pod as i32
                        } else {
                            NamespaceMode::Container as i32
                        },
                        ..namespaces()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        Ok(self
            .call(|mut c| async move { c.create_container(req).await })?
            .container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        self.call(|mut c| async move { c.start_container(req).await })?;
        Ok(())
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.call(|mut c| async move { c.container_status(req).await })?
            .status
            .context("no status")
    }

    /// Waits for a container to exit, and gives its status.
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        let start = Instant::now();
        loop {
            let status = self.container_status(id)?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                bail!("{id} still {:?} after {timeout:?}", status.state);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stop_container(&self, id: &str, timeout_s: i64) -> Result<()> {
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout: timeout_s,
        };
        self.call(|mut c| async move { c.stop_container(req).await })?;
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.call(|mut c| async move { c.remove_container(req).await })?;
        Ok(())
    }

    /// Stops and removes a pod, as kubelet does when it is deleted.
    pub fn remove_pod(&self, pod: &Pod) -> Result<()> {
        let id = pod.id.clone();
        self.call(|mut c| async move {
            c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await
        })?;
        let id = pod.id.clone();
        self.call(|mut c| async move {
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        })?;
        Ok(())
    }
}

/// What a test chooses of a container's config.
#[derive(Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The pod's pid namespace (`shareProcessNamespace: true`) instead of one of its own.
    pub share_pid: bool,
}

/// kubelet's defaults for a host-network pod: the host's network, a pid namespace per
/// container, the pod's ipc.
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}
