//! Administration on PostgreSQL: browser sessions, users, clients and devices.

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
    pub(crate) async fn session(
        &self,
        id_hash: Vec<u8>,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        todo!("issue 22: PostgreSQL session")
    }

    pub(crate) async fn create_session(&self, s: NewSession) -> Result<(), StoreError> {
        todo!("issue 22: PostgreSQL create_session")
    }

    pub(crate) async fn end_session(&self, id_hash: Vec<u8>) -> Result<(), StoreError> {
        todo!("issue 22: PostgreSQL end_session")
    }

    pub(crate) async fn user(&self, id: String) -> Result<Option<User>, StoreError> {
        todo!("issue 22: PostgreSQL user")
    }

    pub(crate) async fn user_by_name(&self, username: String) -> Result<Option<User>, StoreError> {
        todo!("issue 22: PostgreSQL user_by_name")
    }

    pub(crate) async fn users(
        &self,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<User>, u64), StoreError> {
        todo!("issue 22: PostgreSQL users")
    }

    pub(crate) async fn count_users(&self) -> Result<u64, StoreError> {
        todo!("issue 22: PostgreSQL count_users")
    }

    pub(crate) async fn create_user(
        &self,
        user: NewUser,
    ) -> Result<Result<User, Refusal>, StoreError> {
        todo!("issue 22: PostgreSQL create_user")
    }

    pub(crate) async fn update_user(
        &self,
        id: String,
        update: UserUpdate,
        now: i64,
    ) -> Result<Result<User, Refusal>, StoreError> {
        todo!("issue 22: PostgreSQL update_user")
    }

    pub(crate) async fn delete_user(&self, id: String) -> Result<Result<(), Refusal>, StoreError> {
        todo!("issue 22: PostgreSQL delete_user")
    }

    pub(crate) async fn client(&self, client_id: String) -> Result<Option<Client>, StoreError> {
        todo!("issue 22: PostgreSQL client")
    }

    pub(crate) async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        todo!("issue 22: PostgreSQL clients")
    }

    pub(crate) async fn create_client(
        &self,
        spec: ClientSpec,
        client_id: String,
        secret_hash: Option<Vec<u8>>,
        now: i64,
    ) -> Result<Result<Client, Refusal>, StoreError> {
        todo!("issue 22: PostgreSQL create_client")
    }

    pub(crate) async fn update_client(
        &self,
        client_id: String,
        change: ClientChange,
        now: i64,
    ) -> Result<Result<Client, Refusal>, StoreError> {
        todo!("issue 22: PostgreSQL update_client")
    }

    pub(crate) async fn delete_client(
        &self,
        client_id: String,
        actor: Actor,
        now: i64,
    ) -> Result<Result<Client, Refusal>, StoreError> {
        todo!("issue 22: PostgreSQL delete_client")
    }

    pub(crate) async fn set_client_secret(
        &self,
        client_id: String,
        secret_hash: Vec<u8>,
        now: i64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        todo!("issue 22: PostgreSQL set_client_secret")
    }

    pub(crate) async fn device(
        &self,
        id: String,
        owner: Option<String>,
    ) -> Result<Option<Device>, StoreError> {
        todo!("issue 22: PostgreSQL device")
    }

    pub(crate) async fn devices(
        &self,
        filter: DeviceFilter,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<Device>, u64), StoreError> {
        todo!("issue 22: PostgreSQL devices")
    }

    pub(crate) async fn devices_of(&self, user_id: String) -> Result<DevicesOf, StoreError> {
        todo!("issue 22: PostgreSQL devices_of")
    }

    pub(crate) async fn update_device(
        &self,
        update: DeviceUpdate,
    ) -> Result<Result<Device, DeviceRefused>, StoreError> {
        todo!("issue 22: PostgreSQL update_device")
    }

    pub(crate) async fn set_device_locked(
        &self,
        id: String,
        owner: Option<String>,
        locked: bool,
        actor: Actor,
        now: i64,
    ) -> Result<Option<Device>, StoreError> {
        todo!("issue 22: PostgreSQL set_device_locked")
    }

    pub(crate) async fn remove_device(
        &self,
        id: String,
        owner: Option<String>,
        actor: Actor,
        now: i64,
    ) -> Result<bool, StoreError> {
        todo!("issue 22: PostgreSQL remove_device")
    }
}
