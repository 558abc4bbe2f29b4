use berth_proto::cri::{ListImagesRequest, ListImagesResponse};

use super::Cri;
use super::image_convert::to_cri;
use crate::error::Result;

impl Cri {
    /// All images, or the one the filter names (none if it names no image).
    pub fn list_images(&self, req: ListImagesRequest) -> Result<ListImagesResponse> {
        let filter = req
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match filter {
            Some(r) => self.images.get(&r)?.iter().map(to_cri).collect(),
            None => self.images.list().iter().map(to_cri).collect(),
        };
        Ok(ListImagesResponse { images })
    }
}
