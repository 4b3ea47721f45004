//! StreamMembers (gRPC, campaign fan-out): every member exactly once in id order, resumable, and
//! another tenant's segment is not found. Called the way the campaigns service will call it:
//! directly over gRPC with the caller's bearer token.

mod common;

use common::{access_token, spawn_mesh};
use cos_proto::segmentation::v1::StreamMembersRequest;
use cos_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use serde_json::json;
use tonic::Request;

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test]
async fn stream_members_pages_through_the_segment_and_respects_tenants() {
    let t = spawn_mesh().await;
    let a = access_token(&t.register("stream-a@example.com", "Streamer A").await);
    let b = access_token(&t.register("stream-b@example.com", "Streamer B").await);
    for (key, ty) in [("plan", "string"), ("score", "number")] {
        let (s, body) = t
            .post(
                "/v1/contact-attributes",
                Some(&a),
                json!({"key": key, "type": ty}),
            )
            .await;
        assert_eq!(s, 201, "{body}");
    }
    let mut csv = String::from("email,tags,plan,score\n");
    for i in 0..450 {
        csv.push_str(&format!(
            "m{i}@stream.example,{},pro,{i}\n",
            if i % 2 == 0 { "even" } else { "odd" }
        ));
    }
    let resp = reqwest::Client::new()
        .post(t.url("/v1/contact-imports?file_name=s.csv"))
        .bearer_auth(&a)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    cos_testkit::eventually(std::time::Duration::from_secs(60), || async {
        (t.count("SELECT count(*) FROM segmentation.contacts").await == 450).then_some(())
    })
    .await
    .unwrap();
    let (s, seg) = t
        .post("/v1/segments", Some(&a), json!({"name": "Even", "kind": "dynamic", "criteria": {"op": "has_tag", "value": "even"}}))
        .await;
    assert_eq!(s, 201, "{seg}");
    let sid = seg["id"].as_str().unwrap().to_owned();

    let addr = t.mesh.as_ref().unwrap().segmentation_addr;
    let mut client = SegmentationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut stream = client
        .stream_members(authed(
            StreamMembersRequest {
                segment_id: sid.clone(),
                batch_size: 100,
                ..Default::default()
            },
            &a,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    let mut batches = 0;
    while let Some(batch) = stream.message().await.unwrap() {
        batches += 1;
        assert!(batch.members.len() <= 100);
        ids.extend(batch.members.into_iter().map(|m| {
            assert!(m.email.ends_with("@stream.example"));
            let fields = m.attributes.unwrap_or_default().fields;
            assert_eq!(fields.len(), 2, "every attribute by default: {fields:?}");
            m.contact_id
        }));
    }
    assert_eq!(ids.len(), 225);
    assert_eq!(batches, 3);
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "in id order, each once");

    // Resuming after a contact gives the rest.
    let mut rest = client
        .stream_members(authed(
            StreamMembersRequest {
                segment_id: sid.clone(),
                batch_size: 0,
                after_contact_id: ids[199].clone(),
                ..Default::default()
            },
            &a,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut tail = Vec::new();
    while let Some(batch) = rest.message().await.unwrap() {
        tail.extend(batch.members.into_iter().map(|m| m.contact_id));
    }
    assert_eq!(tail, ids[200..].to_vec());

    // Only the attributes asked for (an unknown key is simply absent), or none at all.
    for (keys, omit, expected) in [
        (
            vec!["score".to_owned(), "nope".to_owned()],
            false,
            vec!["score"],
        ),
        (vec![], true, vec![]),
    ] {
        let mut stream = client
            .stream_members(authed(
                StreamMembersRequest {
                    segment_id: sid.clone(),
                    attribute_keys: keys,
                    omit_attributes: omit,
                    ..Default::default()
                },
                &a,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(batch) = stream.message().await.unwrap() {
            for m in batch.members {
                let fields = m.attributes.unwrap_or_default().fields;
                let mut got: Vec<&str> = fields.keys().map(String::as_str).collect();
                got.sort();
                assert_eq!(got, expected);
                n += 1;
            }
        }
        assert_eq!(n, 225);
    }
    // Attributes as JSON: the stored object, or the keys asked for.
    for (keys, expected) in [
        (vec![], vec!["plan", "score"]),
        (vec!["plan".to_owned()], vec!["plan"]),
    ] {
        let mut stream = client
            .stream_members(authed(
                StreamMembersRequest {
                    segment_id: sid.clone(),
                    attribute_keys: keys,
                    attributes_as_json: true,
                    batch_size: 5000,
                    ..Default::default()
                },
                &a,
            ))
            .await
            .unwrap()
            .into_inner();
        let batch = stream.message().await.unwrap().unwrap();
        assert_eq!(batch.members.len(), 225);
        for m in &batch.members {
            assert!(m.attributes.is_none(), "no Struct with attributes_as_json");
            let obj: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&m.attributes_json).unwrap();
            let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
            got.sort();
            assert_eq!(got, expected);
            assert_eq!(
                obj.get("plan").map(|p| p == "pro"),
                expected.contains(&"plan").then_some(true)
            );
        }
        let n: u64 = batch.members[0]
            .email
            .trim_start_matches('m')
            .split('@')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if expected.contains(&"score") {
            let obj: serde_json::Value =
                serde_json::from_slice(&batch.members[0].attributes_json).unwrap();
            assert_eq!(obj["score"], serde_json::json!(n));
        }
        assert!(stream.message().await.unwrap().is_none());
    }
    let err = client
        .stream_members(authed(
            StreamMembersRequest {
                segment_id: sid.clone(),
                attribute_keys: vec!["score".into()],
                omit_attributes: true,
                ..Default::default()
            },
            &a,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("attribute_keys"),
        "{}",
        err.message()
    );

    // Tenant B: not found; no token: unauthenticated; bad batch size: invalid.
    let err = client
        .stream_members(authed(
            StreamMembersRequest {
                segment_id: sid.clone(),
                batch_size: 10,
                ..Default::default()
            },
            &b,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .stream_members(Request::new(StreamMembersRequest {
            segment_id: sid.clone(),
            batch_size: 10,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = client
        .stream_members(authed(
            StreamMembersRequest {
                segment_id: sid,
                batch_size: 100_000,
                ..Default::default()
            },
            &a,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    t.stop().await;
}
