//! Sealing secrets at rest, in one of two modes:
//! - static: AES-256-GCM under `SECRETS_ENCRYPTION_KEY` (format version 1);
//! - KMS (`KMS_KEY_ARN`): a fresh data key per secret from `GenerateDataKey`, bound to the org
//!   and field by the KMS encryption context, its wrapped form stored with the ciphertext (format
//!   version 2).
//!
//! Opening dispatches on the version byte, so rows written in static mode stay readable after a
//! switch to KMS mode as long as the static key is still configured. Plaintext data keys live
//! only for the duration of one call and are never logged.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use molecule_shared::crypto::{
    sealed_version, EncryptionKey, SealError, WrappedEnvelope, VERSION_KMS, VERSION_STATIC_KEY,
};
use molecule_shared::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("KMS {op} failed: {reason}")]
    Kms { op: &'static str, reason: String },
    #[error("value was sealed with the static key, which is not configured (set SECRETS_ENCRYPTION_KEY next to KMS_KEY_ARN to read it)")]
    NoStaticKey,
}

#[derive(Clone)]
pub enum Keyring {
    Static(EncryptionKey),
    Kms {
        client: aws_sdk_kms::Client,
        key_arn: String,
        /// Opens version 1 rows written before the switch to KMS.
        static_fallback: Option<EncryptionKey>,
    },
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keyring::Static(_) => f.write_str("Keyring::Static"),
            Keyring::Kms {
                key_arn,
                static_fallback,
                ..
            } => f
                .debug_struct("Keyring::Kms")
                .field("key_arn", key_arn)
                .field("static_fallback", &static_fallback.is_some())
                .finish(),
        }
    }
}

fn kms_error<E>(op: &'static str, e: aws_sdk_kms::error::SdkError<E>) -> KeyringError
where
    E: aws_sdk_kms::error::ProvideErrorMetadata,
{
    use aws_sdk_kms::error::ProvideErrorMetadata;
    let reason = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => "request failed".into(),
    };
    KeyringError::Kms { op, reason }
}

impl Keyring {
    /// A KMS keyring with a client built from `settings`.
    pub async fn kms(
        settings: &crate::aws::AwsSettings,
        key_arn: String,
        static_fallback: Option<EncryptionKey>,
    ) -> Keyring {
        let sdk = crate::aws::sdk_config(settings).await;
        Keyring::Kms {
            client: aws_sdk_kms::Client::new(&sdk),
            key_arn,
            static_fallback,
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Keyring::Static(_) => "static",
            Keyring::Kms { .. } => "kms",
        }
    }

    /// Encrypts `plaintext` for `owner` (an org id) and `field`.
    pub async fn seal(
        &self,
        owner: &str,
        field: &str,
        plaintext: &str,
    ) -> Result<String, KeyringError> {
        match self {
            Keyring::Static(key) => Ok(key.seal(owner, field, plaintext)),
            Keyring::Kms {
                client, key_arn, ..
            } => {
                let out = client
                    .generate_data_key()
                    .key_id(key_arn)
                    .key_spec(DataKeySpec::Aes256)
                    .encryption_context("org_id", owner)
                    .encryption_context("field", field)
                    .send()
                    .await
                    .map_err(|e| kms_error("GenerateDataKey", e))?;
                let bad = |what: &str| KeyringError::Kms {
                    op: "GenerateDataKey",
                    reason: format!("answer has no usable {what}"),
                };
                let data_key = out
                    .plaintext()
                    .and_then(|b| EncryptionKey::from_bytes(b.as_ref()))
                    .ok_or_else(|| bad("plaintext key"))?;
                let wrapped = out
                    .ciphertext_blob()
                    .ok_or_else(|| bad("ciphertext blob"))?;
                Ok(data_key.seal_wrapped(wrapped.as_ref(), owner, field, plaintext)?)
            }
        }
    }

    /// Decrypts a value sealed for exactly this `owner` and `field`, in either format.
    pub async fn open(
        &self,
        owner: &str,
        field: &str,
        sealed: &str,
    ) -> Result<Secret, KeyringError> {
        let version = sealed_version(sealed)?;
        match (self, version) {
            (Keyring::Static(key), VERSION_STATIC_KEY) => Ok(key.open(owner, field, sealed)?),
            (Keyring::Static(_), v) => Err(SealError::UnknownVersion(v).into()),
            (
                Keyring::Kms {
                    static_fallback, ..
                },
                VERSION_STATIC_KEY,
            ) => match static_fallback {
                Some(key) => Ok(key.open(owner, field, sealed)?),
                None => Err(KeyringError::NoStaticKey),
            },
            (
                Keyring::Kms {
                    client, key_arn, ..
                },
                VERSION_KMS,
            ) => {
                let envelope = WrappedEnvelope::parse(sealed)?;
                let out = client
                    .decrypt()
                    .key_id(key_arn)
                    .ciphertext_blob(Blob::new(envelope.wrapped_key.clone()))
                    .encryption_context("org_id", owner)
                    .encryption_context("field", field)
                    .send()
                    .await
                    .map_err(|e| kms_error("Decrypt", e))?;
                let data_key = out
                    .plaintext()
                    .and_then(|b| EncryptionKey::from_bytes(b.as_ref()))
                    .ok_or(KeyringError::Kms {
                        op: "Decrypt",
                        reason: "answer has no usable plaintext key".into(),
                    })?;
                Ok(envelope.open(&data_key, owner, field)?)
            }
            (Keyring::Kms { .. }, v) => Err(SealError::UnknownVersion(v).into()),
        }
    }
}
