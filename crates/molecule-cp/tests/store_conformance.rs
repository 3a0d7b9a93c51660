//! One conformance suite for the control-plane store, run against SQLite always and against a
//! real PostgreSQL server started for the test (required in CI).

use molecule_cp::store::*;
use molecule_shared::now_ms;
use molecule_testkit::postgres::PgCluster;

fn org(slug: &str) -> Org {
    Org {
        id: new_id(),
        slug: slug.into(),
        name: format!("Org {slug}"),
        plan: "free".into(),
        owner_user_id: Some("user-1".into()),
        status: OrgStatus::Provisioning,
        is_canary: false,
        created_at: now_ms(),
        updated_at: now_ms(),
    }
}

fn creds(org: &Org, hash: &str) -> TenantCredentials {
    TenantCredentials {
        org_id: org.id.clone(),
        admin_token_hash: hash.into(),
        admin_token_sealed: "sealed-token".into(),
        encryption_key_sealed: "sealed-key".into(),
    }
}

fn instance(org: &Org) -> TenantInstance {
    TenantInstance {
        org_id: org.id.clone(),
        provider: "local".into(),
        instance_id: None,
        address: None,
        security_group_id: None,
        status: InstanceStatus::Pending,
        desired_version: "1.0.0".into(),
        observed_version: None,
        config_generation: 1,
        restarts: 0,
        last_error: None,
        created_at: now_ms(),
        updated_at: now_ms(),
    }
}

fn workspace(org: &Org, id: &str) -> WorkspaceInstance {
    WorkspaceInstance {
        workspace_id: id.into(),
        org_id: org.id.clone(),
        instance_id: format!("i-{id}"),
        state: WorkspaceState::Pending,
        address: None,
        runtime: "hermes".into(),
        tier: 2,
        platform_url: "http://127.0.0.1:1".into(),
        env_sealed: "sealed-env".into(),
        restarts: 0,
        created_at: now_ms(),
        updated_at: now_ms(),
    }
}

async fn conformance(store: Store) {
    // Orgs: create, read back, unique slug, transitions.
    let a = org("alpha");
    store
        .create_org(&a, &creds(&a, "hash-a"), &instance(&a))
        .await
        .unwrap();
    let got = store
        .org_by_slug("alpha")
        .await
        .unwrap()
        .expect("org alpha");
    assert_eq!(got.id, a.id);
    assert_eq!(got.owner_user_id.as_deref(), Some("user-1"));
    assert_eq!(got.status, OrgStatus::Provisioning);
    assert!(!got.is_canary);
    let dup = org("alpha");
    match store
        .create_org(&dup, &creds(&dup, "hash-dup"), &instance(&dup))
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("duplicate slug must conflict, got {other:?}"),
    }
    // The failed create left nothing behind.
    assert!(store.credentials(&dup.id).await.unwrap().is_none());
    assert!(store.instance(&dup.id).await.unwrap().is_none());

    let b = org("bravo");
    store
        .create_org(&b, &creds(&b, "hash-b"), &instance(&b))
        .await
        .unwrap();
    let slugs: Vec<String> = store
        .list_orgs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.slug)
        .collect();
    assert_eq!(slugs, ["alpha", "bravo"]);

    assert!(store
        .transition_org(&a.id, &[OrgStatus::Provisioning], OrgStatus::Running)
        .await
        .unwrap());
    assert!(!store
        .transition_org(&a.id, &[OrgStatus::Provisioning], OrgStatus::Failed)
        .await
        .unwrap());
    assert_eq!(
        store.org_by_id(&a.id).await.unwrap().unwrap().status,
        OrgStatus::Running
    );
    assert!(!store
        .transition_org("missing", &[OrgStatus::Running], OrgStatus::Failed)
        .await
        .unwrap());

    // Credentials: lookup by hash.
    assert_eq!(
        store
            .org_by_admin_token_hash("hash-b")
            .await
            .unwrap()
            .unwrap()
            .id,
        b.id
    );
    assert!(store
        .org_by_admin_token_hash("nope")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .credentials(&a.id)
            .await
            .unwrap()
            .unwrap()
            .admin_token_sealed,
        "sealed-token"
    );

    // Instances: save and read back every field.
    let mut inst = store.instance(&a.id).await.unwrap().unwrap();
    inst.instance_id = Some("local-tenant-alpha".into());
    inst.address = Some("http://127.0.0.1:9".into());
    inst.status = InstanceStatus::Running;
    inst.restarts = 3;
    inst.last_error = Some("boom".into());
    store.save_instance(&inst).await.unwrap();
    let back = store.instance(&a.id).await.unwrap().unwrap();
    assert_eq!(back.instance_id.as_deref(), Some("local-tenant-alpha"));
    assert_eq!(back.status, InstanceStatus::Running);
    assert_eq!(back.restarts, 3);
    assert_eq!(back.last_error.as_deref(), Some("boom"));

    // Boot events come back in order.
    for (i, stage) in ["launch", "config", "health"].iter().enumerate() {
        let e = BootEvent {
            org_id: a.id.clone(),
            stage: (*stage).into(),
            status: "ok".into(),
            detail: format!("step {i}"),
            source: "cp".into(),
            at: 1000 + i as i64,
        };
        store.add_boot_event(&e).await.unwrap();
    }
    let stages: Vec<String> = store
        .boot_events(&a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.stage)
        .collect();
    assert_eq!(stages, ["launch", "config", "health"]);

    // Workspaces: unique id, per-org listing, update, delete.
    store
        .insert_workspace(&workspace(&a, "ws-1"))
        .await
        .unwrap();
    store
        .insert_workspace(&workspace(&b, "ws-2"))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_workspace(&workspace(&b, "ws-1")).await,
        Err(StoreError::Conflict(_))
    ));
    let mut ws = store.workspace("ws-1").await.unwrap().unwrap();
    ws.state = WorkspaceState::Running;
    ws.address = Some("http://127.0.0.1:7".into());
    store.save_workspace(&ws).await.unwrap();
    assert_eq!(
        store.workspace("ws-1").await.unwrap().unwrap().state,
        WorkspaceState::Running
    );
    assert_eq!(store.workspaces_of_org(&a.id).await.unwrap().len(), 1);
    assert_eq!(store.all_workspaces().await.unwrap().len(), 2);

    // Purges: open, save, resume point, unfinished list.
    let mut p = Purge {
        id: new_id(),
        org_id: b.id.clone(),
        slug: "bravo".into(),
        status: PurgeStatus::Running,
        last_step: String::new(),
        attempts: 0,
        last_error: None,
        requested_by: "admin".into(),
        created_at: now_ms(),
        updated_at: now_ms(),
    };
    store.insert_purge(&p).await.unwrap();
    p.last_step = "workspaces".into();
    p.status = PurgeStatus::Failed;
    p.attempts = 1;
    p.last_error = Some("tenant: boom".into());
    store.save_purge(&p).await.unwrap();
    let open = store.open_purge(&b.id).await.unwrap().unwrap();
    assert_eq!(
        (open.last_step.as_str(), open.status, open.attempts),
        ("workspaces", PurgeStatus::Failed, 1)
    );
    assert_eq!(store.unfinished_purges().await.unwrap().len(), 1);

    // Deleting an org's rows removes every child row and keeps the purge record.
    store.delete_org_rows(&b.id).await.unwrap();
    assert!(store.org_by_id(&b.id).await.unwrap().is_none());
    assert!(store.workspace("ws-2").await.unwrap().is_none());
    assert!(store.credentials(&b.id).await.unwrap().is_none());
    assert!(store.instance(&b.id).await.unwrap().is_none());
    p.status = PurgeStatus::Done;
    store.save_purge(&p).await.unwrap();
    assert!(store.open_purge(&b.id).await.unwrap().is_none());
    assert_eq!(
        store
            .latest_purge_by_slug("bravo")
            .await
            .unwrap()
            .unwrap()
            .status,
        PurgeStatus::Done
    );
    // The slug is free again.
    let b2 = org("bravo");
    store
        .create_org(&b2, &creds(&b2, "hash-b2"), &instance(&b2))
        .await
        .unwrap();

    // Audit: newest first, limited.
    for i in 0..5 {
        let e = AuditEntry {
            at: 10_000 + i,
            actor: "admin".into(),
            action: format!("act-{i}"),
            target: "t".into(),
            outcome: "ok".into(),
            detail: String::new(),
        };
        store.append_audit(&e).await.unwrap();
    }
    let recent: Vec<String> = store
        .audit(2)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(recent, ["act-4", "act-3"]);

    // Leases: one holder at a time; renewal by the holder; release frees it.
    assert!(store
        .acquire_lease("reconciler", "r1", 60_000)
        .await
        .unwrap());
    assert!(!store
        .acquire_lease("reconciler", "r2", 60_000)
        .await
        .unwrap());
    assert!(store
        .acquire_lease("reconciler", "r1", 60_000)
        .await
        .unwrap());
    store.release_lease("reconciler", "r1").await.unwrap();
    assert!(store
        .acquire_lease("reconciler", "r2", 60_000)
        .await
        .unwrap());
    // An expired lease can be taken over.
    assert!(store.acquire_lease("short", "r1", -1).await.unwrap());
    assert!(store.acquire_lease("short", "r2", 60_000).await.unwrap());

    let counts = store.state_counts().await.unwrap();
    assert_eq!(counts.iter().find(|(t, _)| *t == "orgs").unwrap().1, 2);
}

/// Bootstrap tokens: used once, only by their org, only before expiry; concurrent uses have one
/// winner; they go with the org's rows.
async fn bootstrap_conformance(store: Store) {
    let o = org("bootme");
    store
        .create_org(&o, &creds(&o, "hash-boot"), &instance(&o))
        .await
        .unwrap();
    let now = now_ms();
    store
        .insert_bootstrap_token(&o.id, "bst-1", now + 60_000)
        .await
        .unwrap();
    assert!(!store
        .consume_bootstrap_token("other-org", "bst-1", now)
        .await
        .unwrap());
    assert!(!store
        .consume_bootstrap_token(&o.id, "bst-unknown", now)
        .await
        .unwrap());
    assert!(store
        .bootstrap_token_usable(&o.id, "bst-1", now)
        .await
        .unwrap());
    assert!(!store
        .bootstrap_token_usable("other-org", "bst-1", now)
        .await
        .unwrap());
    assert!(store
        .consume_bootstrap_token(&o.id, "bst-1", now)
        .await
        .unwrap());
    assert!(!store
        .bootstrap_token_usable(&o.id, "bst-1", now)
        .await
        .unwrap());
    assert!(
        !store
            .consume_bootstrap_token(&o.id, "bst-1", now)
            .await
            .unwrap(),
        "a bootstrap token works once"
    );
    store
        .insert_bootstrap_token(&o.id, "bst-2", now + 1_000)
        .await
        .unwrap();
    assert!(
        !store
            .consume_bootstrap_token(&o.id, "bst-2", now + 1_000)
            .await
            .unwrap(),
        "not at or after its expiry"
    );
    assert!(!store
        .bootstrap_token_usable(&o.id, "bst-2", now + 1_000)
        .await
        .unwrap());
    store
        .insert_bootstrap_token(&o.id, "bst-3", now + 60_000)
        .await
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (store, id) = (store.clone(), o.id.clone());
        handles.push(tokio::spawn(async move {
            store
                .consume_bootstrap_token(&id, "bst-3", now)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for h in handles {
        winners += h.await.unwrap() as usize;
    }
    assert_eq!(winners, 1, "concurrent uses of one token have one winner");
    store
        .insert_bootstrap_token(&o.id, "bst-4", now + 60_000)
        .await
        .unwrap();
    store.delete_org_rows(&o.id).await.unwrap();
    assert!(!store
        .consume_bootstrap_token(&o.id, "bst-4", now)
        .await
        .unwrap());
}

#[tokio::test]
async fn sqlite_bootstrap_tokens_conform() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cp.db").display());
    bootstrap_conformance(Store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_bootstrap_tokens_conform() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("bootstrap");
    bootstrap_conformance(Store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cp.db").display());
    conformance(Store::open(&url).await.unwrap()).await;
    // Migrations are idempotent: opening again applies nothing and keeps the data.
    let again = Store::open(&url).await.unwrap();
    assert_eq!(again.list_orgs().await.unwrap().len(), 2);
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("conformance");
    conformance(Store::open(&url).await.unwrap()).await;
    let again = Store::open(&url).await.unwrap();
    assert_eq!(again.list_orgs().await.unwrap().len(), 2);
}

#[tokio::test]
async fn postgres_leases_exclude_concurrent_replicas() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.create_database("leases");
    let stores = [
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    ];
    let mut handles = Vec::new();
    for i in 0..20 {
        let store = stores[i % 2].clone();
        handles.push(tokio::spawn(async move {
            store
                .acquire_lease("race", &format!("r{i}"), 60_000)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for h in handles {
        winners += h.await.unwrap() as usize;
    }
    assert_eq!(winners, 1, "exactly one replica may hold a lease");
}
