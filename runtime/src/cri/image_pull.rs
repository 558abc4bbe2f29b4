use std::time::Duration;

use berth_image::Credentials;
use berth_proto::cri::{AuthConfig, PullImageRequest, PullImageResponse};

use super::Cri;
use crate::error::{Error, Result};

impl Cri {
    /// Pulls the image and returns its ID as the image reference, as containerd does. The pull runs
    /// in a task of its own: a client that gives up (its deadline passes: DeadlineExceeded; or it
    /// goes away) leaves it to finish, so no unpack is cut off halfway and the retry finds the image.
    pub async fn pull_image(&self, req: PullImageRequest, deadline: Option<Duration>) -> Result<PullImageResponse> {
        let image = super::image_ref(req.image, "PullImage")?;
        let creds = credentials(req.auth.as_ref())?;
        let images = self.images.clone();
        let name = image.clone();
        let pull = tokio::spawn(async move {
            let img = images.pull(&name, creds).await;
            crate::sys::release_free_memory();
            img
        });
        let joined = match deadline {
            None => pull.await,
            Some(d) => tokio::time::timeout(d, pull).await.map_err(|_| {
                Error::DeadlineExceeded(format!(
                    "PullImage {image:?}: deadline of {d:?} exceeded (the pull goes on in the background)"
                ))
            })?,
        };
        let img = joined.map_err(|e| Error::Internal(format!("pull task: {e}")))??;
        Ok(PullImageResponse {
            image_ref: img.id.to_string(),
        })
    }
}

fn credentials(auth: Option<&AuthConfig>) -> Result<Credentials> {
    let Some(a) = auth else {
        return Ok(Credentials::default());
    };
    let (mut username, mut password) = (a.username.clone(), a.password.clone());
    if !a.auth.is_empty() {
        let (u, p) = Credentials::from_auth_field(&a.auth)
            .ok_or_else(|| Error::InvalidArgument("PullImage: auth is not base64 of user:password".into()))?;
        username = u;
        password = p;
    }
    Ok(Credentials {
        username,
        password,
        identity_token: a.identity_token.clone(),
        registry_token: a.registry_token.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_forms() {
        assert_eq!(credentials(None).unwrap(), Credentials::default());
        let c = credentials(Some(&AuthConfig {
            auth: "dTpw".into(), // u:p
            ..Default::default()
        }))
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let c = credentials(Some(&AuthConfig {
            username: "a".into(),
            password: "b".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("a", "b"));
        assert!(
            credentials(Some(&AuthConfig {
                auth: "%%%".into(),
                ..Default::default()
            }))
            .is_err()
        );
    }
}
