use std::time::{SystemTime, UNIX_EPOCH};

use berth_proto::cri::{FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value};

use super::Cri;
use crate::error::{Error, Result};

impl Cri {
    /// Usage of the filesystem holding images. Containers' writable layers live on the same one.
    pub async fn image_fs_info(&self, _req: ImageFsInfoRequest) -> Result<ImageFsInfoResponse> {
        let images = self.images.clone();
        let usage = tokio::task::spawn_blocking(move || images.usage())
            .await
            .map_err(|e| Error::Internal(format!("image usage task: {e}")))??;
        let fs = FilesystemUsage {
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self.images.fs_root().display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: usage.bytes }),
            inodes_used: Some(UInt64Value { value: usage.inodes }),
        };
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        })
    }
}
