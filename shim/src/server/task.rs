//! The ttrpc edge of the task service: unwraps each request, calls [`Shim`], converts the error.

use std::sync::Arc;

use async_trait::async_trait;
use berth_proto::shim::api;
use berth_proto::shim::shim_async::Task;
use berth_proto::shim::ttrpc::{self, r#async::TtrpcContext};

use crate::error::Error;
use crate::task::Shim;

/// Implements the generated `Task` trait over the shim core.
#[derive(Debug, Clone)]
pub struct TaskService {
    shim: Arc<Shim>,
}

impl TaskService {
    pub fn new(shim: Arc<Shim>) -> TaskService {
        TaskService { shim }
    }
}

/// Logs a failed call (mutating calls at warn, queries at debug) and converts the error.
fn status<T>(method: &str, id: &str, quiet: bool, r: Result<T, Error>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        if quiet {
            log::debug!("{method} {id}: {e}");
        } else {
            log::warn!("{method} {id}: {e}");
        }
        e.into()
    })
}

fn unimplemented<T>(what: &str) -> ttrpc::Result<T> {
    Err(Error::Unimplemented(format!("berth-shim does not implement {what}")).into())
}

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        let id = req.id.clone();
        status("State", &id, true, self.shim.state(req).await)
    }

    async fn create(&self, _: &TtrpcContext, req: api::CreateTaskRequest) -> ttrpc::Result<api::CreateTaskResponse> {
        let id = req.id.clone();
        status("Create", &id, false, self.shim.create(req).await)
    }

    async fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        let id = req.id.clone();
        status("Start", &id, false, self.shim.start(req).await)
    }

    async fn delete(&self, _: &TtrpcContext, req: api::DeleteRequest) -> ttrpc::Result<api::DeleteResponse> {
        let id = req.id.clone();
        status("Delete", &id, false, self.shim.delete(req).await)
    }

    async fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        let id = req.id.clone();
        status("Pids", &id, true, self.shim.pids(req).await)
    }

    async fn pause(&self, _: &TtrpcContext, _: api::PauseRequest) -> ttrpc::Result<api::Empty> {
        unimplemented("Pause")
    }

    async fn resume(&self, _: &TtrpcContext, _: api::ResumeRequest) -> ttrpc::Result<api::Empty> {
        unimplemented("Resume")
    }

    async fn checkpoint(&self, _: &TtrpcContext, req: api::CheckpointTaskRequest) -> ttrpc::Result<api::Empty> {
        let id = req.id.clone();
        status("Checkpoint", &id, false, self.shim.checkpoint(req).await).map(|()| api::Empty::new())
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<api::Empty> {
        let id = req.id.clone();
        // Killing a finished process is routine (NotFound), not worth a warning.
        let r = self.shim.kill(req).await;
        let quiet = matches!(r, Err(Error::NotFound(_)));
        status("Kill", &id, quiet, r).map(|()| api::Empty::new())
    }

    async fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<api::Empty> {
        let id = req.id.clone();
        status("Exec", &id, false, self.shim.exec(req).await).map(|()| api::Empty::new())
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<api::Empty> {
        let id = req.id.clone();
        status("ResizePty", &id, false, self.shim.resize_pty(req).await).map(|()| api::Empty::new())
    }

    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<api::Empty> {
        let id = req.id.clone();
        status("CloseIO", &id, false, self.shim.close_io(req).await).map(|()| api::Empty::new())
    }

    async fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<api::Empty> {
        let id = req.id.clone();
        status("Update", &id, false, self.shim.update(req).await).map(|()| api::Empty::new())
    }

    async fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        let id = req.id.clone();
        status("Wait", &id, true, self.shim.wait(req).await)
    }

    async fn stats(&self, _: &TtrpcContext, _: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        unimplemented("Stats (read the container's cgroup)")
    }

    async fn connect(&self, _: &TtrpcContext, req: api::ConnectRequest) -> ttrpc::Result<api::ConnectResponse> {
        let id = req.id.clone();
        status("Connect", &id, true, self.shim.connect(req).await)
    }

    async fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> ttrpc::Result<api::Empty> {
        let id = req.id.clone();
        status("Shutdown", &id, false, self.shim.shutdown(req).await).map(|()| api::Empty::new())
    }
}
