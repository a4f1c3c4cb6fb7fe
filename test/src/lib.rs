//! Test harness for end-to-end tests against real services:
//! - [`Containerd`]: a private containerd (the system binary) with its own root, state and
//!   socket under a temp dir, our shim on its `PATH`, stopped (and its leftovers removed) on
//!   drop;
//! - [`Registry`]: Debian's `docker-registry` on a free 127.0.0.1 port;
//! - fixtures: the sample functions from `make apps` and C/WAT test modules, packaged as images
//!   with `wasmengine_api::image`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wasmengine_api::image::{self, ImageSpec};

pub mod cri;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where cargo put the release binaries (the shim, the engine).
pub fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("release")
}

pub const SHIM_BINARY: &str = "containerd-shim-wasmengine-v1";
pub const RUNTIME: &str = "io.containerd.wasmengine.v1";

/// A sample function built by `make apps`.
pub fn app(name: &str) -> Vec<u8> {
    let path = workspace().join("build/apps").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `make apps`)", path.display()))
}

/// A test fixture built by `make apps` from `test/fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = workspace()
        .join("build/fixtures")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `make apps`)", path.display()))
}

/// A free TCP port on 127.0.0.1 (free when asked; tests accept the small race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > timeout {
            bail!("{what} not ready after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A private containerd.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub address: PathBuf,
    pub namespace: String,
    child: Child,
}

impl Containerd {
    /// Starts containerd with our shim's directory first on its `PATH`.
    pub fn start() -> Result<Containerd> {
        Containerd::start_with(
            |dir, address| {
                wasm_engine::embedded::config_toml(&dir.join("root"), &dir.join("state"), address)
            },
            // A namespace per test process keeps what parallel tests leave apart.
            &format!("wasmengine-test-{}", std::process::id()),
        )
    }

    /// Starts containerd on the config `config(dir, address)` gives (its root and state must
    /// lie in `dir`), for `ctr` in `namespace`.
    pub fn start_with(
        config: impl FnOnce(&Path, &Path) -> String,
        namespace: &str,
    ) -> Result<Containerd> {
        let shim = release_dir().join(SHIM_BINARY);
        if !shim.exists() {
            bail!("{} is missing: build it first (make build)", shim.display());
        }
        let dir = tempfile::Builder::new()
            .prefix("wasmengine-ctd-")
            .tempdir()?;
        let address = dir.path().join("containerd.sock");
        std::fs::write(dir.path().join("config.toml"), config(dir.path(), &address))?;
        let child = spawn_containerd(dir.path())?;
        let c = Containerd {
            dir,
            address,
            namespace: namespace.to_string(),
            child,
        };
        wait_for("containerd", Duration::from_secs(20), || {
            c.ctr(&["version"])
                .map(|o| o.status.success())
                .unwrap_or(false)
        })?;
        Ok(c)
    }

    /// Stops containerd (SIGTERM) and waits for it; shims and their tasks keep running.
    pub fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills containerd with SIGKILL, as a crash would; shims and tasks are left as they are.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Processes in this containerd's task cgroups (`/<namespace>/<id>`): what the tasks run,
    /// outside the shims.
    pub fn task_processes(&self) -> Vec<u32> {
        let needle = format!(":/{}/", self.namespace);
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            if cgroup.contains(&needle) {
                pids.push(pid);
            }
        }
        pids
    }

    /// The shims' runtime state directory of this containerd's namespace, if it exists: the
    /// shim names it after the namespace and the directory that holds the task bundles.
    pub fn runtime_state_dirs(&self) -> Vec<PathBuf> {
        let bundles = self
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace);
        let hash = wasm_engine::embedded::path_hash(&bundles);
        let dir =
            Path::new("/run/containerd/wasmengine").join(format!("{}-{hash:08x}", self.namespace));
        if dir.exists() {
            vec![dir]
        } else {
            Vec::new()
        }
    }

    /// The sockets of this containerd's shims, as each shim's bundle records them.
    pub fn shim_sockets(&self) -> Vec<PathBuf> {
        let tasks = self
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace);
        std::fs::read_dir(tasks)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
            .map(|a| PathBuf::from(a.trim().trim_start_matches("unix://")))
            .collect()
    }

    /// Starts containerd again on the same root, state and socket after [`Containerd::stop`].
    pub fn resume(&mut self) -> Result<()> {
        self.child = spawn_containerd(self.dir.path())?;
        wait_for("containerd", Duration::from_secs(20), || {
            self.ctr(&["version"])
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }

    /// Runs `ctr` against this containerd, in the test namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run ctr")
    }

    /// Runs `ctr` and fails unless it succeeds; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctr(args)?;
        if !out.status.success() {
            bail!(
                "ctr {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The directory `ctr` should put stdio FIFOs in (so nothing lands in /run/containerd).
    pub fn fifo_dir(&self) -> String {
        self.dir.path().join("fifo").display().to_string()
    }

    /// containerd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Imports an image archive (`ctr image import`), `extra` as further flags.
    pub fn import(&self, archive: &Path, extra: &[&str]) -> Result<String> {
        let path = archive.display().to_string();
        let mut args = vec!["image", "import"];
        args.extend_from_slice(extra);
        args.push(&path);
        self.ctr_ok(&args)
    }

    /// Builds an image for `wasm` and imports it under `reference`.
    pub fn import_wasm(&self, wasm: &[u8], spec: &ImageSpec, reference: &str) -> Result<()> {
        let image = image::build(wasm, spec)?;
        self.import_image(&image, spec.layout, reference)
    }

    /// Imports `image` (of `layout`) under `reference`.
    pub fn import_image(
        &self,
        image: &image::Image,
        layout: image::Layout,
        reference: &str,
    ) -> Result<()> {
        let archive = self
            .dir
            .path()
            .join(format!("{}.tar", image.manifest.digest.replace(':', "-")));
        image.write_archive(std::fs::File::create(&archive)?, reference)?;
        let extra: &[&str] = match layout {
            image::Layout::Classic => &[],
            image::Layout::Artifact => &["--no-unpack", "--all-platforms"],
        };
        self.import(&archive, extra)?;
        Ok(())
    }

    /// Shim processes started for this containerd (their command line names our address).
    pub fn shim_pids(&self) -> Vec<u32> {
        let needle = self.address.display().to_string();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(SHIM_BINARY) && cmdline.contains(&needle) {
                pids.push(pid);
            }
        }
        pids
    }

    /// The shim servers among [`Containerd::shim_pids`]: the processes containerd talks to,
    /// not the zygotes and container processes they fork (whose parent is a shim process).
    pub fn shim_servers(&self) -> Vec<u32> {
        let pids = self.shim_pids();
        let parent = |pid: u32| -> Option<u32> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces, the last ')' ends it.
            stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
        };
        // A container's own process whose shim was killed has init as its parent too: it is
        // no server (its name is youki's, not the shim's).
        let is_shim = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "containerd-shim")
        };
        pids.iter()
            .copied()
            .filter(|p| parent(*p).is_some_and(|pp| !pids.contains(&pp)) && is_shim(*p))
            .collect()
    }

    /// Mounts under this containerd's state or root.
    pub fn mounts(&self) -> Vec<String> {
        let dir = self.dir.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&dir))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Their bundles go with their tasks: read where the shims listen first.
        let sockets = self.shim_sockets();
        // Remove what tests left, so no shim outlives the test.
        if let Ok(tasks) = self.ctr_ok(&["task", "ls", "-q"]) {
            for id in tasks.lines().filter(|l| !l.is_empty()) {
                let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
                let _ = self.ctr(&["task", "delete", "-f", id]);
            }
        }
        if let Ok(containers) = self.ctr_ok(&["container", "ls", "-q"]) {
            for id in containers.lines().filter(|l| !l.is_empty()) {
                let _ = self.ctr(&["container", "delete", id]);
            }
        }
        // A shim server whose tasks are gone exits by itself and removes its socket; one
        // killed here would leave it in /run/containerd/s (outside this containerd's
        // directories), so give them a moment, then kill what is left and remove the
        // sockets the shims' bundles named.
        let patience = Instant::now() + Duration::from_secs(1);
        while !self.shim_servers().is_empty() && Instant::now() < patience {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in self.shim_pids() {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        self.stop();
        for dir in self.runtime_state_dirs() {
            let _ = std::fs::remove_dir_all(dir);
        }
        for m in self.mounts().iter().rev() {
            if let Some(point) = m.split(' ').nth(4) {
                let c = std::ffi::CString::new(point).unwrap();
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// containerd on the config [`Containerd::start`] wrote in `dir`, logging to `dir`.
fn spawn_containerd(dir: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))?;
    let path = format!(
        "{}:{}",
        release_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("PATH", path)
        // The shim's precompiled classic modules stay with this containerd.
        .env("WASMENGINE_SHIM_CACHE_DIR", dir.join("shim-cache"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start containerd (apt-get install containerd)")
}

/// Changes a classic image's config (`f` edits its JSON), keeping the manifest in step.
pub fn set_config(img: &mut image::Image, f: impl FnOnce(&mut serde_json::Value)) -> Result<()> {
    let mut config: serde_json::Value = serde_json::from_slice(&img.config.data)?;
    f(&mut config);
    img.config = blob(&img.config.media_type, serde_json::to_vec(&config)?);
    let mut manifest: serde_json::Value = serde_json::from_slice(&img.manifest.data)?;
    manifest["config"] = img.config.descriptor();
    manifest["layers"] = img.layers.iter().map(|l| l.descriptor()).collect();
    img.manifest = blob(&img.manifest.media_type, serde_json::to_vec(&manifest)?);
    Ok(())
}

fn blob(media_type: &str, data: Vec<u8>) -> image::Blob {
    image::Blob {
        media_type: media_type.to_string(),
        digest: image::sha256_digest(&data),
        data,
    }
}

/// Adds a layer to a classic image: `files` (path, mode, contents) in a gzipped tar, on top.
pub fn add_layer(img: &mut image::Image, files: &[(&str, u32, &[u8])]) -> Result<()> {
    use std::io::Write;
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data)?;
    }
    let tar = b.into_inner()?;
    let diff_id = image::sha256_digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    let media = img.layers[0].media_type.clone();
    img.layers.push(blob(&media, gz.finish()?));
    let mut pushed = Ok(());
    set_config(img, |config| {
        match config["rootfs"]["diff_ids"].as_array_mut() {
            Some(ids) => ids.push(diff_id.into()),
            None => pushed = Err(anyhow::anyhow!("config without diff_ids")),
        }
    })?;
    pushed
}

/// Debian's `docker-registry` on 127.0.0.1.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The account every request must present (htpasswd, Basic auth), if any.
    pub user: Option<(String, String)>,
    child: Child,
}

impl Registry {
    /// A registry open to anyone.
    pub fn start() -> Result<Registry> {
        Registry::start_with(None)
    }

    /// A registry that answers only `user` with `password` (Basic auth from an htpasswd file).
    pub fn start_with_user(user: &str, password: &str) -> Result<Registry> {
        Registry::start_with(Some((user.to_string(), password.to_string())))
    }

    fn start_with(user: Option<(String, String)>) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("wasmengine-reg-")
            .tempdir()?;
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((name, password)) = &user {
            let htpasswd = dir.path().join("htpasswd");
            // The lowest cost: every request checks it, and this is a test account.
            let hash = bcrypt::hash(password, 4)?;
            std::fs::write(&htpasswd, format!("{name}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wasmengine-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start docker-registry (apt-get install docker-registry)")?;
        let r = Registry {
            dir,
            port,
            user,
            child,
        };
        wait_for("registry", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(r)
    }

    /// A docker `config.json` (in a new directory, for `DOCKER_CONFIG`) holding this
    /// registry's account.
    pub fn docker_config(&self) -> Result<tempfile::TempDir> {
        use base64::Engine as _;
        let (name, password) = self.user.as_ref().context("registry has no account")?;
        let dir = tempfile::tempdir()?;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::json!({"auths": {self.host(): {"auth": auth}}}).to_string(),
        )?;
        Ok(dir)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes an image for `wasm` as `host/name:tag` with skopeo (from an OCI layout);
    /// `v2s2` converts to Docker schema-2 media types on the way, as `docker push` would.
    pub fn push_wasm(
        &self,
        wasm: &[u8],
        spec: &ImageSpec,
        name_tag: &str,
        v2s2: bool,
    ) -> Result<String> {
        let reference = format!("{}/{name_tag}", self.host());
        let image = image::build(wasm, spec)?;
        let layout = tempfile::tempdir()?;
        image.write_layout(layout.path(), &reference)?;
        let tag = name_tag.rsplit(':').next().unwrap_or("latest");
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--dest-tls-verify=false"]);
        if v2s2 {
            cmd.args(["--format", "v2s2"]);
        }
        if let Some((name, password)) = &self.user {
            cmd.arg(format!("--dest-creds={name}:{password}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.path().display()))
            .arg(format!("docker://{reference}"))
            .output()
            .context("run skopeo (apt-get install skopeo)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(reference)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WAT test module of the execution core (`core/tests/wat/NAME.wat`), assembled.
pub fn core_wat(name: &str) -> Vec<u8> {
    let path = workspace()
        .join("core/tests/wat")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A WASI preview 1 command wrapped as a preview 2 command component, with wasmtime's adapter.
pub fn component(module: &[u8]) -> Vec<u8> {
    use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER as ADAPTER;
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|e| e.adapter("wasi_snapshot_preview1", ADAPTER))
        .and_then(|e| e.validate(true).encode())
        .expect("wrap a WASI command as a component")
}

/// One HTTP/1.1 request over a unix socket (a fresh connection); returns status and body.
pub fn http_unix(socket: &Path, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    use std::io::Write;
    use wasmengine_api::http1::{self, Kind};
    let mut conn = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect {}", socket.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.write_all(&http1::request(method, path, "", body, true))?;
    let mut reader = std::io::BufReader::new(conn);
    let head = http1::read_head(&mut reader, Kind::Response)?.context("no answer")?;
    let body = http1::read_body(&mut reader, head.content_length, 64 << 20)?;
    Ok((head.status, body))
}

/// Status and body (de-chunked if need be) of a whole HTTP/1.1 response.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of response head")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let body = &raw[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        Ok((status, dechunk(body)))
    } else {
        Ok((status, body.to_vec()))
    }
}

/// Waits until `cond` holds, polling; false if it did not within `timeout`.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for("condition", timeout, &mut cond).is_ok()
}

/// The engine binary (`wasm_engine`) running against a containerd, on a free loopback port,
/// with its own data directory.
pub struct Engine {
    pub addr: std::net::SocketAddr,
    pub data_dir: tempfile::TempDir,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<Child>,
}

impl Engine {
    /// Starts the engine on `containerd` (in the test namespace); `extra` flags appended.
    pub fn start(containerd: &Containerd, extra: &[&str]) -> Result<Engine> {
        Engine::start_with_env(containerd, extra, &[])
    }

    /// [`Engine::start`] with extra environment variables for the engine process.
    pub fn start_with_env(
        containerd: &Containerd,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Engine> {
        let mut args = vec![
            "--containerd-address".to_string(),
            containerd.address.display().to_string(),
            "--namespace".to_string(),
            containerd.namespace.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let envs = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Engine::launch(args, envs)
    }

    /// Starts the engine with exactly `args` (plus listen address and data dir).
    pub fn start_with(args: Vec<String>) -> Result<Engine> {
        Engine::launch(args, Vec::new())
    }

    fn launch(args: Vec<String>, envs: Vec<(String, String)>) -> Result<Engine> {
        let data_dir = tempfile::Builder::new().prefix("we-eng-").tempdir()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut e = Engine {
            addr,
            data_dir,
            args,
            envs,
            child: None,
        };
        e.spawn()?;
        Ok(e)
    }

    fn spawn(&mut self) -> Result<()> {
        let binary = release_dir().join("wasm_engine");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join("engine.log"))?;
        let child = Command::new(&binary)
            .args(&self.args)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .env("RUST_LOG", "wasm_engine=debug")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {} (make build)", binary.display()))?;
        self.child = Some(child);
        let addr = self.addr;
        wait_for("engine", Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).is_ok()
        })
        .with_context(|| format!("engine log:\n{}", self.log()))
    }

    /// The engine's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("engine.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the engine with SIGKILL (nothing it could clean up).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the engine to exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(40) {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Starts the engine again with the same flags, port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// [`Engine::restart`] without the switch `flag` (one that takes no value).
    pub fn restart_without(&mut self, flag: &str) -> Result<()> {
        self.kill9();
        self.args.retain(|a| a != flag);
        self.spawn()
    }

    /// One request; status and body text. `headers` as (name, value).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, String)> {
        http_tcp(self.addr, method, path, headers, body)
    }

    /// POST with a JSON body, the original text form back.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        self.request("POST", path, &[], body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("POST {path}: {e:#}\nengine log:\n{}", self.log()))
    }

    /// POST with a JSON body and `Accept: application/json`.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, text) = self
            .request(
                "POST",
                path,
                &[("accept", "application/json")],
                body.to_string().as_bytes(),
            )
            .unwrap_or_else(|e| panic!("POST {path}: {e:#}"));
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {text}"));
        (status, v)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }

    /// Deploys and fails the test unless it succeeds.
    pub fn deploy(&self, body: serde_json::Value) {
        let (status, text) = self.post("/function/deploy", &body);
        assert_eq!(
            status,
            200,
            "deploy {body}: {text}\nengine log:\n{}",
            self.log()
        );
    }

    /// Invokes; status and the JSON answer.
    pub fn invoke(&self, name: &str, args: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_json(
            "/function/invoke",
            &serde_json::json!({"function_name": name, "args": args}),
        )
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill9();
        // A private containerd this engine started keeps its state on /run (see
        // `wasm_engine::embedded::state_dir`): gone with it, unless it still runs.
        let pid_file = self.data_dir.path().join("containerd/containerd.pid");
        let running = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            // SAFETY: signal 0 only checks that the process exists.
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !running {
            let _ = std::fs::remove_dir_all(wasm_engine::embedded::state_dir(self.data_dir.path()));
        }
    }
}

/// One HTTP/1.1 request over TCP (a fresh connection); status and body text.
pub fn http_tcp(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    // A server may answer (413) before reading a large body: ignore a failed write then.
    let _ = conn.write_all(body);
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    let (status, body) = parse_response(&raw)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}
