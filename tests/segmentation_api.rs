//! The audience through the gateway: contacts (create, upsert, update with version, delete,
//! GDPR erase, export), attributes, segments (dynamic, static, preview, refresh, members) and
//! tenant isolation.

mod common;

use std::time::Duration;

use common::{TestMesh, access_token, assert_problem, spawn_mesh};
use reqwest::Method;
use serde_json::{Value, json};

/// int64 fields arrive as JSON strings (proto3 JSON mapping); Struct numbers as floats.
fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN)
}

async fn tenant(t: &TestMesh, email: &str) -> String {
    access_token(&t.register(email, "Audience Co").await)
}

async fn define(t: &TestMesh, token: &str, key: &str, ty: &str) {
    let (s, b) = t
        .post(
            "/v1/contact-attributes",
            Some(token),
            json!({"key": key, "type": ty, "label": key}),
        )
        .await;
    assert_eq!(s, 201, "define {key}: {b}");
}

async fn create(t: &TestMesh, token: &str, contact: Value) -> Value {
    let (s, b) = t
        .post("/v1/contacts", Some(token), json!({ "contact": contact }))
        .await;
    assert_eq!(s, 201, "create contact: {b}");
    b
}

async fn patch(t: &TestMesh, token: &str, path: &str, body: Value) -> (u16, Value) {
    let (s, b, _) = t.call(Method::PATCH, path, Some(token), Some(body)).await;
    (s, b)
}

#[tokio::test]
async fn contact_lifecycle_with_versions_upsert_and_erase() {
    let t = spawn_mesh().await;
    let tok = tenant(&t, "contacts@example.com").await;
    define(&t, &tok, "plan", "string").await;
    define(&t, &tok, "score", "number").await;

    let c = create(
        &t,
        &tok,
        json!({"email": "Ada@Example.com", "first_name": "Ada", "attributes": {"plan": "pro", "score": 42},
               "tags": ["VIP", "beta"], "consent": [{"channel": "email", "state": "subscribed", "source": "form"}]}),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["email"], "Ada@Example.com");
    assert_eq!(c["tags"], json!(["beta", "vip"]));
    assert_eq!(num(&c["attributes"]["score"]), 42.0);
    assert_eq!(num(&c["version"]), 1.0);

    // The same email again (any case) is taken.
    let (s, b) = t
        .post(
            "/v1/contacts",
            Some(&tok),
            json!({"contact": {"email": "ada@example.COM"}}),
        )
        .await;
    assert_problem(s, &b, 409, Some("email"));

    // Bad input names the field and writes nothing.
    let before = t.count("SELECT count(*) FROM segmentation.contacts").await;
    let (s, b) = t
        .post(
            "/v1/contacts",
            Some(&tok),
            json!({"contact": {"email": "not-an-email", "attributes": {"score": "high", "nope": 1}}}),
        )
        .await;
    assert_problem(s, &b, 422, Some("contact.email"));
    assert_problem(s, &b, 422, Some("contact.attributes.score"));
    assert_problem(s, &b, 422, Some("contact.attributes.nope"));
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.contacts").await,
        before
    );

    // Update needs the current version; a stale one is a 409 and changes nothing.
    let (s, b) = patch(
        &t,
        &tok,
        &format!("/v1/contacts/{id}"),
        json!({"contact": {"last_name": "Lovelace"}, "version": 1}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(num(&b["version"]), 2.0);
    let (s, b) = patch(
        &t,
        &tok,
        &format!("/v1/contacts/{id}"),
        json!({"contact": {"last_name": "Byron"}, "version": 1}),
    )
    .await;
    assert_problem(s, &b, 409, None);
    let (_, got) = t.get(&format!("/v1/contacts/{id}"), Some(&tok)).await;
    assert_eq!(got["last_name"], "Lovelace");

    // Upsert by email: the same data twice changes nothing the second time.
    let body = json!({"contact": {"email": "grace@example.com", "first_name": "Grace", "attributes": {"plan": "free"}}});
    let (s, first) = t
        .post("/v1/contacts:upsert", Some(&tok), body.clone())
        .await;
    assert_eq!(
        (s, first["outcome"].as_str()),
        (200, Some("created")),
        "{first}"
    );
    let (_, second) = t.post("/v1/contacts:upsert", Some(&tok), body).await;
    assert_eq!(second["outcome"], "unchanged");
    assert_eq!(num(&second["contact"]["version"]), 1.0);
    let (_, third) = t
        .post(
            "/v1/contacts:upsert",
            Some(&tok),
            json!({"contact": {"email": "GRACE@example.com", "attributes": {"plan": "pro"}}}),
        )
        .await;
    assert_eq!(third["outcome"], "updated");
    assert_eq!(third["contact"]["first_name"], "Grace");
    assert_eq!(third["contact"]["attributes"]["plan"], "pro");

    // List with a filter and cursor pagination.
    for i in 0..5 {
        create(
            &t,
            &tok,
            json!({"email": format!("page{i}@example.com"), "tags": ["paged"]}),
        )
        .await;
    }
    let (s, page1) = t
        .get("/v1/contacts?tag=paged&page_size=3", Some(&tok))
        .await;
    assert_eq!(s, 200, "{page1}");
    assert_eq!(page1["contacts"].as_array().unwrap().len(), 3);
    let token = page1["next_page_token"].as_str().unwrap();
    let (_, page2) = t
        .get(
            &format!("/v1/contacts?tag=paged&page_size=3&page_token={token}"),
            Some(&tok),
        )
        .await;
    assert_eq!(page2["contacts"].as_array().unwrap().len(), 2);
    assert!(
        page2["next_page_token"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );

    // Soft delete frees the email; erase removes the row and leaves an audit entry without PII.
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/contacts/{id}"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = t.get(&format!("/v1/contacts/{id}"), Some(&tok)).await;
    assert_eq!(s, 404);
    create(&t, &tok, json!({"email": "ada@example.com"})).await;
    let (s, b) = t
        .post(
            &format!("/v1/contacts/{id}:erase"),
            Some(&tok),
            json!({"reason": "GDPR request 7"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.contacts WHERE first_name = 'Ada' AND last_name = 'Lovelace'").await,
        0
    );
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.erasure_log WHERE reason = 'GDPR request 7' AND NOT (identifier_hashes::text ILIKE '%ada%')").await,
        1
    );
    t.stop().await;
}

#[tokio::test]
async fn export_streams_csv_and_jsonl() {
    let t = spawn_mesh().await;
    let auth = t.register("export@example.com", "Exporters").await;
    let tok = access_token(&auth);
    t.comp_plan(&tok, auth["tenant"]["id"].as_str().unwrap(), "enterprise")
        .await;
    define(&t, &tok, "plan", "string").await;
    // 1205 contacts (more than one export page), one with a spreadsheet formula as its name.
    let mut csv = String::from("email,first_name,plan\n");
    for i in 0..1205 {
        let name = if i == 0 {
            "\"=HYPERLINK(\"\"x\"\")\""
        } else {
            "Name"
        };
        csv.push_str(&format!("e{i}@example.com,{name},pro\n"));
    }
    let resp = reqwest::Client::new()
        .post(t.url("/v1/contact-imports?file_name=export.csv"))
        .bearer_auth(&tok)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    cos_testkit::eventually(Duration::from_secs(60), || async {
        (t.count("SELECT count(*) FROM segmentation.contacts").await == 1205).then_some(())
    })
    .await
    .expect("import done");
    let resp = reqwest::Client::new()
        .get(t.url("/v1/contacts:export?format=csv"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = resp.text().await.unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header = rdr.headers().unwrap().clone();
    assert!(header.iter().any(|h| h == "attributes.plan"));
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 1205);
    assert!(
        rows.iter().any(|r| r.get(4) == Some("'=HYPERLINK(\"x\")")),
        "formula cells are neutralised"
    );
    let resp = reqwest::Client::new()
        .get(t.url("/v1/contacts:export?format=jsonl"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let lines = resp.text().await.unwrap();
    assert_eq!(lines.lines().count(), 1205);
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["attributes"]["plan"], "pro");
    t.stop().await;
}

#[tokio::test]
async fn segments_dynamic_static_preview_members_and_cycles() {
    let t = spawn_mesh().await;
    let tok = tenant(&t, "segments@example.com").await;
    define(&t, &tok, "plan", "string").await;
    define(&t, &tok, "score", "number").await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let plan = if i % 3 == 0 { "pro" } else { "free" };
        let c = create(
            &t,
            &tok,
            json!({"email": format!("s{i}@example.com"), "attributes": {"plan": plan, "score": i}}),
        )
        .await;
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    let criteria = json!({"all": [{"field": "attributes.plan", "op": "eq", "value": "pro"}, {"field": "attributes.score", "op": "gte", "value": 10}]});
    let (s, p) = t
        .post(
            "/v1/segments:preview",
            Some(&tok),
            json!({"criteria": criteria}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(num(&p["count"]), 6.0); // 12, 15, 18, 21, 24, 27
    let (s, seg) = t
        .post(
            "/v1/segments",
            Some(&tok),
            json!({"name": "Pro 10+", "kind": "dynamic", "criteria": criteria}),
        )
        .await;
    assert_eq!(s, 201, "{seg}");
    assert_eq!(num(&seg["size"]), 6.0);
    let sid = seg["id"].as_str().unwrap().to_owned();
    let (_, members) = t
        .get(
            &format!("/v1/segments/{sid}/members?page_size=5"),
            Some(&tok),
        )
        .await;
    assert_eq!(members["members"].as_array().unwrap().len(), 5);
    assert!(!members["next_page_token"].as_str().unwrap().is_empty());

    // Static segment: add and remove by hand; a segment referencing it; cycles refused.
    let (s, st) = t
        .post(
            "/v1/segments",
            Some(&tok),
            json!({"name": "Hand picked", "kind": "static"}),
        )
        .await;
    assert_eq!(s, 201, "{st}");
    let stid = st["id"].as_str().unwrap().to_owned();
    let (s, b) = t
        .post(
            &format!("/v1/segments/{stid}/members:add"),
            Some(&tok),
            json!({"contact_ids": [ids[1], ids[2]]}),
        )
        .await;
    assert_eq!(
        (s, num(&b["changed"]), num(&b["size"])),
        (200, 2.0, 2.0),
        "{b}"
    );
    let (_, b) = t
        .post(
            &format!("/v1/segments/{stid}/members:add"),
            Some(&tok),
            json!({"contact_ids": [ids[1]]}),
        )
        .await;
    assert_eq!(num(&b["changed"]), 0.0);
    let (s, b) = t
        .post(
            &format!("/v1/segments/{sid}/members:add"),
            Some(&tok),
            json!({"contact_ids": [ids[1]]}),
        )
        .await;
    assert_problem(s, &b, 409, None);
    let (s, combo) = t
        .post("/v1/segments", Some(&tok), json!({"name": "Picked or pro", "kind": "dynamic",
            "criteria": {"any": [{"op": "in_segment", "value": stid}, {"op": "in_segment", "value": sid}]}}))
        .await;
    assert_eq!(s, 201, "{combo}");
    assert_eq!(num(&combo["size"]), 8.0);
    let cid = combo["id"].as_str().unwrap().to_owned();
    let version = num(&seg["version"]) as i64;
    let (s, b) = patch(
        &t,
        &tok,
        &format!("/v1/segments/{sid}"),
        json!({"version": version, "criteria": {"op": "in_segment", "value": cid}}),
    )
    .await;
    assert_problem(s, &b, 422, Some("criteria"));
    assert!(
        b.to_string().contains("cycle") || b.to_string().contains("->"),
        "{b}"
    );
    // Can't delete a segment another one uses.
    let (s, b, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/segments/{stid}"),
            Some(&tok),
            None,
        )
        .await;
    assert_problem(s, &b, 409, None);

    // Bad criteria point at the node; injection attempts are just bad fields/values.
    for (criteria, field) in [
        (
            json!({"all": [{"field": "attributes.plan", "op": "eq", "value": "pro"}, {"field": "nope", "op": "eq", "value": 1}]}),
            "criteria.all[1].field",
        ),
        (
            json!({"field": "attributes.score", "op": "gt", "value": "ten"}),
            "criteria.value",
        ),
        (
            json!({"field": "email'; DROP TABLE segmentation.contacts; --", "op": "eq", "value": "x"}),
            "criteria.field",
        ),
    ] {
        let (s, b) = t
            .post(
                "/v1/segments:preview",
                Some(&tok),
                json!({"criteria": criteria}),
            )
            .await;
        assert_problem(s, &b, 422, Some(field));
    }
    let (s, b) = t
        .post(
            "/v1/segments:preview",
            Some(&tok),
            json!({"criteria": {"field": "attributes.plan", "op": "eq", "value": "x' OR '1'='1"}}),
        )
        .await;
    assert_eq!((s, num(&b["count"])), (200, 0.0), "{b}");
    assert_eq!(
        t.count("SELECT count(*) FROM segmentation.contacts").await,
        30
    );
    t.stop().await;
}

#[tokio::test]
async fn another_tenants_ids_are_not_found() {
    let t = spawn_mesh().await;
    let a = tenant(&t, "iso-a@example.com").await;
    let b = tenant(&t, "iso-b@example.com").await;
    let ca = create(&t, &a, json!({"email": "secret@a.example"})).await;
    let caid = ca["id"].as_str().unwrap();
    let (_, sa) = t
        .post(
            "/v1/segments",
            Some(&a),
            json!({"name": "A list", "kind": "static"}),
        )
        .await;
    let said = sa["id"].as_str().unwrap();
    let (_, sb) = t
        .post(
            "/v1/segments",
            Some(&b),
            json!({"name": "B list", "kind": "static"}),
        )
        .await;
    let sbid = sb["id"].as_str().unwrap();

    let (s, _) = t.get(&format!("/v1/contacts/{caid}"), Some(&b)).await;
    assert_eq!(s, 404);
    let (s, _) = t.get(&format!("/v1/segments/{said}"), Some(&b)).await;
    assert_eq!(s, 404);
    let (s, _) = t
        .get(&format!("/v1/segments/{said}/members"), Some(&b))
        .await;
    assert_eq!(s, 404);
    let (s, _) = t
        .post(&format!("/v1/segments/{said}:refresh"), Some(&b), json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, body) = t
        .post(
            &format!("/v1/segments/{sbid}/members:add"),
            Some(&b),
            json!({"contact_ids": [caid]}),
        )
        .await;
    assert_problem(s, &body, 404, None);
    let (s, _) = t
        .post(&format!("/v1/contacts/{caid}:erase"), Some(&b), json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/contacts/{caid}"),
            Some(&b),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, body) = patch(
        &t,
        &b,
        &format!("/v1/contacts/{caid}"),
        json!({"version": 1, "contact": {"first_name": "x"}}),
    )
    .await;
    assert_problem(s, &body, 404, None);
    let (_, p) = t
        .post(
            "/v1/segments:preview",
            Some(&b),
            json!({"criteria": {"field": "email", "op": "contains", "value": "secret"}}),
        )
        .await;
    assert_eq!(num(&p["count"]), 0.0);
    let (_, p) = t
        .post(
            "/v1/segments:preview",
            Some(&b),
            json!({"criteria": {"op": "in_segment", "value": said}}),
        )
        .await;
    assert!(p["count"].is_null() || num(&p["count"]) == 0.0, "{p}");
    let resp = reqwest::Client::new()
        .get(t.url(&format!("/v1/contacts:export?segment_id={said}")))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let export = reqwest::Client::new()
        .get(t.url("/v1/contacts:export"))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert!(!export.text().await.unwrap().contains("secret@a.example"));
    let (_, list) = t.get("/v1/contacts", Some(&b)).await;
    assert_eq!(list["contacts"].as_array().map_or(0, Vec::len), 0);
    // And A still has everything.
    let (s, _) = t.get(&format!("/v1/contacts/{caid}"), Some(&a)).await;
    assert_eq!(s, 200);
    let _ = Duration::from_secs(0);
    t.stop().await;
}
