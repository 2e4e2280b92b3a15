//! The rules of administration, as the store keeps them (were `admin.rs`'s unit tests).

use hallpass::app::admin::{create_client, update_user};
use hallpass::clock;
use hallpass::domain::admin::{ClientChange, ClientSpec, Refusal, UserChange};
use hallpass::protocol::grant;
use hallpass::protocol::jwt::Algorithm;

use super::Fx;

#[test]
fn the_last_admin_stays() {
    let fx = Fx::new();
    let a = fx.user("root", true);
    let demote = UserChange {
        is_admin: Some(false),
        ..Default::default()
    };
    assert!(matches!(
        fx.run(update_user(&fx.store, &a.id, demote.clone()))
            .unwrap(),
        Err(Refusal::Conflict(_))
    ));
    assert!(matches!(
        fx.run(fx.store.delete_user(a.id.clone())).unwrap(),
        Err(Refusal::Conflict(_))
    ));
    fx.user("root2", true);
    assert!(fx
        .run(update_user(&fx.store, &a.id, demote))
        .unwrap()
        .is_ok());
}

#[test]
fn client_rules() {
    let fx = Fx::new();
    let user = fx.user("bob", false);
    let spec = |grants: &[&str], scopes: &str, owner: Option<&str>| ClientSpec {
        name: "n".into(),
        grants: grants.iter().map(|g| g.to_string()).collect(),
        scopes: scopes.into(),
        owner_user_id: owner.map(str::to_string),
        ..Default::default()
    };
    let create =
        |spec: ClientSpec, confidential: bool| fx.run(create_client(&fx.store, spec, confidential));
    let cc = [grant::CLIENT_CREDENTIALS];
    assert!(create(spec(&cc, "", None), false).unwrap().is_err());
    assert!(create(spec(&cc, "", None), true).unwrap().is_ok());
    assert!(create(spec(&["nope"], "", None), true).unwrap().is_err());
    let owned = spec(&[], "read admin", Some(&user.id));
    assert!(create(owned, false).unwrap().is_err());
    let (client, secret) = create(spec(&[], "b a", None), false).unwrap().unwrap();
    assert_eq!(client.allowed_scopes, "a b");
    assert!(secret.is_none());
    assert_eq!(client.allowed_grants.len(), 2);
}

#[test]
fn client_algorithm_audience_and_resources() {
    let fx = Fx::new();
    let spec = ClientSpec {
        name: "api client".into(),
        signing_algorithm: Some(Algorithm::ES256),
        audience: Some("https://api.example".into()),
        resources: vec!["https://a".into(), "urn:b".into(), "https://a".into()],
        ..Default::default()
    };
    let create = |spec: ClientSpec| fx.run(create_client(&fx.store, spec, false));
    let find = |id: &str| fx.run(fx.store.client(id.into())).unwrap().unwrap();
    let (client, _) = create(spec.clone()).unwrap().unwrap();
    let stored = find(&client.client_id);
    assert_eq!(stored.signing_algorithm, Some(Algorithm::ES256));
    assert_eq!(stored.audience.as_deref(), Some("https://api.example"));
    assert_eq!(stored.allowed_resources, ["https://a", "urn:b"]);
    assert_eq!(stored.algorithm(Algorithm::RS256), Algorithm::ES256);
    // Back to the server's defaults.
    let change = ClientChange {
        signing_algorithm: Some(None),
        audience: Some(None),
        resources: Some(Vec::new()),
        ..Default::default()
    };
    let updated = fx
        .run(
            fx.store
                .update_client(client.client_id.clone(), change, clock::now_ms()),
        )
        .unwrap()
        .unwrap();
    assert_eq!(updated.algorithm(Algorithm::RS256), Algorithm::RS256);
    let stored = find(&client.client_id);
    assert_eq!(
        (
            stored.signing_algorithm,
            stored.audience,
            stored.allowed_resources.len()
        ),
        (None, None, 0)
    );
    // Malformed resources and audiences are refused, naming the field.
    for (field, bad) in [
        (
            "allowed_resources",
            ClientSpec {
                resources: vec!["no-scheme".into()],
                ..spec.clone()
            },
        ),
        (
            "allowed_resources",
            ClientSpec {
                resources: vec!["https://a#f".into()],
                ..spec.clone()
            },
        ),
        (
            "audience",
            ClientSpec {
                audience: Some("has space".into()),
                ..spec.clone()
            },
        ),
    ] {
        match create(bad).unwrap() {
            Err(Refusal::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}
