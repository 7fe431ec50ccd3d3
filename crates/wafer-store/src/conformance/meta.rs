//! [`crate::MetaStore`]: versions, routes, module bytes, rollback and delete.

use super::Stores;
use crate::{NewVersion, StoreError};
use bytes::Bytes;
use wafer_api::oci::sha256_hex;
use wafer_api::{Alias, FunctionConfig, Kind, LIVE};

/// A version of `name` whose module is `module`, mounted at `routes`.
fn version(name: &str, module: &'static [u8], routes: &[&str]) -> (NewVersion, Bytes) {
    let new = NewVersion {
        name: name.into(),
        kind: Kind::Wagi,
        config: FunctionConfig {
            routes: routes.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        },
        digest: sha256_hex(module),
        size: module.len() as u64,
        variables: Default::default(),
        files: None,
    };
    (new, Bytes::from_static(module))
}

async fn deploy(
    stores: &Stores,
    name: &str,
    module: &'static [u8],
    routes: &[&str],
) -> Result<crate::StoredFunction, StoreError> {
    let (new, bytes) = version(name, module, routes);
    stores.meta.insert_version(new, bytes, true).await
}

/// Makes version `version` of `name` live again, as a rollback does.
async fn set_live(
    stores: &Stores,
    name: &str,
    version: u32,
) -> Result<crate::StoredFunction, StoreError> {
    stores.meta.set_alias(name, LIVE, Alias::to(version)).await
}

pub async fn versions_count_from_one_and_the_newest_goes_live(stores: &Stores) {
    let v1 = deploy(stores, "f", b"one", &[]).await.unwrap();
    let v2 = deploy(stores, "f", b"two", &[]).await.unwrap();
    assert_eq!((v1.live.version, v2.live.version), (1, 2));
    assert_eq!(v2.latest_version, 2);
    let rolled = set_live(stores, "f", 1).await.unwrap();
    assert_eq!(
        (rolled.live.version, rolled.live.digest.as_str()),
        (1, sha256_hex(b"one").as_str())
    );
    assert_eq!(rolled.latest_version, 2);
    let versions = stores.meta.list_versions("f").await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    let listed = stores.meta.list_functions().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].live.version, 1);
    assert!(stores.meta.get_function("g").await.unwrap().is_none());
    assert!(stores.meta.list_versions("g").await.unwrap().is_empty());
}

pub async fn a_version_is_stored_with_its_module_bytes(stores: &Stores) {
    let stored = deploy(stores, "f", b"\0asm bytes", &[]).await.unwrap();
    assert_eq!(
        stores.meta.module(&stored.live.digest).await.unwrap(),
        b"\0asm bytes"
    );
    // The same bytes under another name are stored once and read back the same.
    let other = deploy(stores, "g", b"\0asm bytes", &[]).await.unwrap();
    assert_eq!(other.live.digest, stored.live.digest);
    assert!(matches!(
        stores.meta.module(&sha256_hex(b"never deployed")).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn a_taken_route_refuses_the_whole_deploy_and_keeps_no_bytes(stores: &Stores) {
    deploy(stores, "a", b"a", &["/x"]).await.unwrap();
    let err = deploy(stores, "b", b"b", &["/y", "/x"]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::RouteTaken { ref owner, ref route } if owner == "a" && route == "/x"),
        "{err}"
    );
    assert!(stores.meta.get_function("b").await.unwrap().is_none());
    assert!(matches!(
        stores.meta.module(&sha256_hex(b"b")).await,
        Err(StoreError::NotFound(_))
    ));
    // Nothing of the refused deploy holds /y.
    deploy(stores, "c", b"c", &["/y"]).await.unwrap();
    // A function may keep its own routes from one version to the next.
    deploy(stores, "a", b"a2", &["/x"]).await.unwrap();
}

pub async fn several_functions_deploy_together_or_not_at_all(stores: &Stores) {
    deploy(stores, "taken", b"t", &["/x"]).await.unwrap();
    let with_variable = |name: &str, module: &'static [u8], routes: &[&str]| {
        let (mut new, bytes) = version(name, module, routes);
        new.variables
            .variables
            .insert("greeting".into(), name.into());
        new.variables
            .secrets
            .insert("token".into(), "s3cret".into());
        (new, bytes)
    };
    // One function's taken route refuses them all: nothing, not even the other's variables, is kept.
    let refused = stores
        .meta
        .insert_versions(
            vec![
                with_variable("app-a", b"app a", &["/a"]),
                with_variable("app-b", b"app b", &["/x"]),
            ],
            true,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::RouteTaken { .. })),
        "{refused:?}"
    );
    for name in ["app-a", "app-b"] {
        assert!(stores.meta.get_function(name).await.unwrap().is_none());
        assert!(stores
            .state
            .variables(name)
            .await
            .unwrap()
            .variables
            .is_empty());
    }
    assert!(matches!(
        stores.meta.module(&sha256_hex(b"app a")).await,
        Err(StoreError::NotFound(_))
    ));
    let stored = stores
        .meta
        .insert_versions(
            vec![
                with_variable("app-b", b"app b", &["/b"]),
                with_variable("app-a", b"app a", &["/a"]),
            ],
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|f| f.live.name.as_str())
            .collect::<Vec<_>>(),
        ["app-b", "app-a"],
        "in the order given"
    );
    let variables = stores.state.variables("app-a").await.unwrap();
    assert_eq!(variables.variables["greeting"], "app-a");
    assert_eq!(variables.secrets["token"], "s3cret");
}

pub async fn rollback_to_an_unknown_version_is_not_found(stores: &Stores) {
    deploy(stores, "f", b"one", &[]).await.unwrap();
    assert!(matches!(
        set_live(stores, "f", 9).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        set_live(stores, "nobody", 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        stores
            .meta
            .get_function("f")
            .await
            .unwrap()
            .unwrap()
            .live
            .version,
        1
    );
}

pub async fn delete_removes_only_unshared_modules(stores: &Stores) {
    deploy(stores, "a", b"shared", &["/a"]).await.unwrap();
    deploy(stores, "a", b"own", &[]).await.unwrap();
    deploy(stores, "b", b"shared", &[]).await.unwrap();
    assert!(stores
        .meta
        .module_in_use(&sha256_hex(b"own"))
        .await
        .unwrap());
    let orphaned = stores.meta.delete_function("a").await.unwrap();
    assert_eq!(orphaned, vec![sha256_hex(b"own")]);
    assert!(!stores
        .meta
        .module_in_use(&sha256_hex(b"own"))
        .await
        .unwrap());
    assert!(stores
        .meta
        .module_in_use(&sha256_hex(b"shared"))
        .await
        .unwrap());
    assert!(stores.meta.get_function("a").await.unwrap().is_none());
    assert!(matches!(
        stores.meta.module(&sha256_hex(b"own")).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        stores.meta.module(&sha256_hex(b"shared")).await.unwrap(),
        b"shared"
    );
    // The route went with the function, so another may take it.
    deploy(stores, "c", b"c", &["/a"]).await.unwrap();
    assert!(matches!(
        stores.meta.delete_function("a").await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn a_files_bundle_is_stored_with_its_version_and_goes_with_its_last_user(
    stores: &Stores,
) {
    let with_files = |name: &str, module: &'static [u8], files: &'static [u8]| {
        let (mut new, bytes) = version(name, module, &[]);
        new.files = Some(crate::FilesBundle {
            digest: sha256_hex(files),
            bytes: Bytes::from_static(files),
        });
        (new, bytes)
    };
    let (new, bytes) = with_files("a", b"a", b"bundle");
    let stored = stores.meta.insert_version(new, bytes, true).await.unwrap();
    assert_eq!(
        stored.live.files.as_deref(),
        Some(sha256_hex(b"bundle").as_str())
    );
    assert_eq!(
        stores.meta.module(&sha256_hex(b"bundle")).await.unwrap(),
        b"bundle"
    );
    let (new, bytes) = with_files("b", b"b", b"bundle");
    stores.meta.insert_version(new, bytes, true).await.unwrap();
    deploy(stores, "b", b"b2", &[]).await.unwrap();
    let versions = stores.meta.list_versions("b").await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| v.files.is_some())
            .collect::<Vec<_>>(),
        [true, false]
    );
    // Shared with `b`, the bundle outlives `a`; it goes with `b`, its last user.
    assert_eq!(
        stores.meta.delete_function("a").await.unwrap(),
        vec![sha256_hex(b"a")]
    );
    assert!(stores.meta.module(&sha256_hex(b"bundle")).await.is_ok());
    assert!(stores
        .meta
        .module_in_use(&sha256_hex(b"bundle"))
        .await
        .unwrap());
    let mut orphaned = stores.meta.delete_function("b").await.unwrap();
    orphaned.sort();
    let mut expected = vec![sha256_hex(b"b"), sha256_hex(b"b2"), sha256_hex(b"bundle")];
    expected.sort();
    assert_eq!(orphaned, expected);
    assert!(!stores
        .meta
        .module_in_use(&sha256_hex(b"bundle"))
        .await
        .unwrap());
    assert!(matches!(
        stores.meta.module(&sha256_hex(b"bundle")).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn aliases_name_versions_and_live_moves_with_deploys_and_its_routes(stores: &Stores) {
    deploy(stores, "f", b"one", &["/one"]).await.unwrap();
    let v1 = stores.meta.get_function("f").await.unwrap().unwrap();
    assert_eq!(v1.aliases.keys().collect::<Vec<_>>(), [LIVE]);
    assert_eq!(v1.live_alias(), Alias::to(1));
    // A version deployed without promotion is a candidate: live, and its routes, stay.
    let (new, bytes) = version("f", b"two", &["/two"]);
    let candidate = stores.meta.insert_version(new, bytes, false).await.unwrap();
    assert_eq!((candidate.live.version, candidate.latest_version), (1, 2));
    assert_eq!(candidate.live.config.routes, ["/one"]);
    // A weight on live is a canary; an alias of its own names another split.
    let canary = Alias {
        version: 1,
        weights: [(2, 0.25)].into(),
    };
    let f = stores
        .meta
        .set_alias("f", LIVE, canary.clone())
        .await
        .unwrap();
    assert_eq!(f.live_alias(), canary);
    assert_eq!(f.to_info().live_weights, canary.weights);
    let f = stores
        .meta
        .set_alias("f", "beta", Alias::to(2))
        .await
        .unwrap();
    assert_eq!(f.aliases.get("beta"), Some(&Alias::to(2)));
    assert_eq!(f.live.version, 1);
    // Unknown versions and functions are not found, and change nothing.
    for bad in [
        Alias::to(3),
        Alias {
            version: 1,
            weights: [(7, 0.5)].into(),
        },
    ] {
        assert!(matches!(
            stores.meta.set_alias("f", "beta", bad).await,
            Err(StoreError::NotFound(_))
        ));
    }
    assert!(matches!(
        stores.meta.set_alias("nobody", "beta", Alias::to(1)).await,
        Err(StoreError::NotFound(_))
    ));
    // Moving live moves the routes; a promoting deploy moves live and clears its weights.
    let f = set_live(stores, "f", 2).await.unwrap();
    assert_eq!(f.live.config.routes, ["/two"]);
    let f = deploy(stores, "f", b"three", &[]).await.unwrap();
    assert_eq!(f.live_alias(), Alias::to(3));
    assert_eq!(f.aliases.get("beta"), Some(&Alias::to(2)));
    let listed = stores.meta.list_functions().await.unwrap();
    assert_eq!(listed[0].aliases, f.aliases);
    let f = stores.meta.delete_alias("f", "beta").await.unwrap();
    assert!(!f.aliases.contains_key("beta"));
    assert!(matches!(
        stores.meta.delete_alias("f", "beta").await,
        Err(StoreError::NotFound(_))
    ));
    // Nothing of /one or /two stays mounted: another function may take them.
    deploy(stores, "g", b"g", &["/one", "/two"]).await.unwrap();
}
