use std::sync::Arc;

use berth_proto::cri::{StartContainerRequest, StartContainerResponse};
use berth_proto::shim::api;
use berth_proto::shim::protobuf::Message as _;

use super::Cri;
use crate::config::LogWriter;
use crate::crilog;
use crate::error::{Error, Result};
use crate::store::container::{Container, State};
use crate::store::now_ns;

impl Cri {
    /// Starts a created container: launches (or finds) the pod's shim, creates and starts the task
    /// and watches for its exit. A failure leaves the container Exited with reason StartError.
    pub async fn start_container(self: &Arc<Self>, req: StartContainerRequest) -> Result<StartContainerResponse> {
        let c = self.container(&req.container_id)?;
        if c.state != State::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not Created",
                c.id, c.state
            )));
        }
        match self.start_task(&c).await {
            Ok(()) => Ok(StartContainerResponse {}),
            Err(e) => {
                let turn = self.container_turn();
                let rec = self.containers().get(&c.id).cloned();
                if let Some(mut c) = rec {
                    c.reason = "StartError".into();
                    c.message = e.to_string();
                    c.exited(128, now_ns());
                    let sandbox = c.sandbox_id.clone();
                    let _ = self.save_container(&turn, c).map(drop);
                    drop(turn);
                    self.emit(
                        &req.container_id,
                        &sandbox,
                        berth_proto::cri::ContainerEventType::ContainerStoppedEvent,
                        None,
                    );
                }
                Err(e)
            }
        }
    }

    async fn start_task(self: &Arc<Self>, c: &Container) -> Result<()> {
        let (_, handler) = self.handler(&c.handler)?;
        let shim_bin = self.shim_binary(&handler.shim)?;
        // containerd's shims write their own log to a FIFO in the bundle, which the host must hold open.
        let shim_log = c.bundle.join("log");
        mkfifo(&shim_log)?;
        self.drain_shim_log(c);

        let t0 = std::time::Instant::now();
        let (stdout, stderr) = self.task_stdio(c, handler.log_writer).await?;
        // A pod's berth-shim is usually running already (launched with the pod): talk to it directly.
        let address = match self.shims.running_pod_shim(&shim_bin, &c.sandbox_id).await {
            Some(a) => a,
            None => self.shims.launch(&shim_bin, &c.bundle, &c.id).await?,
        };
        // Remember the shim at once, so removal reaches it even if the task never starts.
        {
            let turn = self.container_turn();
            let rec = self.containers().get(&c.id).cloned();
            if let Some(mut rec) = rec {
                rec.shim_address = address.clone();
                drop(self.save_container(&turn, rec)?);
            }
        }
        let shim = self.shim(&address, &c.id).await?;
        let launched = t0.elapsed();

        let create = self.create_request(c, &handler, stdout, stderr)?;
        shim.create(&create).await?;
        berth_image::crash::point("start.task_created");
        // runc has bound the host mounts berthd staged into the container's own mount namespace:
        // the host's copies can go (a staged clone would keep its source's submounts busy).
        if let Err(e) = crate::mounts::unmount_staged(&c.bundle) {
            tracing::warn!(id = %c.id, error = %e, "unmount the container's staged mounts");
        }
        let created = t0.elapsed();
        let start_time = now_ns();
        let started = shim.start(&c.id, "").await?;
        berth_image::crash::point("start.task_started");
        let task_started = t0.elapsed();

        let rec = self.record_started(c, started.pid, start_time)?;
        self.watch_exit(&rec, shim);
        tracing::info!(id = %c.id, pid = started.pid, "container started");
        tracing::debug!(
            id = %c.id,
            shim_us = launched.as_micros() as u64,
            create_us = (created - launched).as_micros() as u64,
            start_us = (task_started - created).as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "start timings"
        );
        Ok(())
    }

    /// The shim's CreateTask request: the bundle, stdio, and runc's options (binary, root, cgroup
    /// driver).
    fn create_request(
        &self,
        c: &Container,
        handler: &crate::config::Handler,
        stdout: String,
        stderr: String,
    ) -> Result<api::CreateTaskRequest> {
        let mut opts = berth_proto::shim::shim::oci::Options::new();
        opts.binary_name = handler.runtime.clone();
        opts.root = self.config.state.join("runc").display().to_string();
        // runc's systemd driver reads cgroupsPath as slice:prefix:name (see crate::cgroup).
        opts.systemd_cgroup = self.config.cgroup_driver == crate::config::CgroupDriver::Systemd;
        let mut any = berth_proto::shim::protobuf::well_known_types::any::Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = opts
            .write_to_bytes()
            .map_err(|e| Error::Internal(format!("encode runc options: {e}")))?;
        let mut create = api::CreateTaskRequest::new();
        create.id = c.id.clone();
        create.bundle = c.bundle.display().to_string();
        create.stdout = stdout;
        create.stderr = stderr;
        if c.config.stdin {
            // The shim holds a writer on it, so the process sees EOF only at CloseIO (Attach).
            let fifo = c.bundle.join("stdin");
            mkfifo(&fifo)?;
            create.stdin = fifo.display().to_string();
        }
        create.terminal = c.config.tty;
        if let Some(images) = &c.checkpoint {
            create.checkpoint = images.display().to_string();
        }
        create.options = Some(any).into();
        Ok(create)
    }

    /// Records the container Running (or, if its exit came first, its start time) and sends its
    /// events in order.
    fn record_started(&self, c: &Container, pid: u32, start_time: i64) -> Result<Container> {
        let pod_status = self.pod_status_for_event(&c.sandbox_id);
        let turn = self.container_turn();
        let rec = self.containers().get(&c.id).cloned();
        let mut rec = rec.ok_or_else(|| Error::NotFound(format!("container {} vanished while starting", c.id)))?;
        let quick = rec.state == State::Exited;
        if quick {
            // A quick process: its exit event came in before the Start reply.
            rec.pid = pid;
            rec.started_at = start_time;
        } else {
            rec.start(pid, start_time)?;
        }
        let store = self.save_container(&turn, rec.clone())?;
        self.emit_locked(
            &store,
            &c.id,
            &c.sandbox_id,
            berth_proto::cri::ContainerEventType::ContainerStartedEvent,
            pod_status.clone(),
        );
        if quick {
            // Its exit was recorded before it was Running, without an event: the event follows
            // here, in order.
            self.emit_locked(
                &store,
                &c.id,
                &c.sandbox_id,
                berth_proto::cri::ContainerEventType::ContainerStoppedEvent,
                pod_status,
            );
        }
        Ok(rec)
    }

    /// The stdio the shim is given: berth-shim writes the CRI log itself (`crilog://`); containerd
    /// shims get FIFOs that berthd copies into the log.
    async fn task_stdio(&self, c: &Container, writer: LogWriter) -> Result<(String, String)> {
        if c.log_path.as_os_str().is_empty() {
            return Ok((String::new(), String::new()));
        }
        if let Some(dir) = c.log_path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(Error::io(format!("create log directory {}", dir.display())))?;
        }
        match writer {
            LogWriter::Shim => {
                let uri = format!("crilog://{}", c.log_path.display());
                Ok((uri.clone(), uri))
            }
            LogWriter::Berthd => {
                let (out, err) = (c.bundle.join("stdout"), c.bundle.join("stderr"));
                mkfifo(&out)?;
                mkfifo(&err)?;
                self.copy_output(c).await?;
                Ok((out.display().to_string(), err.display().to_string()))
            }
        }
    }

    /// Copies a container's output FIFOs into its CRI log (containerd shims); also after a restart,
    /// for containers that kept running while berthd was away (their output waited in the FIFOs).
    pub(crate) async fn copy_output(&self, c: &Container) -> Result<()> {
        let log = crilog::open_log(&c.log_path)
            .await
            .map_err(Error::io(format!("open log {}", c.log_path.display())))?;
        let log = Arc::new(tokio::sync::Mutex::new(log));
        self.logs.lock().await.insert(c.id.clone(), log.clone());
        tokio::spawn(crilog::copy_fifo(c.bundle.join("stdout"), "stdout", log.clone()));
        tokio::spawn(crilog::copy_fifo(c.bundle.join("stderr"), "stderr", log));
        Ok(())
    }

    /// Keeps reading a containerd shim's own log FIFO (it dies if no one does).
    pub(crate) fn drain_shim_log(&self, c: &Container) {
        tokio::spawn(drain_shim_log(c.bundle.join("log"), c.id.clone()));
    }
}

fn mkfifo(p: &std::path::Path) -> Result<()> {
    match nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::Internal(format!("mkfifo {}: {e}", p.display()))),
    }
}

/// Reads a shim's own log FIFO into berthd's log, at debug level.
async fn drain_shim_log(fifo: std::path::PathBuf, id: String) {
    use tokio::io::AsyncBufReadExt as _;
    let Ok(rx) = tokio::net::unix::pipe::OpenOptions::new().open_receiver(&fifo) else {
        return;
    };
    let mut lines = tokio::io::BufReader::new(rx).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        tracing::debug!(container = %id, "shim: {l}");
    }
}
