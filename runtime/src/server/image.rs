//! `runtime.v1.ImageService` → [`Cri`].

use std::sync::Arc;

use berth_proto::cri::image_service_server::ImageService;
use berth_proto::cri::*;
use berth_proto::tonic::{self, Request, Response, Status};

use super::{Pages, pages, rpc};
use crate::cri::Cri;

#[derive(Debug)]
pub struct ImageAdapter(pub Arc<Cri>);

#[tonic::async_trait]
impl ImageService for ImageAdapter {
    type StreamImagesStream = Pages<StreamImagesResponse>;

    async fn stream_images(
        &self,
        req: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let filter = req.into_inner().filter;
        rpc!(
            "StreamImages",
            DEBUG,
            self.0
                .list_images(ListImagesRequest { filter })
                .map(|r| pages(r.images, |images| StreamImagesResponse { images }))
        )
    }

    async fn list_images(&self, req: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        rpc!("ListImages", DEBUG, self.0.list_images(req.into_inner()))
    }

    async fn image_status(&self, req: Request<ImageStatusRequest>) -> Result<Response<ImageStatusResponse>, Status> {
        rpc!("ImageStatus", DEBUG, self.0.image_status(req.into_inner()))
    }

    async fn pull_image(&self, req: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
        let deadline = super::deadline(&req);
        let req = req.into_inner();
        let image = req.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        tracing::info!(%image, "PullImage");
        rpc!("PullImage", INFO, self.0.pull_image(req, deadline).await)
    }

    async fn remove_image(&self, req: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
        rpc!("RemoveImage", INFO, self.0.remove_image(req.into_inner()).await)
    }

    async fn image_fs_info(&self, req: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
        rpc!("ImageFsInfo", DEBUG, self.0.image_fs_info(req.into_inner()).await)
    }
}
