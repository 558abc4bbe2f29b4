use berth_proto::cri::{RemoveImageRequest, RemoveImageResponse};

use super::Cri;
use crate::error::{Error, Result};

impl Cri {
    /// Removes the image with all its names; removing an absent image succeeds.
    pub async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
        let spec = req
            .image
            .ok_or_else(|| Error::InvalidArgument("RemoveImage: image spec is required".into()))?;
        if spec.image.is_empty() {
            return Err(Error::InvalidArgument("RemoveImage: image reference is empty".into()));
        }
        self.images.remove(&spec.image).await?;
        Ok(RemoveImageResponse {})
    }
}
