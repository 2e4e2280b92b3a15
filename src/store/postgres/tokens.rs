//! Tokens and keys on PostgreSQL: client authentication, the client-credentials and refresh
//! grants (RFC 6749 §4.4, §6), revocation (RFC 7009), introspection (RFC 7662), bearer tokens
//! of the management API, and the signing keys.

#![allow(unused_variables)] // issue 22: the skeleton; removed when the bodies are written.

use super::store::PgStore;
#[allow(unused_imports)]
use crate::domain::admin::{ClientChange, ClientSpec, Refusal};
#[allow(unused_imports)]
use crate::domain::model::*;
#[allow(unused_imports)]
use crate::protocol::error::OAuthError;
#[allow(unused_imports)]
use crate::protocol::jwt::{Algorithm, PublicKey, SigningKey, Verified};
#[allow(unused_imports)]
use crate::sealing::Sealer;
#[allow(unused_imports)]
use crate::store::*;
#[allow(unused_imports)]
use std::sync::Arc;

impl PgStore {
    pub(crate) async fn client_grant(
        &self,
        auth: ClientAuth,
    ) -> Result<Result<ClientRead, OAuthError>, StoreError> {
        todo!("issue 22: PostgreSQL client_grant")
    }

    pub(crate) async fn refresh(
        &self,
        r: Refresh,
    ) -> Result<Result<Refreshed, OAuthError>, StoreError> {
        todo!("issue 22: PostgreSQL refresh")
    }

    pub(crate) async fn authenticate_client(
        &self,
        creds: ClientCredentials,
    ) -> Result<Result<Client, OAuthError>, StoreError> {
        todo!("issue 22: PostgreSQL authenticate_client")
    }

    pub(crate) async fn revoke(&self, r: Revocation) -> Result<(), StoreError> {
        todo!("issue 22: PostgreSQL revoke")
    }

    pub(crate) async fn introspect(
        &self,
        i: Introspect,
    ) -> Result<Result<Introspection, OAuthError>, StoreError> {
        todo!("issue 22: PostgreSQL introspect")
    }

    pub(crate) async fn bearer(
        &self,
        token: String,
        verified: Arc<Verified>,
        grace_ms: i64,
        now: i64,
    ) -> Result<Option<Bearer>, StoreError> {
        todo!("issue 22: PostgreSQL bearer")
    }

    pub(crate) async fn published_keys(
        &self,
        now: i64,
        grace_ms: i64,
    ) -> Result<Vec<PublicKey>, StoreError> {
        todo!("issue 22: PostgreSQL published_keys")
    }

    pub(crate) async fn keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        todo!("issue 22: PostgreSQL keys")
    }

    pub(crate) async fn check_sealing(&self, sealer: Arc<Sealer>) -> Result<usize, StoreError> {
        todo!("issue 22: PostgreSQL check_sealing")
    }

    pub(crate) async fn active_key(
        &self,
        sealer: Arc<Sealer>,
        algorithm: Algorithm,
    ) -> Result<Option<SigningKey>, StoreError> {
        todo!("issue 22: PostgreSQL active_key")
    }

    pub(crate) async fn signing_key(
        &self,
        sealer: Arc<Sealer>,
        algorithm: Algorithm,
        cached: Option<String>,
        now: i64,
    ) -> Result<Option<SigningKey>, StoreError> {
        todo!("issue 22: PostgreSQL signing_key")
    }

    pub(crate) async fn rotate_keys(
        &self,
        sealer: Arc<Sealer>,
        only: Option<Algorithm>,
        default: Algorithm,
        now: i64,
    ) -> Result<Vec<SigningKey>, StoreError> {
        todo!("issue 22: PostgreSQL rotate_keys")
    }

    pub(crate) async fn import_key(
        &self,
        sealer: Arc<Sealer>,
        key: Arc<SigningKey>,
        pkcs8: Vec<u8>,
        standby: bool,
        now: i64,
    ) -> Result<Imported, StoreError> {
        todo!("issue 22: PostgreSQL import_key")
    }

    pub(crate) async fn activate_key(
        &self,
        kid: String,
        now: i64,
    ) -> Result<Activation, StoreError> {
        todo!("issue 22: PostgreSQL activate_key")
    }

    pub(crate) async fn revoke_key(&self, kid: String) -> Result<bool, StoreError> {
        todo!("issue 22: PostgreSQL revoke_key")
    }

    pub(crate) async fn reseal_keys(&self, sealer: Arc<Sealer>) -> Result<Resealed, StoreError> {
        todo!("issue 22: PostgreSQL reseal_keys")
    }
}
