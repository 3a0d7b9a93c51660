//! The AWS SDK configuration shared by the EC2 provider and KMS envelope mode: the standard
//! credential chain and region (environment, profile, web identity, ECS/IMDS), `AWS_ENDPOINT_URL`
//! to point at another endpoint (moto in tests), and one HTTPS client (rustls with ring, so no C
//! toolchain is needed). Explicit overrides exist for tests, which must not mutate the process
//! environment.

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Overrides of the standard AWS chain. `Default` means "all from the environment".
#[derive(Clone, Default)]
pub struct AwsSettings {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Static credentials (access key id, secret key), for tests against moto.
    pub static_credentials: Option<(String, String)>,
}

impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("static_credentials", &self.static_credentials.is_some())
            .finish()
    }
}

impl AwsSettings {
    /// Settings for a moto server at `endpoint` with moto's dummy credentials.
    pub fn for_test_endpoint(endpoint: &str) -> Self {
        Self {
            endpoint_url: Some(endpoint.to_owned()),
            region: Some("us-east-1".into()),
            static_credentials: Some(("testing".into(), "testing".into())),
        }
    }
}

/// Loads the SDK configuration: the standard chain plus `settings`.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some((id, secret)) = &settings.static_credentials {
        loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
            id,
            secret,
            None,
            None,
            "molecule-static",
        ));
    }
    loader.load().await
}

/// An SDK error as `code: message`, without request or response bodies.
pub fn error_text<E>(e: &aws_sdk_ec2::error::SdkError<E>) -> String
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata,
{
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_owned(),
        _ => match e {
            aws_sdk_ec2::error::SdkError::TimeoutError(_) => "timeout".into(),
            aws_sdk_ec2::error::SdkError::DispatchFailure(_) => {
                "cannot reach the AWS endpoint".into()
            }
            _ => "AWS request failed".into(),
        },
    }
}
