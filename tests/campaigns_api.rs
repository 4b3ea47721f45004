//! Campaigns through the gateway: create, read, list with filters and pages, update with a
//! version, the lifecycle state machine (schedule, unschedule, cancel, archive and the illegal
//! moves), duplicate, soft delete; schedules across DST; bad input that names its field and
//! writes nothing; tenant isolation and RLS.

mod common;

use common::{TestMesh, access_token, assert_problem, spawn_mesh};
use reqwest::Method;
use serde_json::{Value, json};

/// int64 fields arrive as JSON strings (proto3 JSON mapping).
fn num(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(i64::MIN)
}

async fn tenant(t: &TestMesh, email: &str) -> String {
    access_token(&t.register(email, "Campaign Co").await)
}

async fn segment(t: &TestMesh, token: &str, name: &str) -> String {
    let (s, b) = t
        .post(
            "/v1/segments",
            Some(token),
            json!({"name": name, "kind": "static"}),
        )
        .await;
    assert_eq!(s, 201, "segment: {b}");
    b["id"].as_str().unwrap().to_owned()
}

fn email_campaign(name: &str, segment: &str) -> Value {
    json!({
        "name": name,
        "description": "Winter promotion for active subscribers",
        "goal": "Drive 200 upgrades",
        "channels": ["email"],
        "target_segment_ids": [segment],
        "content": {"email": {
            "subject": "Hi {{ contact.first_name | default(\"there\") }}",
            "preheader": "Only this week",
            "html_body": "<p>Hello {{ contact.first_name }}</p>\n<p>{{ contact.attributes.plan }}</p>",
            "text_body": "Hello {{ contact.first_name }}"
        }},
        "budget": {"amount_minor": 5000, "currency": "eur"},
    })
}

async fn create(t: &TestMesh, token: &str, body: Value) -> Value {
    let (s, b) = t.post("/v1/campaigns", Some(token), body).await;
    assert_eq!(s, 201, "create campaign: {b}");
    b
}

async fn patch(t: &TestMesh, token: &str, path: &str, body: Value) -> (u16, Value) {
    let (s, b, _) = t.call(Method::PATCH, path, Some(token), Some(body)).await;
    (s, b)
}

fn ids(list: &Value) -> Vec<String> {
    list["campaigns"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A wall-clock time `days` days from now, "YYYY-MM-DDT09:00".
fn local_in_days(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days))
        .format("%Y-%m-%dT09:00")
        .to_string()
}

#[tokio::test]
async fn campaign_lifecycle_versions_lists_and_duplicates() {
    let t = spawn_mesh().await;
    let tok = tenant(&t, "planner@example.com").await;
    let seg = segment(&t, &tok, "Subscribers").await;

    let c = create(&t, &tok, email_campaign("Winter sale", &seg)).await;
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["status"], "draft");
    assert_eq!(c["type"], "message");
    assert_eq!(num(&c["version"]), 1);
    assert_eq!(c["budget"]["currency"], "EUR");
    assert_eq!(num(&c["budget"]["amount_minor"]), 5000);
    assert_eq!(c["target_segment_ids"], json!([seg]));
    assert_eq!(
        c["allowed_actions"],
        json!(["schedule", "launch", "cancel"]),
        "{c}"
    );

    let (s, got) = t.get(&format!("/v1/campaigns/{id}"), Some(&tok)).await;
    assert_eq!(s, 200);
    assert_eq!(
        got["content"]["email"]["subject"],
        c["content"]["email"]["subject"]
    );

    // Updates need the version that was read.
    let (s, b) = patch(
        &t,
        &tok,
        &format!("/v1/campaigns/{id}"),
        json!({"version": 7, "name": "X"}),
    )
    .await;
    assert_problem(s, &b, 409, None);
    let (s, b) = patch(
        &t,
        &tok,
        &format!("/v1/campaigns/{id}"),
        json!({"name": "X"}),
    )
    .await;
    assert_problem(s, &b, 422, Some("version"));
    let (s, c) = patch(
        &t,
        &tok,
        &format!("/v1/campaigns/{id}"),
        json!({"version": 1, "name": "Winter sale 2026", "budget": {"amount_minor": 0, "currency": ""}}),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["name"], "Winter sale 2026");
    assert!(
        c.get("budget").is_none_or(Value::is_null),
        "budget removed: {c}"
    );
    assert_eq!(num(&c["version"]), 2);
    // Untouched fields stay.
    assert_eq!(c["goal"], "Drive 200 upgrades");

    // Schedule in Berlin time, then the moves the state machine allows and refuses.
    let local = local_in_days(3);
    let (s, c) = t
        .post(
            &format!("/v1/campaigns/{id}:schedule"),
            Some(&tok),
            json!({"send_at": local, "time_zone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "scheduled");
    assert_eq!(c["schedule"]["time_zone"], "Europe/Berlin");
    assert_eq!(c["schedule"]["local_send_at"], format!("{local}:00"));
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id}:archive"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_problem(s, &b, 409, None);
    let detail = b["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("scheduled") && detail.contains("archived"),
        "the refusal names both states: {b}"
    );
    let (s, c) = t
        .post(
            &format!("/v1/campaigns/{id}:unschedule"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "draft");
    assert!(c.get("schedule").is_none_or(Value::is_null), "{c}");
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id}:unschedule"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_problem(s, &b, 409, None);
    let (s, c) = t
        .post(
            &format!("/v1/campaigns/{id}:cancel"),
            Some(&tok),
            json!({"version": 4}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["allowed_actions"], json!(["archive"]));
    let (s, b) = patch(
        &t,
        &tok,
        &format!("/v1/campaigns/{id}"),
        json!({"version": 5, "name": "Y"}),
    )
    .await;
    assert_problem(s, &b, 409, None);
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{id}:schedule"),
            Some(&tok),
            json!({"send_at": local_in_days(2), "time_zone": "UTC"}),
        )
        .await;
    assert_problem(s, &b, 409, None);
    let (s, c) = t
        .post(
            &format!("/v1/campaigns/{id}:archive"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "archived");

    // More campaigns for the list filters.
    let sms = create(
        &t,
        &tok,
        json!({"name": "Flash SMS", "channels": ["sms"], "target_segment_ids": [seg],
               "content": {"sms": {"text": "50% off today, {{ contact.first_name }}"}}}),
    )
    .await;
    let social = create(
        &t,
        &tok,
        json!({"name": "Launch teaser", "type": "social_post", "platforms": ["instagram", "tiktok"],
               "goal": "Reach 10k views"}),
    )
    .await;
    assert_eq!(social["platforms"], json!(["instagram", "tiktok"]));

    let (_, all) = t.get("/v1/campaigns", Some(&tok)).await;
    assert_eq!(
        ids(&all),
        vec![social["id"].as_str().unwrap(), sms["id"].as_str().unwrap()],
        "newest first, archived left out: {all}"
    );
    let (_, archived) = t
        .get("/v1/campaigns?status=archived&query=winter", Some(&tok))
        .await;
    assert_eq!(ids(&archived), vec![id.clone()]);
    let (_, by_channel) = t.get("/v1/campaigns?channel=sms", Some(&tok)).await;
    assert_eq!(ids(&by_channel), vec![sms["id"].as_str().unwrap()]);
    let (_, by_text) = t.get("/v1/campaigns?query=50%25", Some(&tok)).await;
    assert!(
        ids(&by_text).is_empty(),
        "% is literal, not a wildcard: {by_text}"
    );
    let (_, by_text) = t.get("/v1/campaigns?query=TEASER", Some(&tok)).await;
    assert_eq!(ids(&by_text), vec![social["id"].as_str().unwrap()]);
    let (_, page1) = t.get("/v1/campaigns?page_size=1", Some(&tok)).await;
    assert_eq!(ids(&page1).len(), 1);
    let token = page1["next_page_token"].as_str().unwrap();
    let (_, page2) = t
        .get(
            &format!("/v1/campaigns?page_size=1&page_token={token}"),
            Some(&tok),
        )
        .await;
    assert_eq!(ids(&page2), vec![sms["id"].as_str().unwrap()]);
    let (_, future) = t
        .get(
            "/v1/campaigns?created_after=2099-01-01T00:00:00Z",
            Some(&tok),
        )
        .await;
    assert!(ids(&future).is_empty());

    // Duplicate: a new draft with the content, not the schedule.
    let (s, copy) = t
        .post(
            &format!("/v1/campaigns/{id}:duplicate"),
            Some(&tok),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{copy}");
    assert_eq!(copy["name"], "Winter sale 2026 (copy)");
    assert_eq!(copy["status"], "draft");
    assert_eq!(copy["duplicated_from"], id);
    assert_eq!(copy["content"], c["content"]);
    assert!(copy.get("schedule").is_none_or(Value::is_null));

    // Soft delete.
    let copy_id = copy["id"].as_str().unwrap();
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/campaigns/{copy_id}"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, b) = t.get(&format!("/v1/campaigns/{copy_id}"), Some(&tok)).await;
    assert_problem(s, &b, 404, None);
    assert_eq!(
        t.count("SELECT count(*) FROM campaigns.campaigns WHERE deleted_at IS NOT NULL")
            .await,
        1
    );
    // Every change went through the outbox.
    assert!(
        t.count(
            "SELECT count(*) FROM campaigns.outbox WHERE event_type IN ('campaigns.campaign.created', 'campaigns.campaign.scheduled', 'campaigns.campaign.cancelled', 'campaigns.campaign.archived', 'campaigns.campaign.deleted')"
        )
        .await
            >= 8
    );
    t.stop().await;
}

#[tokio::test]
async fn schedules_resolve_wall_clock_time_across_dst() {
    let t = spawn_mesh().await;
    let tok = tenant(&t, "dst@example.com").await;
    let seg = segment(&t, &tok, "Everyone").await;
    let id = create(&t, &tok, email_campaign("DST", &seg)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let schedule = |send_at: &str, tz: &str| json!({"send_at": send_at, "time_zone": tz});
    let path = format!("/v1/campaigns/{id}:schedule");

    // Spring forward in Berlin: 02:30 on 2027-03-28 does not exist.
    let (s, b) = t
        .post(
            &path,
            Some(&tok),
            schedule("2027-03-28T02:30", "Europe/Berlin"),
        )
        .await;
    assert_problem(s, &b, 422, Some("send_at"));
    // Fall back: 02:30 on 2027-10-31 happens twice; the first (CEST, UTC+2) is used.
    let (s, c) = t
        .post(
            &path,
            Some(&tok),
            schedule("2027-10-31T02:30", "Europe/Berlin"),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["schedule"]["send_at"], "2027-10-31T00:30:00Z");
    assert_eq!(c["schedule"]["ambiguous_local_time"], true);
    // Rescheduling a scheduled campaign: New York, the day after its DST change (EST, UTC-5).
    let (s, c) = t
        .post(
            &path,
            Some(&tok),
            schedule("2027-11-08T09:00", "America/New_York"),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["schedule"]["send_at"], "2027-11-08T14:00:00Z");
    assert_eq!(c["schedule"]["local_send_at"], "2027-11-08T09:00:00");
    assert_eq!(c["status"], "scheduled");
    // An RFC 3339 instant is taken as is.
    let (s, c) = t
        .post(
            &path,
            Some(&tok),
            schedule("2027-06-01T07:00:00+02:00", "Europe/Berlin"),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["schedule"]["send_at"], "2027-06-01T05:00:00Z");
    assert_eq!(c["schedule"]["local_send_at"], "2027-06-01T07:00:00");
    t.stop().await;
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let t = spawn_mesh().await;
    let tok = tenant(&t, "careless@example.com").await;
    let seg = segment(&t, &tok, "Real").await;

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            {
                let mut b = email_campaign("Unknown segment", &seg);
                b["target_segment_ids"] = json!([uuid::Uuid::now_v7().to_string()]);
                b
            },
            422,
            "target_segment_ids[0]",
        ),
        (
            {
                let mut b = email_campaign("Bad template", &seg);
                b["content"]["email"]["html_body"] = json!("<p>ok</p>\n<p>{% if %}</p>");
                b
            },
            422,
            "content.email.html_body",
        ),
        (
            {
                let mut b = email_campaign("Negative budget", &seg);
                b["budget"] = json!({"amount_minor": -1, "currency": "EUR"});
                b
            },
            422,
            "budget.amount_minor",
        ),
        (
            {
                let mut b = email_campaign("Fax", &seg);
                b["channels"] = json!(["fax"]);
                b
            },
            422,
            "channels[0]",
        ),
        (
            {
                let mut b = email_campaign("", &seg);
                b["name"] = json!("   ");
                b
            },
            422,
            "name",
        ),
        (
            {
                let mut b = email_campaign("Huge", &seg);
                b["content"]["email"]["html_body"] = json!("x".repeat(600 * 1024));
                b
            },
            422,
            "content.email.html_body",
        ),
        (
            {
                let mut b = email_campaign("Bigger than the body limit", &seg);
                b["content"]["email"]["html_body"] = json!("x".repeat(2 * 1024 * 1024));
                b
            },
            413,
            "",
        ),
        (
            json!({"name": "Social with channels", "type": "social_post", "channels": ["email"]}),
            422,
            "channels",
        ),
        (
            json!({"name": "Odd type", "type": "carrier_pigeon"}),
            422,
            "type",
        ),
    ];
    for (body, status, field) in cases {
        let (s, b) = t.post("/v1/campaigns", Some(&tok), body).await;
        assert_problem(s, &b, status, (!field.is_empty()).then_some(field));
    }
    // The template error says where it is.
    let mut bad = email_campaign("Bad template", &seg);
    bad["content"]["email"]["html_body"] = json!("<p>ok</p>\n<p>{% if %}</p>");
    let (_, b) = t.post("/v1/campaigns", Some(&tok), bad).await;
    assert!(b.to_string().contains("line 2"), "{b}");
    assert_eq!(t.count("SELECT count(*) FROM campaigns.campaigns").await, 0);

    // Scheduling: bad zone, past time, incomplete campaign.
    let id = create(&t, &tok, email_campaign("Fine", &seg)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/campaigns/{id}:schedule");
    let (s, b) = t
        .post(
            &path,
            Some(&tok),
            json!({"send_at": local_in_days(2), "time_zone": "Mars/Olympus"}),
        )
        .await;
    assert_problem(s, &b, 422, Some("time_zone"));
    let (s, b) = t
        .post(
            &path,
            Some(&tok),
            json!({"send_at": "2020-01-01T09:00", "time_zone": "UTC"}),
        )
        .await;
    assert_problem(s, &b, 422, Some("send_at"));
    let (s, b) = t.post(&path, Some(&tok), json!({"time_zone": "UTC"})).await;
    assert_problem(s, &b, 422, Some("send_at"));
    let draft = create(
        &t,
        &tok,
        json!({"name": "Empty draft", "channels": ["email"]}),
    )
    .await;
    let (s, b) = t
        .post(
            &format!("/v1/campaigns/{}:schedule", draft["id"].as_str().unwrap()),
            Some(&tok),
            json!({"send_at": local_in_days(2), "time_zone": "UTC"}),
        )
        .await;
    assert_problem(s, &b, 422, Some("target_segment_ids"));
    assert_problem(s, &b, 422, Some("content.email"));
    assert_eq!(
        t.count("SELECT count(*) FROM campaigns.campaigns WHERE status <> 'draft' OR version <> 1")
            .await,
        0,
        "refused schedules changed nothing"
    );
    // Wrong content type and malformed ids.
    let resp = reqwest::Client::new()
        .post(t.url("/v1/campaigns"))
        .bearer_auth(&tok)
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let (s, b) = t.get("/v1/campaigns/not-a-uuid", Some(&tok)).await;
    assert_problem(s, &b, 422, Some("campaign_id"));
    let (s, b) = t.get("/v1/campaigns?status=sending", Some(&tok)).await;
    assert_problem(s, &b, 422, Some("status"));
    t.stop().await;
}

#[tokio::test]
async fn tenants_cannot_see_or_touch_each_others_campaigns() {
    let t = spawn_mesh().await;
    let a = tenant(&t, "alice@a.example").await;
    let b = tenant(&t, "bob@b.example").await;
    let seg_a = segment(&t, &a, "A's list").await;
    let c = create(&t, &a, email_campaign("A's campaign", &seg_a)).await;
    let id = c["id"].as_str().unwrap();

    let (s, body) = t.get(&format!("/v1/campaigns/{id}"), Some(&b)).await;
    assert_problem(s, &body, 404, None);
    let (_, list) = t.get("/v1/campaigns", Some(&b)).await;
    assert!(ids(&list).is_empty());
    let (s, body) = patch(
        &t,
        &b,
        &format!("/v1/campaigns/{id}"),
        json!({"version": 1, "name": "mine"}),
    )
    .await;
    assert_problem(s, &body, 404, None);
    for action in ["schedule", "unschedule", "cancel", "archive", "duplicate"] {
        let body = if action == "schedule" {
            json!({"send_at": local_in_days(2), "time_zone": "UTC"})
        } else {
            json!({})
        };
        let (s, body) = t
            .post(&format!("/v1/campaigns/{id}:{action}"), Some(&b), body)
            .await;
        assert_problem(s, &body, 404, None);
    }
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/campaigns/{id}"),
            Some(&b),
            None,
        )
        .await;
    assert_eq!(s, 404);
    // B cannot target A's segment.
    let (s, body) = t
        .post("/v1/campaigns", Some(&b), email_campaign("Poach", &seg_a))
        .await;
    assert_problem(s, &body, 422, Some("target_segment_ids[0]"));
    // A's campaign is untouched.
    let (_, still) = t.get(&format!("/v1/campaigns/{id}"), Some(&a)).await;
    assert_eq!(still["name"], "A's campaign");
    assert_eq!(num(&still["version"]), 1);
    // Without a token, nothing.
    let (s, _) = t.get("/v1/campaigns", None).await;
    assert_eq!(s, 401);

    // RLS is enabled and forced on every campaigns table holding tenant data.
    let unprotected = t
        .count(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'campaigns' AND c.relkind = 'r'
               AND EXISTS (SELECT 1 FROM information_schema.columns col
                           WHERE col.table_schema = 'campaigns' AND col.table_name = c.relname
                             AND col.column_name = 'tenant_id')
               AND c.relname NOT IN ('outbox', 'inbox')
               AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
        )
        .await;
    assert_eq!(unprotected, 0);
    t.stop().await;
}

#[tokio::test]
async fn preview_renders_the_content_for_one_contact() {
    let t = spawn_mesh().await;
    let tok = tenant(&t, "preview@example.com").await;
    let other = tenant(&t, "someone-else@example.com").await;
    let (s, b) = t
        .post(
            "/v1/contact-attributes",
            Some(&tok),
            json!({"key": "plan", "type": "string", "label": "Plan"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, contact) = t
        .post(
            "/v1/contacts",
            Some(&tok),
            json!({"contact": {"email": "ada@example.com", "first_name": "<b>Ada</b>", "attributes": {"plan": "pro"}}}),
        )
        .await;
    assert_eq!(s, 201, "{contact}");
    let contact_id = contact["id"].as_str().unwrap().to_owned();
    let (s, foreign) = t
        .post(
            "/v1/contacts",
            Some(&other),
            json!({"contact": {"email": "eve@example.com"}}),
        )
        .await;
    assert_eq!(s, 201, "{foreign}");
    let seg = segment(&t, &tok, "Everyone").await;
    let mut body = email_campaign("Preview me", &seg);
    body["channels"] = json!(["email", "webhook"]);
    body["content"]["webhook"] = json!({
        "json_template": "{\"name\": {{ contact.first_name }}, \"plan\": {{ contact.attributes.plan }}, \"campaign\": {{ campaign.name }}}"
    });
    let c = create(&t, &tok, body).await;
    let path = format!("/v1/campaigns/{}:preview", c["id"].as_str().unwrap());

    let (s, p) = t
        .post(&path, Some(&tok), json!({"contact_id": contact_id}))
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["email"]["subject"], "Hi <b>Ada</b>");
    assert_eq!(
        p["email"]["html_body"], "<p>Hello &lt;b&gt;Ada&lt;&#x2f;b&gt;</p>\n<p>pro</p>",
        "values are HTML-escaped in the HTML body"
    );
    assert_eq!(p["email"]["text_body"], "Hello <b>Ada</b>");
    let hook: Value = serde_json::from_str(p["webhook_json"].as_str().unwrap()).unwrap();
    assert_eq!(
        hook,
        json!({"name": "<b>Ada</b>", "plan": "pro", "campaign": "Preview me"})
    );
    assert!(p.get("sms_text").is_none_or(Value::is_null));

    // Another workspace's contact, an unknown one, a malformed id.
    let (s, b) = t
        .post(&path, Some(&tok), json!({"contact_id": foreign["id"]}))
        .await;
    assert_problem(s, &b, 422, Some("contact_id"));
    let (s, b) = t
        .post(
            &path,
            Some(&tok),
            json!({"contact_id": uuid::Uuid::now_v7().to_string()}),
        )
        .await;
    assert_problem(s, &b, 422, Some("contact_id"));
    let (s, b) = t.post(&path, Some(&tok), json!({"contact_id": "x"})).await;
    assert_problem(s, &b, 422, Some("contact_id"));
    // And the other workspace cannot preview this campaign at all.
    let (s, b) = t
        .post(&path, Some(&other), json!({"contact_id": foreign["id"]}))
        .await;
    assert_problem(s, &b, 404, None);
    t.stop().await;
}

#[tokio::test]
async fn templates_by_niche_create_and_save_as_template() {
    let t = spawn_mesh().await;
    let tok = tenant(&t, "templates@example.com").await;
    let other = tenant(&t, "templates-other@example.com").await;
    let seg = segment(&t, &tok, "Shoppers").await;

    let (s, all) = t.get("/v1/campaign-templates", Some(&tok)).await;
    assert_eq!(s, 200, "{all}");
    let list = all["templates"].as_array().unwrap();
    assert!(list.len() >= 10, "{all}");
    assert!(
        list.iter().all(|x| x["age_restricted"] != true),
        "age-restricted templates only when asked for: {all}"
    );
    let (_, adult) = t
        .get("/v1/campaign-templates?niche=adult_creator", Some(&tok))
        .await;
    let adult = adult["templates"].as_array().unwrap();
    assert!(!adult.is_empty());
    assert!(
        adult
            .iter()
            .all(|x| x["age_restricted"] == true && x["niche"] == "adult_creator")
    );
    let (s, b) = t
        .get("/v1/campaign-templates?niche=knitting", Some(&tok))
        .await;
    assert_problem(s, &b, 422, Some("niche"));

    // A draft from a built-in template.
    let (s, c) = t
        .post(
            "/v1/campaign-templates/builtin-ecommerce-flash-sale:createCampaign",
            Some(&tok),
            json!({"target_segment_ids": [seg]}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["status"], "draft");
    assert_eq!(c["name"], "Flash sale");
    assert_eq!(c["channels"], json!(["email", "sms"]));
    assert_eq!(c["target_segment_ids"], json!([seg]));
    let (s, b) = t
        .post(
            "/v1/campaign-templates/builtin-nope:createCampaign",
            Some(&tok),
            json!({}),
        )
        .await;
    assert_problem(s, &b, 404, None);

    // Save it as the workspace's own template, once per name.
    let path = format!("/v1/campaigns/{}:saveAsTemplate", c["id"].as_str().unwrap());
    let (s, tpl) = t
        .post(
            &path,
            Some(&tok),
            json!({"name": "Our flash sale", "niche": "ecommerce"}),
        )
        .await;
    assert_eq!(s, 201, "{tpl}");
    assert_eq!(tpl["built_in"], false);
    assert_eq!(tpl["content"], c["content"]);
    let (s, b) = t
        .post(
            &path,
            Some(&tok),
            json!({"name": "our FLASH sale", "niche": "ecommerce"}),
        )
        .await;
    assert_problem(s, &b, 409, Some("name"));
    let (s, b) = t
        .post(&path, Some(&tok), json!({"name": "x", "niche": "knitting"}))
        .await;
    assert_problem(s, &b, 422, Some("niche"));
    let tpl_id = tpl["id"].as_str().unwrap().to_owned();
    let (s, got) = t
        .get(&format!("/v1/campaign-templates/{tpl_id}"), Some(&tok))
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["content"], c["content"]);
    let (s, got) = t
        .get(
            "/v1/campaign-templates/builtin-saas-trial-ending",
            Some(&tok),
        )
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["built_in"], true);
    assert!(got["content"]["email"]["subject"].is_string(), "{got}");
    let (_, eco) = t
        .get(
            "/v1/campaign-templates?niche=ecommerce&query=our",
            Some(&tok),
        )
        .await;
    let eco: Vec<_> = eco["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(eco, vec![tpl_id.clone()]);
    let (s, c2) = t
        .post(
            &format!("/v1/campaign-templates/{tpl_id}:createCampaign"),
            Some(&tok),
            json!({"name": "Second flash sale"}),
        )
        .await;
    assert_eq!(s, 201, "{c2}");
    assert_eq!(c2["content"], c["content"]);

    // Private to the workspace.
    let (_, theirs) = t.get("/v1/campaign-templates", Some(&other)).await;
    assert!(
        theirs["templates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["built_in"] == true),
        "{theirs}"
    );
    let (s, b) = t
        .post(
            &format!("/v1/campaign-templates/{tpl_id}:createCampaign"),
            Some(&other),
            json!({}),
        )
        .await;
    assert_problem(s, &b, 404, None);
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/campaign-templates/{tpl_id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, b, _) = t
        .call(
            Method::DELETE,
            "/v1/campaign-templates/builtin-saas-trial-ending",
            Some(&tok),
            None,
        )
        .await;
    assert_problem(s, &b, 409, None);
    let (s, _, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/campaign-templates/{tpl_id}"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(
        t.count("SELECT count(*) FROM campaigns.campaign_templates")
            .await,
        0
    );
    t.stop().await;
}

#[tokio::test]
async fn a_scheduled_campaign_stays_sendable_and_needs_launch_rights_to_change() {
    let t = spawn_mesh().await;
    let tok = tenant(&t, "guard@example.com").await;
    let seg = segment(&t, &tok, "Everyone").await;
    let c = create(&t, &tok, email_campaign("Guarded", &seg)).await;
    let id = c["id"].as_str().unwrap().to_owned();
    let (s, c) = t
        .post(
            &format!("/v1/campaigns/{id}:schedule"),
            Some(&tok),
            json!({"send_at": local_in_days(5), "time_zone": "Europe/Paris"}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    let version = num(&c["version"]);

    // Edits that would leave it unsendable are refused while it is scheduled.
    let path = format!("/v1/campaigns/{id}");
    let (s, b) = patch(
        &t,
        &tok,
        &path,
        json!({"version": version, "target_segment_ids": {"values": []}}),
    )
    .await;
    assert_problem(s, &b, 422, Some("target_segment_ids"));
    let (s, b) = patch(
        &t,
        &tok,
        &path,
        json!({"version": version, "channels": {"values": ["email", "sms"]}}),
    )
    .await;
    assert_problem(s, &b, 422, Some("content.sms"));
    let (s, ok) = patch(
        &t,
        &tok,
        &path,
        json!({"version": version, "name": "Guarded, renamed"}),
    )
    .await;
    assert_eq!(s, 200, "{ok}");
    assert_eq!(ok["status"], "scheduled");

    // An API key with campaigns.write but not campaigns.launch cannot change or delete it.
    let (s, key) = t
        .post(
            "/v1/api-keys",
            Some(&tok),
            json!({"name": "writer", "scopes": ["campaigns.read", "campaigns.write", "segments.read"]}),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let writer = key["secret"].as_str().unwrap().to_owned();
    let (s, b) = patch(
        &t,
        &writer,
        &path,
        json!({"version": num(&ok["version"]), "name": "Hijacked"}),
    )
    .await;
    assert_problem(s, &b, 403, None);
    let (s, b, _) = t.call(Method::DELETE, &path, Some(&writer), None).await;
    assert_problem(s, &b, 403, None);
    // It can still edit a draft.
    let draft = create(&t, &writer, email_campaign("Key draft", &seg)).await;
    let (s, b) = patch(
        &t,
        &writer,
        &format!("/v1/campaigns/{}", draft["id"].as_str().unwrap()),
        json!({"version": 1, "goal": "More clicks"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");

    // Cancelling clears the schedule; list items carry no content; NUL is a named 422.
    let (s, c) = t
        .post(&format!("/v1/campaigns/{id}:cancel"), Some(&tok), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert!(c.get("schedule").is_none_or(Value::is_null), "{c}");
    let (_, list) = t.get("/v1/campaigns?status=,", Some(&tok)).await;
    let items = list["campaigns"].as_array().unwrap();
    assert_eq!(
        items.len(),
        2,
        "an empty status list means any status: {list}"
    );
    assert!(
        items
            .iter()
            .all(|i| i.get("content").is_none_or(Value::is_null))
    );
    let mut bad = email_campaign("Nul", &seg);
    bad["content"]["email"]["subject"] = json!("a\u{0}b");
    let (s, b) = t.post("/v1/campaigns", Some(&tok), bad).await;
    assert_problem(s, &b, 422, Some("content.email.subject"));
    let (s, b) = t.get("/v1/campaigns?query=%00", Some(&tok)).await;
    assert_problem(s, &b, 422, Some("query"));
    t.stop().await;
}
