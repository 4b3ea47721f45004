//! CSV import through the gateway: exact counts and per-line reasons for a messy file, an
//! idempotent re-run, and a 100k-row import.

mod common;

use std::time::Duration;

use common::{TestMesh, access_token};
use serde_json::{Value, json};

async fn upload(t: &TestMesh, token: &str, name: &str, csv: Vec<u8>) -> Value {
    let resp = reqwest::Client::new()
        .post(t.url(&format!("/v1/contact-imports?file_name={name}")))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "upload: {body}");
    body
}

async fn finished(t: &TestMesh, token: &str, id: &str, within: Duration) -> Value {
    cos_testkit::eventually(within, || async {
        let (_, job) = t
            .get(&format!("/v1/contact-imports/{id}"), Some(token))
            .await;
        matches!(
            job["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
        .then_some(job)
    })
    .await
    .expect("import finishes")
}

fn n(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
async fn messy_csv_gives_exact_counts_and_reasons_and_rerun_changes_nothing() {
    let t = common::spawn_mesh().await;
    let tok = access_token(&t.register("import@example.com", "Importers").await);
    for (key, ty) in [("plan", "string"), ("signup", "date"), ("notes", "string")] {
        let (s, b) = t
            .post(
                "/v1/contact-attributes",
                Some(&tok),
                json!({"key": key, "type": ty}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let mut csv: Vec<u8> =
        "\u{feff}email,first_name,plan,signup,favourite colour,tags,notes\n".into();
    csv.extend_from_slice(b"ada@example.com,Ada,pro,2024-01-05,blue,vip;beta,\n"); // 2 ok
    csv.extend_from_slice(b"bob@example.com,\"Smith, Bob\",free,2024-02-01,red,,\n"); // 3 ok
    csv.extend_from_slice(b"ADA@example.com,Ada Again,pro,2024-01-05,,,\n"); // 4 duplicate
    csv.extend_from_slice(b"not-an-email,Bad,free,2024-01-01,,,\n"); // 5 bad email
    csv.extend_from_slice(b"carol@example.com,Carol,pro,2024-13-45,,,\n"); // 6 bad date
    csv.extend_from_slice(
        b"\"dave@example.com\",Dave,free,2024-03-03,,,\"line one\nline two, with a comma\"\n",
    ); // 7-8 ok
    csv.extend_from_slice(b"eve@example.com,\xe9ve,free,2024-03-04,,,\n"); // 9 not UTF-8
    csv.extend_from_slice(b"frank@example.com,Frank,free,,green,,\n"); // 10 ok

    let job = upload(&t, &tok, "messy.csv", csv.clone()).await;
    assert_eq!(job["unknown_columns"], json!(["favourite colour"]), "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let done = finished(&t, &tok, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        [
            &done["rows_read"],
            &done["rows_imported"],
            &done["rows_updated"],
            &done["rows_unchanged"],
            &done["rows_rejected"]
        ]
        .map(n),
        [8, 4, 0, 0, 4],
        "{done}"
    );
    let (_, rej) = t
        .get(&format!("/v1/contact-imports/{id}/rejections"), Some(&tok))
        .await;
    let rej = rej["rejections"].as_array().unwrap().clone();
    let lines: Vec<i64> = rej.iter().map(|r| n(&r["line"])).collect();
    assert_eq!(lines, vec![4, 5, 6, 9], "{rej:?}");
    let reason = |i: usize| rej[i]["reason"].as_str().unwrap().to_lowercase();
    assert!(
        reason(0).contains("duplicate") && reason(0).contains('2'),
        "{}",
        reason(0)
    );
    assert!(reason(1).contains("email"), "{}", reason(1));
    assert!(
        reason(2).contains("date") || reason(2).contains("signup"),
        "{}",
        reason(2)
    );
    assert!(reason(3).contains("utf-8"), "{}", reason(3));
    let (_, dave) = t.get("/v1/contacts?query=dave", Some(&tok)).await;
    assert_eq!(
        dave["contacts"][0]["attributes"]["notes"],
        "line one\nline two, with a comma"
    );
    let (_, bob) = t.get("/v1/contacts?query=bob", Some(&tok)).await;
    assert_eq!(bob["contacts"][0]["first_name"], "Smith, Bob");
    assert_eq!(bob["contacts"][0]["attributes"]["signup"], "2024-02-01");

    // The same file again changes nothing.
    let versions = t
        .count("SELECT coalesce(sum(version), 0)::bigint FROM segmentation.contacts")
        .await;
    let again = upload(&t, &tok, "messy.csv", csv).await;
    let done = finished(
        &t,
        &tok,
        again["id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        [
            &done["rows_read"],
            &done["rows_imported"],
            &done["rows_updated"],
            &done["rows_unchanged"],
            &done["rows_rejected"]
        ]
        .map(n),
        [8, 0, 0, 4, 4],
        "{done}"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.contacts").await,
        4
    );
    assert_eq!(
        t.count("SELECT coalesce(sum(version), 0)::bigint FROM segmentation.contacts")
            .await,
        versions
    );
    t.stop().await;
}

#[tokio::test]
async fn a_bad_mapping_is_refused_before_the_job_starts() {
    let t = common::spawn_mesh().await;
    let tok = access_token(&t.register("mapping@example.com", "Mappers").await);
    let resp = reqwest::Client::new()
        .post(t.url("/v1/contact-imports?file_name=x.csv&mapping=%7B%22Mail%22%3A%22email%22%7D"))
        .bearer_auth(&tok)
        .header("content-type", "text/csv")
        .body("email,name\na@example.com,A\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert!(body.to_string().contains("Mail"), "{body}");
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.import_jobs")
            .await,
        0
    );
    t.stop().await;
}

#[tokio::test]
async fn a_hundred_thousand_rows_import() {
    let t = common::spawn_mesh().await;
    let auth = t.register("bulk@example.com", "Bulk").await;
    let tok = access_token(&auth);
    t.comp_plan(&tok, auth["tenant"]["id"].as_str().unwrap(), "enterprise")
        .await;
    let (s, _) = t
        .post(
            "/v1/contact-attributes",
            Some(&tok),
            json!({"key": "score", "type": "number"}),
        )
        .await;
    assert_eq!(s, 201);
    let mut csv = String::from("email,first_name,score,tags\n");
    for i in 0..100_000 {
        csv.push_str(&format!(
            "user{i}@bulk.example,User {i},{},t{}\n",
            i % 100,
            i % 7
        ));
    }
    let job = upload(&t, &tok, "bulk.csv", csv.into_bytes()).await;
    let done = finished(
        &t,
        &tok,
        job["id"].as_str().unwrap(),
        Duration::from_secs(600),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(n(&done["rows_imported"]), 100_000, "{done}");
    assert_eq!(n(&done["rows_rejected"]), 0, "{done}");
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.contacts").await,
        100_000
    );
    assert_eq!(
        t.count("SELECT live_contacts FROM segmentation.tenant_stats")
            .await,
        100_000
    );
    t.stop().await;
}

#[tokio::test]
async fn the_plans_contact_limit_stops_imports_and_creates() {
    let t = common::spawn_mesh().await;
    let tok = access_token(&t.register("limit@example.com", "Limited").await);
    // The trial plan allows 500 contacts.
    let mut csv = String::from("email\n");
    for i in 0..510 {
        csv.push_str(&format!("c{i}@limit.example\n"));
    }
    let job = upload(&t, &tok, "limit.csv", csv.into_bytes()).await;
    let done = finished(
        &t,
        &tok,
        job["id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        [
            &done["rows_read"],
            &done["rows_imported"],
            &done["rows_over_limit"]
        ]
        .map(n),
        [510, 500, 10],
        "{done}"
    );
    let (_, rej) = t
        .get(
            &format!(
                "/v1/contact-imports/{}/rejections",
                done["id"].as_str().unwrap()
            ),
            Some(&tok),
        )
        .await;
    assert_eq!(rej["rejections"].as_array().unwrap().len(), 10);
    assert!(
        rej["rejections"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{rej}"
    );
    // At the limit, creating one more is a 402 naming the limit, and nothing is written.
    let (s, b) = t
        .post(
            "/v1/contacts",
            Some(&tok),
            json!({"contact": {"email": "one-more@limit.example"}}),
        )
        .await;
    common::assert_problem(s, &b, 402, None);
    assert_eq!(b["metadata"]["limit"], "contacts", "{b}");
    assert_eq!(b["metadata"]["value"], "500", "{b}");
    assert_eq!(b["metadata"]["usage"], "500", "{b}");
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.contacts").await,
        500
    );
    // Updating an existing contact still works at the limit.
    let (s, b) = t
        .post(
            "/v1/contacts:upsert",
            Some(&tok),
            json!({"contact": {"email": "c1@limit.example", "first_name": "Still"}}),
        )
        .await;
    assert_eq!((s, b["outcome"].as_str()), (200, Some("updated")), "{b}");
    t.stop().await;
}
