use berth_image::Credentials;
use berth_proto::cri::{AuthConfig, PullImageRequest, PullImageResponse};

use super::Cri;
use crate::error::{Error, Result};

impl Cri {
    /// Pulls the image and returns its ID as the image reference, as containerd does.
    pub async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse> {
        let image = super::image_ref(req.image, "PullImage")?;
        let creds = credentials(req.auth.as_ref())?;
        let img = self.images.pull(&image, creds).await;
        crate::sys::release_free_memory();
        let img = img?;
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
