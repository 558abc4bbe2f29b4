use std::collections::HashMap;

use berth_proto::cri::{ImageStatusRequest, ImageStatusResponse};

use super::Cri;
use super::image_convert::to_cri;
use crate::error::Result;

impl Cri {
    /// The image, or an empty response if it is not present (not an error, as the CRI says).
    /// `verbose` adds `info` with the image config and the layers, as containerd's `info` key does.
    pub fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse> {
        let image = super::image_ref(req.image, "ImageStatus")?;
        let Some(img) = self.images.get(&image)? else {
            return Ok(ImageStatusResponse::default());
        };
        let mut info = HashMap::new();
        if req.verbose {
            let doc = serde_json::json!({
                "imageSpec": img.config,
                "manifest": img.manifest.to_string(),
                "layers": img.layers,
                "chainID": img.layers.last().map(|l| l.diff_id.to_string()),
            });
            info.insert("info".to_string(), doc.to_string());
        }
        Ok(ImageStatusResponse {
            image: Some(to_cri(&img)),
            info,
        })
    }
}
