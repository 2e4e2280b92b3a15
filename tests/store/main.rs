//! Tests of the store's transactions through its interface (`hallpass::store::Store`), on a
//! temporary database: the device flow's steps, the life of tokens, the rules of
//! administration, and the reaper's write-back of poll times. They were the unit tests of the
//! transaction bodies before the store boundary (issue 20); their assertions are those tests'
//! own. A test that reaches into the file (raw SQL, to stand for an old database or another
//! program) says so; the others hold for any backend.

//!
//! With `TEST_BACKEND=postgres` they run on a database of a throwaway PostgreSQL cluster
//! (tests/support/pg.rs) instead; the tests that reach into the SQLite file return early there.

mod admin;
mod flow;
#[path = "../support/pg.rs"]
mod pg;
mod reaper;
mod tokens;

use std::path::PathBuf;
use std::sync::Arc;

use hallpass::app::polls::PollTracker;
use hallpass::clock;
use hallpass::config::Config;
use hallpass::domain::admin::ClientSpec;
use hallpass::domain::model::{
    Actor, Client, ClientCredentials, CodeProblem, Device, DeviceFacts, Grant, PollOutcome,
    Started, Target, User,
};
use hallpass::protocol::codes::DeviceCode;
use hallpass::protocol::error::OAuthError;
use hallpass::protocol::grant;
use hallpass::protocol::jwt::Verified;
use hallpass::protocol::poll::PollDecision;
use hallpass::protocol::scope::Scope;
use hallpass::store::{
    Admission, Approval, ApprovalRefused, Caller, ClientAuth, CodeLookup, Exchange, Introspect,
    NewAuthorization, NewUser, Purpose, Refresh, StartOutcome, Store,
};

/// A store on a temporary file (or PostgreSQL database), and a runtime to drive it.
pub struct Fx {
    pub store: Store,
    pub path: PathBuf,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    _pg: Option<pg::TestDb>,
}

/// Whether the tests run on PostgreSQL (`TEST_BACKEND=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

impl Default for Fx {
    fn default() -> Fx {
        Fx::new()
    }
}

impl Fx {
    /// A new, empty database, opened as the server opens it.
    pub fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            database_path: dir.path().join("store.db"),
            ..Config::default()
        };
        let pg = on_postgres().then(|| {
            let db = pg::database()
                .expect("TEST_BACKEND=postgres, but PostgreSQL is not installed (see above)");
            config.set_flag("database.url", &db.url()).unwrap();
            db
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(Store::open(&config, Purpose::Serve)).unwrap();
        Fx {
            store,
            path: config.database_path,
            rt,
            _dir: dir,
            _pg: pg,
        }
    }

    /// Runs a future of the store's to its end.
    pub fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// Another program's connection to the same file (for raw SQL); only on SQLite (a test
    /// that needs it returns early on PostgreSQL: see [`on_postgres`]).
    pub fn sql(&self) -> rusqlite::Connection {
        assert!(!on_postgres(), "raw SQLite SQL in a test run on PostgreSQL");
        rusqlite::Connection::open(&self.path).unwrap()
    }

    /// A user with this name and a made-up password hash.
    pub fn user(&self, name: &str, is_admin: bool) -> User {
        self.run(self.store.create_user(NewUser {
            username: name.into(),
            password_hash: "x".into(),
            is_admin,
            now: 0,
        }))
        .unwrap()
        .unwrap()
    }

    /// A public client with this id and these scopes.
    pub fn client(&self, client_id: &str, scopes: &str) -> Client {
        let spec = ClientSpec {
            name: "CLI".into(),
            scopes: scopes.into(),
            ..Default::default()
        };
        self.run(self.store.create_client(spec, client_id.into(), None, 0))
            .unwrap()
            .unwrap()
    }

    /// A confidential client for introspection; its credentials.
    pub fn resource_server(&self) -> ClientCredentials {
        let spec = ClientSpec {
            name: "RS".into(),
            ..Default::default()
        };
        let secret = "resource server secret";
        let hash = hallpass::secrets::hash_token(secret);
        self.run(self.store.create_client(spec, "rs".into(), Some(hash), 0))
            .unwrap()
            .unwrap();
        ClientCredentials {
            client_id: "rs".into(),
            secret: Some(secret.into()),
        }
    }

    /// The client as the store has it, or (an id nobody registered) a public one made up with
    /// that id: the store is told it was authenticated already.
    fn known(&self, client_id: &str) -> Arc<Client> {
        let stored = self.run(self.store.client(client_id.into())).unwrap();
        Arc::new(stored.unwrap_or_else(|| Client {
            client_id: client_id.into(),
            name: "someone".into(),
            secret_hash: None,
            allowed_grants: vec![grant::DEVICE_CODE.into(), grant::REFRESH_TOKEN.into()],
            allowed_scopes: String::new(),
            owner_user_id: None,
            signing_algorithm: None,
            audience: None,
            allowed_resources: Vec::new(),
            created: 0,
            updated: 0,
        }))
    }
}

/// What every test's token request asks of `aud`: nothing, with this server default.
pub fn target() -> Target {
    Target {
        asked: None,
        server_default: "https://issuer.example".into(),
    }
}

/// Starts a device authorization for a public client at `now`.
pub fn start(fx: &Fx, config: &Config, client_id: &str, scope: &str, now: i64) -> Started {
    let new = NewAuthorization {
        auth: ClientAuth {
            caller: Caller::Presented(ClientCredentials {
                client_id: client_id.into(),
                secret: None,
            }),
            grant: grant::DEVICE_CODE,
            sign_default: None,
        },
        scope: scope.into(),
        facts: DeviceFacts::default(),
        server_audience: "https://issuer.example".into(),
        admission: Admission::Issue { evict: None },
        authorization_id: uuid::Uuid::now_v7().to_string(),
        device_id: uuid::Uuid::now_v7().to_string(),
        device_code: DeviceCode::generate(),
        user_code: hallpass::protocol::codes::UserCode::generate(),
        poll_interval_seconds: config.poll_interval.as_secs() as i64,
        expires_at: now + clock::ms(config.device_code_lifetime),
        now,
    };
    match fx.run(fx.store.start_authorization(new)).unwrap().unwrap() {
        StartOutcome::Started { started, .. } => started,
        other => panic!("{other:?}"),
    }
}

/// Approves `typed` as `user_id` at `now`; the outer `Result` unwrapped.
pub fn approve(
    fx: &Fx,
    config: &Config,
    typed: &str,
    user_id: &str,
    trusted: bool,
    now: i64,
) -> Result<Device, CodeProblem> {
    let lifetime = if trusted {
        config.trusted_device_lifetime
    } else {
        config.untrusted_device_lifetime
    };
    let approval = Approval {
        typed: typed.into(),
        user_id: user_id.into(),
        trusted,
        ip_address: None,
        device_expires: now + clock::ms(lifetime),
        for_device: None,
        now,
    };
    fx.run(fx.store.approve(approval))
        .unwrap()
        .map_err(|r| match r {
            ApprovalRefused::Code(p) => p,
            other => panic!("{other:?}"),
        })
}

/// Denies `typed` from the command line at `now`.
pub fn deny(fx: &Fx, typed: &str, now: i64) -> Result<(), CodeProblem> {
    fx.run(fx.store.deny(typed.into(), Actor::default(), now))
        .unwrap()
}

/// Whether `typed` can be decided at `now`.
pub fn find_pending(fx: &Fx, typed: &str, now: i64) -> Result<(), CodeProblem> {
    match fx
        .run(fx.store.look_up_code(typed.into(), None, now))
        .unwrap()
    {
        CodeLookup::Pending { .. } => Ok(()),
        CodeLookup::Problem { problem, .. } => Err(problem),
    }
}

/// A device's poll (RFC 8628 §3.4–3.5) by `client_id` at `now`, as the token endpoint makes it:
/// the read, the decision with what `tracker` remembers, and the exchange of an approved code.
pub fn poll(
    fx: &Fx,
    config: &Config,
    tracker: &PollTracker,
    device_code: &str,
    client_id: &str,
    now: i64,
) -> PollOutcome {
    let auth = ClientAuth {
        caller: Caller::Known(fx.known(client_id)),
        grant: grant::DEVICE_CODE,
        sign_default: None,
    };
    let read = fx
        .run(fx.store.poll_read(auth, device_code.into()))
        .unwrap()
        .unwrap();
    let Some(a) = read.authorization else {
        return PollOutcome::Refused {
            error: hallpass::protocol::error::ErrorCode::InvalidGrant,
            interval: None,
        };
    };
    let state = hallpass::domain::rules::poll_state(&a, client_id);
    match tracker.decide(&a.id, &state, now) {
        PollDecision::Refuse {
            error,
            new_interval,
            ..
        } => PollOutcome::Refused {
            error,
            interval: new_interval,
        },
        PollDecision::Issue => {
            let x = Exchange {
                device_code: device_code.into(),
                client_id: client_id.into(),
                algorithm: config.signing_algorithm,
                target: target(),
                refresh_expires_at: now + clock::ms(config.refresh_token_lifetime),
                now,
            };
            fx.run(fx.store.exchange(x)).unwrap().outcome
        }
    }
}

/// A refresh by a client already authenticated (`client`, as the caller has it), with a
/// narrower `scope` if given, at `now`; the outer `Result` unwrapped.
pub fn refresh(
    fx: &Fx,
    config: &Config,
    token: &str,
    client: &Client,
    scope: Option<&Scope>,
    now: i64,
) -> Result<Grant, OAuthError> {
    let r = Refresh {
        auth: ClientAuth {
            caller: Caller::Known(Arc::new(client.clone())),
            grant: grant::REFRESH_TOKEN,
            sign_default: None,
        },
        token: token.into(),
        scope: scope.cloned(),
        target: target(),
        ip_address: None,
        refresh_expires_at: now + clock::ms(config.refresh_token_lifetime),
        now,
    };
    fx.run(fx.store.refresh(r)).unwrap().unwrap().grant
}

/// The introspection response for `token` at `now`, asked by `rs`.
pub fn introspect(fx: &Fx, rs: &ClientCredentials, token: &str, now: i64) -> serde_json::Value {
    let found = fx
        .run(fx.store.introspect(Introspect {
            creds: rs.clone(),
            token: Some(token.into()),
            verified: Arc::new(Verified::new()),
            grace_ms: 0,
            now,
        }))
        .unwrap()
        .unwrap();
    hallpass::app::tokens::introspection_json(found)
}
