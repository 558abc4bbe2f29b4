//! `runtime.v1.RuntimeService` → [`Cri`]. The Stream* RPCs answer their List* twin's items in pages.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::cri::runtime_service_server::RuntimeService;
use berth_proto::cri::*;
use berth_proto::tonic::{self, Request, Response, Status};

use super::{Pages, pages, rpc};
use crate::cri::Cri;
use crate::error::Error;

#[derive(Debug)]
pub struct RuntimeAdapter(pub Arc<Cri>);

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for RuntimeAdapter {
    type GetContainerEventsStream = EventStream;
    type StreamPodSandboxesStream = Pages<StreamPodSandboxesResponse>;
    type StreamContainersStream = Pages<StreamContainersResponse>;
    type StreamContainerStatsStream = Pages<StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = Pages<StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = Pages<StreamPodSandboxMetricsResponse>;

    async fn version(&self, req: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        rpc!("Version", DEBUG, Ok(self.0.version(req.into_inner())))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        rpc!("Status", DEBUG, Ok(self.0.status(req.into_inner())))
    }

    async fn runtime_config(
        &self,
        req: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        rpc!("RuntimeConfig", DEBUG, Ok(self.0.runtime_config(req.into_inner())))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        rpc!("RunPodSandbox", INFO, self.0.run_pod_sandbox(req.into_inner()).await)
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        rpc!("StopPodSandbox", INFO, self.0.stop_pod_sandbox(req.into_inner()).await)
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        rpc!(
            "RemovePodSandbox",
            INFO,
            self.0.remove_pod_sandbox(req.into_inner()).await
        )
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        rpc!("PodSandboxStatus", DEBUG, self.0.pod_sandbox_status(req.into_inner()))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        rpc!("ListPodSandbox", DEBUG, self.0.list_pod_sandbox(req.into_inner()))
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        rpc!("CreateContainer", INFO, self.0.create_container(req.into_inner()).await)
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        rpc!("StartContainer", INFO, self.0.start_container(req.into_inner()).await)
    }

    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        rpc!("StopContainer", INFO, self.0.stop_container(req.into_inner()).await)
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        rpc!("RemoveContainer", INFO, self.0.remove_container(req.into_inner()).await)
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        rpc!("ListContainers", DEBUG, self.0.list_containers(req.into_inner()))
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        rpc!("ContainerStatus", DEBUG, self.0.container_status(req.into_inner()))
    }

    async fn exec_sync(&self, req: Request<ExecSyncRequest>) -> Result<Response<ExecSyncResponse>, Status> {
        let deadline = super::deadline(&req);
        rpc!("ExecSync", DEBUG, self.0.exec_sync(req.into_inner(), deadline).await)
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        rpc!("Exec", INFO, self.0.exec(req.into_inner()))
    }

    async fn attach(&self, req: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        rpc!("Attach", INFO, self.0.attach(req.into_inner()))
    }

    async fn port_forward(&self, req: Request<PortForwardRequest>) -> Result<Response<PortForwardResponse>, Status> {
        rpc!("PortForward", INFO, self.0.port_forward(req.into_inner()))
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        rpc!(
            "ReopenContainerLog",
            INFO,
            self.0.reopen_container_log(req.into_inner()).await
        )
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        rpc!(
            "UpdateRuntimeConfig",
            INFO,
            self.0.update_runtime_config(req.into_inner())
        )
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        rpc!(
            "UpdateContainerResources",
            INFO,
            self.0.update_container_resources(req.into_inner()).await
        )
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        rpc!("ContainerStats", DEBUG, self.0.container_stats(req.into_inner()).await)
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        rpc!(
            "ListContainerStats",
            DEBUG,
            self.0.list_container_stats(req.into_inner()).await
        )
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        rpc!(
            "PodSandboxStats",
            DEBUG,
            self.0.pod_sandbox_stats(req.into_inner()).await
        )
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        rpc!(
            "ListPodSandboxStats",
            DEBUG,
            self.0.list_pod_sandbox_stats(req.into_inner()).await
        )
    }

    async fn list_metric_descriptors(
        &self,
        req: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        rpc!(
            "ListMetricDescriptors",
            DEBUG,
            Ok(self.0.list_metric_descriptors(req.into_inner()))
        )
    }

    async fn list_pod_sandbox_metrics(
        &self,
        req: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        rpc!(
            "ListPodSandboxMetrics",
            DEBUG,
            self.0.list_pod_sandbox_metrics(req.into_inner()).await
        )
    }

    async fn get_container_events(&self, _req: Request<GetEventsRequest>) -> Result<Response<EventStream>, Status> {
        let events = self.0.container_events();
        rpc!(
            "GetContainerEvents",
            INFO,
            Ok::<EventStream, Error>(Box::pin(tokio_stream::StreamExt::map(events, Ok)))
        )
    }

    async fn stream_pod_sandboxes(
        &self,
        req: Request<StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let filter = req.into_inner().filter;
        rpc!(
            "StreamPodSandboxes",
            DEBUG,
            self.0
                .list_pod_sandbox(ListPodSandboxRequest { filter })
                .map(|r| pages(r.items, |pod_sandboxes| StreamPodSandboxesResponse { pod_sandboxes }))
        )
    }

    async fn stream_containers(
        &self,
        req: Request<StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let filter = req.into_inner().filter;
        rpc!(
            "StreamContainers",
            DEBUG,
            self.0
                .list_containers(ListContainersRequest { filter })
                .map(|r| pages(r.containers, |containers| StreamContainersResponse { containers }))
        )
    }

    async fn stream_container_stats(
        &self,
        req: Request<StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let filter = req.into_inner().filter;
        rpc!(
            "StreamContainerStats",
            DEBUG,
            self.0
                .list_container_stats(ListContainerStatsRequest { filter })
                .await
                .map(|r| pages(r.stats, |container_stats| StreamContainerStatsResponse {
                    container_stats
                }))
        )
    }

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let filter = req.into_inner().filter;
        rpc!(
            "StreamPodSandboxStats",
            DEBUG,
            self.0
                .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter })
                .await
                .map(|r| pages(r.stats, |pod_sandbox_stats| StreamPodSandboxStatsResponse {
                    pod_sandbox_stats
                }))
        )
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        rpc!(
            "StreamPodSandboxMetrics",
            DEBUG,
            self.0
                .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
                .await
                .map(
                    |r| pages(r.pod_metrics, |pod_sandbox_metrics| StreamPodSandboxMetricsResponse {
                        pod_sandbox_metrics
                    })
                )
        )
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        rpc!(
            "UpdatePodSandboxResources",
            INFO,
            self.0.update_pod_sandbox_resources(req.into_inner()).await
        )
    }

    async fn checkpoint_container(
        &self,
        req: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        rpc!(
            "CheckpointContainer",
            INFO,
            self.0.checkpoint_container(req.into_inner()).await
        )
    }
}
