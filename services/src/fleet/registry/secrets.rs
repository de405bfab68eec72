//! Secure option values: sealed at rest when a run is accepted, and handed
//! to the runner holding the step's claim, sealed to its one-use key.

use base64::Engine;
use outpost_schemas::rpc::{SealedSecrets, SecretValues, SecretsReply, SecretsRequest};
use outpost_schemas::subjects;
use uuid::Uuid;

use crate::security::KeyStore;
use crate::ServiceError;

use super::{nats_err, Registry, RegistryError};

impl Registry {
    /// Secure option values go only to the runner holding the step's claim,
    /// sealed to the one-use key it sent.
    pub(super) async fn secrets_for(
        &self,
        runner: &str,
        req: SecretsRequest,
    ) -> Result<SecretsReply, RegistryError> {
        let refuse = |reason: String| Ok(SecretsReply::Refused { reason });
        if let Some((rec, _)) = self.get(runner).await? {
            if rec.revoked.is_some() {
                return refuse(format!("runner {runner} is revoked"));
            }
        }
        let key = subjects::claim_key(req.execution_id, req.step);
        match self.claim_of(&key).await? {
            Some(c) if c.runner_id == runner => {}
            _ => {
                return refuse(format!(
                    "runner {runner} holds no claim on step {} of {}",
                    req.step, req.execution_id
                ))
            }
        }
        let Some(keys) = &self.inner.keys else {
            return refuse("the control plane has no secrets key".into());
        };
        let Some(stored) = self
            .inner
            .secrets
            .get_bytes(&subjects::execution_key(req.execution_id))
            .await?
        else {
            return refuse(format!("no secure values stored for {}", req.execution_id));
        };
        let values = open_stored(keys, &stored)?;
        let recipient = nkeys::XKey::from_public_key(&req.reply_key)
            .map_err(|e| RegistryError::Invalid(format!("reply_key: {e}")))?;
        let plain = serde_json::to_vec(&values).expect("values");
        let sealed = keys
            .secrets_key()
            .seal(&plain, &recipient)
            .map_err(|e| RegistryError::Invalid(format!("seal: {e}")))?;
        Ok(SecretsReply::Sealed {
            sender: keys.secrets_key().public_key(),
            sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        })
    }

    /// Seals an execution's secure option values under the secrets key and
    /// stores them; only a runner holding a claim on the execution can have
    /// them back, through [`Registry::secrets_for`].
    pub async fn store_secrets(
        &self,
        execution_id: Uuid,
        values: &SecretValues,
    ) -> Result<(), RegistryError> {
        let keys = self.inner.keys.as_ref().ok_or(RegistryError::NoKeys)?;
        let sealed = seal_at_rest(keys, values)?;
        self.inner
            .secrets
            .raw()
            .put(subjects::execution_key(execution_id), sealed.into())
            .await
            .map_err(nats_err)?;
        Ok(())
    }
}

/// At rest: sealed by a one-use sender key to the secrets key, so the API
/// needs only the public half to store values.
pub(super) fn seal_at_rest(
    keys: &KeyStore,
    values: &SecretValues,
) -> Result<Vec<u8>, RegistryError> {
    let sender = nkeys::XKey::new();
    let recipient = nkeys::XKey::from_public_key(&keys.secrets_key().public_key())
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let sealed = sender
        .seal(&serde_json::to_vec(values).expect("values"), &recipient)
        .map_err(|e| RegistryError::Invalid(format!("seal: {e}")))?;
    Ok(serde_json::to_vec(&SealedSecrets {
        sender: sender.public_key(),
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
    })
    .expect("json"))
}

pub(super) fn open_stored(keys: &KeyStore, stored: &[u8]) -> Result<SecretValues, RegistryError> {
    let bad =
        |e: String| RegistryError::Service(ServiceError::Corrupt(format!("sealed secrets: {e}")));
    let s: SealedSecrets = serde_json::from_slice(stored).map_err(|e| bad(e.to_string()))?;
    let sender = nkeys::XKey::from_public_key(&s.sender).map_err(|e| bad(e.to_string()))?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(s.sealed)
        .map_err(|e| bad(e.to_string()))?;
    let plain = keys
        .secrets_key()
        .open(&sealed, &sender)
        .map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))
}
