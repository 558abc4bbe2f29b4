use berth_proto::cri::{RemoveImageRequest, RemoveImageResponse};

use super::Cri;
use crate::error::{Error, Result};

impl Cri {
    /// Removes the image with all its names; removing an absent image succeeds. An image mounted
    /// as an image volume by a container that still exists is refused (FailedPrecondition): its
    /// layers are that container's mount.
    pub async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
        let image = super::image_ref(req.image, "RemoveImage")?;
        if let Some(img) = self.images.get(&image)? {
            let id = img.id.to_string();
            let user = self
                .containers()
                .all()
                .find(|c| c.image_volumes.contains(&id))
                .map(|c| c.id.clone());
            if let Some(c) = user {
                return Err(Error::FailedPrecondition(format!(
                    "RemoveImage {image:?}: the image is mounted as an image volume by container {c}"
                )));
            }
        }
        self.images.remove(&image).await?;
        crate::sys::release_free_memory();
        Ok(RemoveImageResponse {})
    }
}
