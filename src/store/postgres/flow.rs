//! The device flow on PostgreSQL (RFC 8628 §3): starting an authorization, the read and write
//! halves of a poll, looking up, approving and denying a code, the admins' listings, and the
//! reaper's batches. The decisions are the shared ones of `domain::rules` and `protocol`.

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
    pub(crate) async fn start_authorization(
        &self,
        new: NewAuthorization,
    ) -> Result<Result<StartOutcome, OAuthError>, StoreError> {
        todo!("issue 22: PostgreSQL start_authorization")
    }

    pub(crate) async fn poll_read(
        &self,
        auth: ClientAuth,
        device_code: String,
    ) -> Result<Result<PollRead, OAuthError>, StoreError> {
        todo!("issue 22: PostgreSQL poll_read")
    }

    pub(crate) async fn exchange(&self, x: Exchange) -> Result<Exchanged, StoreError> {
        todo!("issue 22: PostgreSQL exchange")
    }

    pub(crate) async fn look_up_code(
        &self,
        typed: String,
        viewer: Option<String>,
        now: i64,
    ) -> Result<CodeLookup, StoreError> {
        todo!("issue 22: PostgreSQL look_up_code")
    }

    pub(crate) async fn approved_by(
        &self,
        typed: String,
        user_id: String,
    ) -> Result<Option<i64>, StoreError> {
        todo!("issue 22: PostgreSQL approved_by")
    }

    pub(crate) async fn approve(
        &self,
        approval: Approval,
    ) -> Result<Result<Device, ApprovalRefused>, StoreError> {
        todo!("issue 22: PostgreSQL approve")
    }

    pub(crate) async fn deny(
        &self,
        typed: String,
        actor: Actor,
        now: i64,
    ) -> Result<Result<(), CodeProblem>, StoreError> {
        todo!("issue 22: PostgreSQL deny")
    }

    pub(crate) async fn deny_authorization(
        &self,
        id: String,
        actor: Actor,
        now: i64,
    ) -> Result<Option<Result<DeviceAuthorization, CodeProblem>>, StoreError> {
        todo!("issue 22: PostgreSQL deny_authorization")
    }

    pub(crate) async fn authorizations(
        &self,
        state: Option<AuthorizationState>,
        client_id: Option<String>,
        now: i64,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<DeviceAuthorization>, u64), StoreError> {
        todo!("issue 22: PostgreSQL authorizations")
    }

    pub(crate) async fn authorizations_page(
        &self,
        listing: Listing,
        client_id: Option<String>,
        now: i64,
        page: u32,
        page_size: u32,
    ) -> Result<AuthorizationsPage, StoreError> {
        todo!("issue 22: PostgreSQL authorizations_page")
    }

    pub(crate) async fn write_poll_times(&self, times: Vec<PollTime>) -> Result<(), StoreError> {
        todo!("issue 22: PostgreSQL write_poll_times")
    }

    pub(crate) async fn count_expired_unused(&self, now: i64) -> Result<u64, StoreError> {
        todo!("issue 22: PostgreSQL count_expired_unused")
    }

    pub(crate) async fn purge(
        &self,
        what: Expired,
        now: i64,
        limit: u32,
    ) -> Result<usize, StoreError> {
        todo!("issue 22: PostgreSQL purge")
    }

    pub(crate) async fn purge_keys(&self, now: i64, grace_ms: i64) -> Result<usize, StoreError> {
        todo!("issue 22: PostgreSQL purge_keys")
    }
}
