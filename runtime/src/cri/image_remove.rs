use berth_proto::cri::{RemoveImageRequest, RemoveImageResponse};

use super::Cri;
use crate::error::Result;

impl Cri {
    /// Removes the image with all its names; removing an absent image succeeds.
    pub async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
        let image = super::image_ref(req.image, "RemoveImage")?;
        self.images.remove(&image).await?;
        crate::sys::release_free_memory();
        Ok(RemoveImageResponse {})
    }
}
