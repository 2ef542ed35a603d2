//! Search: substring matches on names (folded) and descriptions, names first.

use wharf_db::SearchHit;

use crate::support::{REGISTRY, TestDb, publish, user, version, version_with};

on_both_backends!(
    names_match_before_descriptions,
    pages_share_one_total,
    queries_are_literal_text,
    max_version_is_the_newest_unyanked_by_semver,
    the_description_is_that_of_the_highest_version,
    registries_do_not_see_each_other,
    a_search_within_grants_counts_only_what_they_let_see,
);

async fn publish_described(db: &TestDb, name: &str, description: &str) {
    let new = version_with(name, "1.0.0", "alice", Some(description), &["kw"]);
    db.crates(REGISTRY).publish(&new).await.unwrap();
}

fn names(results: &(Vec<SearchHit>, u64)) -> Vec<&str> {
    results.0.iter().map(|h| h.name.as_str()).collect()
}

async fn names_match_before_descriptions(db: TestDb) {
    publish_described(&db, "serde", "A serialization framework").await;
    publish_described(&db, "serde_json", "A JSON format for it").await;
    publish_described(&db, "My-Serde-Helper", "helps").await;
    publish_described(&db, "other", "Mentions SERDE in capitals").await;
    publish_described(&db, "aaa", "Ünïcode and serde, lowercased in Rust").await;
    publish_described(&db, "unrelated", "nothing to see").await;

    let results = db.crates(REGISTRY).search("Serde", 10, 1).await.unwrap();
    assert_eq!(
        names(&results),
        ["serde", "My-Serde-Helper", "serde_json", "aaa", "other"]
    );
    assert_eq!(results.1, 5);
    assert_eq!(
        results.0[0],
        SearchHit {
            name: "serde".into(),
            max_version: Some("1.0.0".into()),
            description: Some("A serialization framework".into()),
        }
    );

    // `-` and `_` are one in names; the exact name still comes first.
    let results = db
        .crates(REGISTRY)
        .search("SERDE-JSON", 10, 1)
        .await
        .unwrap();
    assert_eq!(names(&results), ["serde_json"]);
    let results = db.crates(REGISTRY).search("ünï", 10, 1).await.unwrap();
    assert_eq!(names(&results), ["aaa"], "descriptions fold Unicode case");
    let results = db
        .crates(REGISTRY)
        .search("  helper ", 10, 1)
        .await
        .unwrap();
    assert_eq!(names(&results), ["My-Serde-Helper"]);
}

async fn pages_share_one_total(db: TestDb) {
    for i in 0..7 {
        publish(&db, &format!("crate{i}"), "1.0.0", "alice").await;
    }
    let crates = db.crates(REGISTRY);
    let mut seen = Vec::new();
    for page in 1..=4 {
        let (hits, total) = crates.search("crate", 2, page).await.unwrap();
        assert_eq!(total, 7);
        assert_eq!(hits.len(), if page == 4 { 1 } else { 2 });
        seen.extend(hits.into_iter().map(|h| h.name));
    }
    let expected: Vec<String> = (0..7).map(|i| format!("crate{i}")).collect();
    assert_eq!(seen, expected);
    assert!(crates.search("crate", 2, 5).await.unwrap().0.is_empty());
    // Page 0 is page 1; per_page is held between 1 and 100.
    assert_eq!(
        crates.search("crate", 2, 0).await.unwrap(),
        crates.search("crate", 2, 1).await.unwrap()
    );
    assert_eq!(crates.search("crate", 0, 1).await.unwrap().0.len(), 1);
    assert_eq!(crates.search("", 1000, 1).await.unwrap().0.len(), 7);
}

async fn queries_are_literal_text(db: TestDb) {
    publish_described(&db, "a_b", "plain").await;
    publish_described(&db, "a-c", "plain").await;
    publish_described(&db, "axb", "100% safe").await;
    let crates = db.crates(REGISTRY);
    assert_eq!(names(&crates.search("a_b", 10, 1).await.unwrap()), ["a_b"]);
    assert_eq!(
        names(&crates.search("a-", 10, 1).await.unwrap()),
        ["a_b", "a-c"]
    );
    assert_eq!(names(&crates.search("%", 10, 1).await.unwrap()), ["axb"]);
    assert_eq!(crates.search("\\", 10, 1).await.unwrap().1, 0);
    assert_eq!(
        crates
            .search("'; DROP TABLE crates; --", 10, 1)
            .await
            .unwrap()
            .1,
        0
    );
    assert_eq!(crates.search("", 10, 1).await.unwrap().1, 3);
}

async fn max_version_is_the_newest_unyanked_by_semver(db: TestDb) {
    for vers in ["1.0.0", "1.2.0", "0.9.0", "1.3.0-beta.1", "1.2.1+build"] {
        publish(&db, "foo", vers, "alice").await;
    }
    assert_eq!(max_version(&db).await.as_deref(), Some("1.3.0-beta.1"));
    let crates = db.crates(REGISTRY);
    let alice = user("alice");
    crates
        .set_yanked("foo", "1.3.0-beta.1", true, &alice)
        .await
        .unwrap();
    assert_eq!(max_version(&db).await.as_deref(), Some("1.2.1+build"));
    for vers in ["1.2.1", "1.2.0", "1.0.0", "0.9.0"] {
        crates.set_yanked("foo", vers, true, &alice).await.unwrap();
    }
    assert_eq!(max_version(&db).await, None, "every version yanked");
    crates
        .set_yanked("foo", "0.9.0", false, &alice)
        .await
        .unwrap();
    assert_eq!(max_version(&db).await.as_deref(), Some("0.9.0"));
}

async fn max_version(db: &TestDb) -> Option<String> {
    let results = db.crates(REGISTRY).search("foo", 1, 1).await.unwrap();
    results.0[0].max_version.clone()
}

async fn the_description_is_that_of_the_highest_version(db: TestDb) {
    let crates = db.crates(REGISTRY);
    for (vers, description) in [
        ("1.0.0", "first"),
        ("2.0.0", "second"),
        ("1.5.0", "backport"),
    ] {
        let new = version_with("foo", vers, "alice", Some(description), &[]);
        crates.publish(&new).await.unwrap();
    }
    let hit = &crates.search("foo", 1, 1).await.unwrap().0[0];
    assert_eq!(hit.description.as_deref(), Some("second"));
    assert_eq!(crates.search("backport", 10, 1).await.unwrap().1, 0);
}

async fn registries_do_not_see_each_other(db: TestDb) {
    publish(&db, "shared-name", "1.0.0", "alice").await;
    let other = db.crates("other");
    assert_eq!(other.search("shared", 10, 1).await.unwrap().1, 0);
    assert_eq!(other.index_file("shared-name").await.unwrap(), None);
    // The same name is free there, for someone else.
    let new = version("shared-name", "2.0.0", "bob");
    assert!(other.publish(&new).await.unwrap().new_crate);
    assert_eq!(
        db.owners("other").list("shared-name").await.unwrap(),
        [user("bob")]
    );
    assert_eq!(
        db.owners(REGISTRY).list("shared-name").await.unwrap(),
        [user("alice")]
    );
}

/// Issue 13.3: a client with grants learns nothing of the other crates, not
/// from a page and not from the total.
async fn a_search_within_grants_counts_only_what_they_let_see(db: TestDb) {
    for name in [
        "acme-a",
        "Acme_B",
        "acme",
        "acmex",
        "secret-sauce",
        "axb",
        "a-b",
    ] {
        publish_described(&db, name, "made by acme").await;
    }
    let crates = db.crates(REGISTRY);
    let within = |grants: &[&str]| grants.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>();
    let acme = within(&["acme-*"]);

    let found = crates
        .search_within("secret-sauce", Some(&acme), 10, 1)
        .await
        .unwrap();
    assert_eq!(found, (vec![], 0), "a hidden crate is not even counted");
    let found = crates
        .search_within("acme", Some(&acme), 10, 1)
        .await
        .unwrap();
    assert_eq!(names(&found), ["acme-a", "Acme_B"]);
    assert_eq!(found.1, 2);
    // Pages are cut from the visible crates only.
    let page2 = crates
        .search_within("acme", Some(&acme), 1, 2)
        .await
        .unwrap();
    assert_eq!((names(&page2), page2.1), (vec!["Acme_B"], 2));
    assert!(
        crates
            .search_within("", Some(&acme), 10, 2)
            .await
            .unwrap()
            .0
            .is_empty()
    );

    // Globs fold case and `-`/`_`, and `?` is one character; `%` and `_` are
    // literal in a grant.
    let found = crates
        .search_within("", Some(&within(&["ACME_?", "a%b", "a_b"])), 10, 1)
        .await
        .unwrap();
    assert_eq!(
        (names(&found), found.1),
        (vec!["a-b", "acme-a", "Acme_B"], 3)
    );
    let found = crates
        .search_within("", Some(&within(&["acme", "secret_sauce"])), 10, 1)
        .await
        .unwrap();
    assert_eq!(names(&found), ["acme", "secret-sauce"]);
    assert_eq!(
        crates.search_within("", Some(&[]), 10, 1).await.unwrap(),
        (vec![], 0)
    );
    assert_eq!(crates.search_within("", None, 10, 1).await.unwrap().1, 7);
}
