//! The emulator over real HTTP on 127.0.0.1:0, driven by a minimal HTTP/1.1 client so these tests
//! depend on nothing but tokio (and not on the crate's own Chat client they are meant to test).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::chat::api::AccountStatus::{self, Imported, NotImported};
use crate::chat::api::{
    CheckResponse, DeleteResponse, MultiImportResponse, PlainResponse, MAX_PROFILE_FIELD_BYTES,
};
use crate::chat::usersig::{generate, unix_now};

const KEY: &str = "emulator-test-secret-key";
const ADMIN: &str = "administrator";
const APP: u64 = 1_400_000_000;

fn key() -> SecretKey {
    SecretKey::new(KEY)
}

/// Defaults with a key and no limits, so only the test's own knobs matter.
fn config() -> EmulatorConfig {
    EmulatorConfig {
        secret_key: Some(key()),
        check_rate: 0.0,
        import_rate: 0.0,
        multi_import_rate: 0.0,
        seed: Some(42),
        ..EmulatorConfig::default()
    }
}

async fn start(config: EmulatorConfig) -> EmulatorHandle {
    Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts")
}

fn sig_for(key: &SecretKey, identifier: &str) -> String {
    generate(key, APP, identifier, unix_now(), 86_400)
        .expose()
        .to_owned()
}

fn query_with(sdkappid: u64, identifier: &str, sig: &str) -> String {
    format!(
        "sdkappid={sdkappid}&identifier={identifier}&usersig={sig}&random=12345&contenttype=json"
    )
}

fn good_query() -> String {
    query_with(APP, ADMIN, &sig_for(&key(), ADMIN))
}

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    fn code(&self) -> i64 {
        assert_eq!(self.status, 200, "{}", self.body);
        self.json()["ErrorCode"].as_i64().expect("ErrorCode")
    }
}

/// One request on a fresh connection (`Connection: close`, read to EOF).
async fn raw(h: &EmulatorHandle, method: &str, target: &str, body: &str) -> Reply {
    let mut tcp = TcpStream::connect(h.local_addr()).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        h.local_addr(),
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        body: body.to_owned(),
    }
}

async fn call_q(h: &EmulatorHandle, api: Api, query: &str, body: &str) -> Reply {
    raw(h, "POST", &format!("{}?{query}", api.path()), body).await
}

async fn call(h: &EmulatorHandle, api: Api, body: Value) -> Reply {
    call_q(h, api, &good_query(), &body.to_string()).await
}

async fn check(h: &EmulatorHandle, ids: &[&str]) -> CheckResponse {
    let items: Vec<Value> = ids.iter().map(|id| json!({ "UserID": id })).collect();
    let reply = call(h, Api::AccountCheck, json!({ "CheckItem": items })).await;
    assert_eq!(reply.status, 200);
    serde_json::from_str(&reply.body).unwrap()
}

async fn import(h: &EmulatorHandle, body: Value) -> i64 {
    call(h, Api::AccountImport, body).await.code()
}

fn statuses(resp: &CheckResponse) -> Vec<Option<AccountStatus>> {
    resp.result_item.iter().map(|i| i.account_status).collect()
}

#[tokio::test]
async fn check_import_reimport_and_check_again() {
    let h = start(config()).await;
    let resp = check(&h, &["alice", "bob"]).await;
    assert_eq!(resp.status, crate::chat::api::Status::ok());
    assert_eq!(statuses(&resp), [Some(NotImported), Some(NotImported)]);
    assert_eq!(resp.result_item[0].user_id, "alice");

    assert_eq!(
        import(&h, json!({ "UserID": "alice", "Nick": "Alice" })).await,
        0
    );
    assert_eq!(
        import(&h, json!({ "UserID": "alice" })).await,
        0,
        "re-import is idempotent"
    );
    assert!(h.imported("alice"));
    assert!(!h.imported("bob"));

    let resp = check(&h, &["bob", "alice", "alice"]).await;
    assert_eq!(
        statuses(&resp),
        [Some(NotImported), Some(Imported), Some(Imported)]
    );
    let users: Vec<_> = resp
        .result_item
        .iter()
        .map(|i| i.user_id.as_str())
        .collect();
    assert_eq!(
        users,
        ["bob", "alice", "alice"],
        "request order, duplicates answered each"
    );

    let stats = h.stats();
    assert_eq!(stats.imported_accounts, 1, "the re-import created nothing");
    assert_eq!(stats.calls["account_check"], 2);
    assert_eq!(stats.accepted["account_import"], 2);
    assert!(stats.rejected_by_code.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn check_answers_bad_ids_per_item() {
    let h = start(config()).await;
    let long = "x".repeat(33);
    let resp = check(&h, &["", &long, &"y".repeat(32)]).await;
    assert_eq!(resp.status.error_code, 0);
    let codes: Vec<i64> = resp.result_item.iter().map(|i| i.result_code).collect();
    assert_eq!(codes, [70402, 70402, 0]);
    assert_eq!(statuses(&resp), [None, None, Some(NotImported)]);
    assert!(
        resp.result_item[1].result_info.contains("33"),
        "{:?}",
        resp.result_item[1]
    );
    // The item that failed carries no AccountStatus on the wire either.
    let reply = call(
        &h,
        Api::AccountCheck,
        json!({ "CheckItem": [{ "UserID": "" }] }),
    )
    .await;
    assert!(
        reply.json()["ResultItem"][0].get("AccountStatus").is_none(),
        "{}",
        reply.body
    );
    assert_eq!(h.stats().item_failures_by_code["70402"], 3);
    h.shutdown().await;
}

#[tokio::test]
async fn existing_fraction_is_deterministic() {
    let ids: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let pre: Vec<bool> = ids.iter().map(|id| is_preexisting(id, 0.3)).collect();
    let share = pre.iter().filter(|p| **p).count();
    assert!((30..=90).contains(&share), "{share} of 200 at 30 %");
    assert!(ids.iter().all(|id| !is_preexisting(id, 0.0)));
    assert!(ids.iter().all(|id| is_preexisting(id, 1.0)));
    // The empty string hashes to the FNV-1a offset basis; after the fmix64 finaliser that maps
    // to 0.9368 (computed independently in Python): pins the algorithm down.
    assert!(is_preexisting("", 0.937));
    assert!(!is_preexisting("", 0.936));

    let h = start(EmulatorConfig {
        existing_fraction: 0.3,
        ..config()
    })
    .await;
    let refs: Vec<&str> = ids[..100].iter().map(String::as_str).collect();
    let resp = check(&h, &refs).await;
    let seen: Vec<bool> = resp
        .result_item
        .iter()
        .map(|i| i.account_status == Some(Imported))
        .collect();
    assert_eq!(seen, pre[..100]);
    let first_pre = ids.iter().position(|id| is_preexisting(id, 0.3)).unwrap();
    assert!(h.imported(&ids[first_pre]));
    assert_eq!(import(&h, json!({ "UserID": ids[first_pre] })).await, 0);
    assert_eq!(
        h.stats().imported_accounts,
        0,
        "preexisting accounts are not counted"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn over_the_rate_limit_is_60007_and_has_no_effect() {
    let h = start(EmulatorConfig {
        import_rate: 2.0,
        rate_burst: Some(2),
        ..config()
    })
    .await;
    assert_eq!(import(&h, json!({ "UserID": "a" })).await, 0);
    assert_eq!(import(&h, json!({ "UserID": "b" })).await, 0);
    let third = call(&h, Api::AccountImport, json!({ "UserID": "c" })).await;
    assert_eq!(third.code(), 60007);
    assert_eq!(third.json()["ActionStatus"], "FAIL");
    assert_eq!(
        third.json()["ErrorInfo"],
        "REST API call frequency over limit"
    );
    assert!(!h.imported("c"));
    // Other APIs have their own buckets (check is unlimited here).
    assert_eq!(check(&h, &["c"]).await.status.error_code, 0);
    let stats = h.stats();
    assert_eq!(stats.rate_limited["account_import"], 1);
    assert_eq!(stats.rate_limited["account_check"], 0);
    assert_eq!(stats.rejected_by_code["60007"], 1);
    assert_eq!(stats.calls["account_import"], 3);
    assert_eq!(stats.accepted["account_import"], 2);

    h.set_rates(0.0, 0.0);
    assert_eq!(
        import(&h, json!({ "UserID": "c" })).await,
        0,
        "set_rates(0) lifts the limit"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn usersig_and_identity_errors() {
    let h = start(config()).await;
    let body = json!({ "CheckItem": [{ "UserID": "u" }] }).to_string();
    let code = |q: String| {
        let h = &h;
        let body = body.clone();
        async move { call_q(h, Api::AccountCheck, &q, &body).await.code() }
    };

    let wrong_key = sig_for(&SecretKey::new("another key"), ADMIN);
    assert_eq!(code(query_with(APP, ADMIN, &wrong_key)).await, 70009);

    let expired = generate(&key(), APP, ADMIN, unix_now() - 1_000, 10)
        .expose()
        .to_owned();
    let reply = call_q(
        &h,
        Api::AccountCheck,
        &query_with(APP, ADMIN, &expired),
        &body,
    )
    .await;
    assert_eq!(reply.code(), 70001);
    assert!(
        reply.json()["ErrorInfo"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{}",
        reply.body
    );

    // A valid sig of a non-admin identifier, used with that identifier: authenticated, not admin.
    let other = sig_for(&key(), "someone");
    assert_eq!(code(query_with(APP, "someone", &other)).await, 60010);
    // The admin's sig used with another identifier does not match the request.
    assert_eq!(
        code(query_with(APP, "someone", &sig_for(&key(), ADMIN))).await,
        70013
    );

    assert_eq!(
        code(query_with(APP + 1, ADMIN, &sig_for(&key(), ADMIN))).await,
        60006
    );
    assert_eq!(
        code(format!("sdkappid={APP}&identifier={ADMIN}&random=1")).await,
        70002
    );
    assert_eq!(
        code(format!(
            "sdkappid={APP}&identifier={ADMIN}&usersig=&random=1"
        ))
        .await,
        70002
    );
    assert_eq!(
        code(format!("identifier={ADMIN}&usersig=x&random=1")).await,
        60012
    );
    assert_eq!(
        code(format!(
            "sdkappid=abc&identifier={ADMIN}&usersig=x&random=1"
        ))
        .await,
        60012
    );
    assert_eq!(
        code(format!("sdkappid={APP}&usersig=x&random=1")).await,
        60004
    );
    let sig = sig_for(&key(), ADMIN);
    assert_eq!(
        code(format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}")).await,
        60002
    );
    let no_u32 = format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=4294967296");
    assert_eq!(code(no_u32).await, 60002);
    let bad_ct =
        format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=xml");
    assert_eq!(code(bad_ct).await, 60002);
    let no_ct = format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=4294967295");
    assert_eq!(code(no_ct).await, 0, "contenttype is optional");
    assert_eq!(
        call_q(&h, Api::AccountCheck, "", &body).await.code(),
        60012,
        "no query at all"
    );

    let stats = h.stats();
    assert_eq!(stats.rejected_by_code["70009"], 1);
    assert_eq!(stats.rejected_by_code["70002"], 2);
    assert_eq!(stats.rejected_by_code["60002"], 3);
    assert_eq!(stats.accepted["account_check"], 1);
    h.shutdown().await;
}

#[tokio::test]
async fn set_secret_key_changes_verification_at_run_time() {
    let h = start(config()).await;
    let body = json!({ "UserID": "u1" });
    assert_eq!(
        import(&h, body.clone()).await,
        0,
        "old sig verifies and is now cached"
    );
    let new_key = SecretKey::new("rotated");
    h.set_secret_key(new_key.clone());
    assert_eq!(
        import(&h, body.clone()).await,
        70009,
        "the cached old-key sig is not trusted"
    );
    let new_sig = query_with(APP, ADMIN, &sig_for(&new_key, ADMIN));
    assert_eq!(
        call_q(&h, Api::AccountImport, &new_sig, &body.to_string())
            .await
            .code(),
        0
    );
    h.set_secret_key(key());
    assert_eq!(import(&h, body).await, 0, "fixed again");
    h.shutdown().await;
}

#[tokio::test]
async fn body_errors() {
    let h = start(config()).await;
    let q = good_query();
    assert_eq!(call_q(&h, Api::AccountCheck, &q, "").await.code(), 60003);
    assert_eq!(
        call_q(&h, Api::AccountCheck, &q, "{\"CheckItem\":[")
            .await
            .code(),
        60003
    );
    assert_eq!(
        call_q(&h, Api::AccountImport, &q, "not json").await.code(),
        60003
    );
    assert_eq!(call(&h, Api::AccountCheck, json!({})).await.code(), 70402);
    assert_eq!(
        call(&h, Api::AccountCheck, json!({ "CheckItem": "u1" }))
            .await
            .code(),
        70402
    );
    assert_eq!(
        call(&h, Api::AccountCheck, json!({ "CheckItem": [] }))
            .await
            .code(),
        70402
    );
    let items: Vec<Value> = (0..101)
        .map(|i| json!({ "UserID": format!("u{i}") }))
        .collect();
    let reply = call(&h, Api::AccountCheck, json!({ "CheckItem": items })).await;
    assert_eq!(reply.code(), 70402);
    assert!(
        reply.json().get("ResultItem").is_none(),
        "a failed call has no ResultItem"
    );
    let items: Vec<Value> = (0..100)
        .map(|i| json!({ "UserID": format!("u{i}") }))
        .collect();
    assert_eq!(check(&h, &[]).await.status.error_code, 70402);
    assert_eq!(
        call(&h, Api::AccountCheck, json!({ "CheckItem": items }))
            .await
            .code(),
        0
    );
    assert_eq!(
        call(&h, Api::AccountImport, json!({ "Nick": "no id" }))
            .await
            .code(),
        70402
    );
    let stats = h.stats();
    assert_eq!(stats.rejected_by_code["60003"], 3);
    assert_eq!(stats.rejected_by_code["70402"], 6);
    h.shutdown().await;
}

#[tokio::test]
async fn import_rules() {
    let h = start(EmulatorConfig {
        sensitive_word: vec!["badword".into()],
        max_accounts: Some(2),
        ..config()
    })
    .await;
    let max = MAX_PROFILE_FIELD_BYTES;
    assert_eq!(
        import(&h, json!({ "UserID": "u1", "Nick": "n".repeat(max + 1) })).await,
        40601
    );
    assert_eq!(
        import(
            &h,
            json!({ "UserID": "u1", "FaceUrl": "f".repeat(max + 1) })
        )
        .await,
        40601
    );
    assert_eq!(
        import(&h, json!({ "UserID": "u1", "Nick": "a badword here" })).await,
        40005
    );
    assert_eq!(import(&h, json!({ "UserID": "x".repeat(33) })).await, 70402);
    assert_eq!(import(&h, json!({ "UserID": "" })).await, 70402);
    assert!(!h.imported("u1"), "refused imports have no effect");
    let at_limit = json!({ "UserID": "u1", "Nick": "n".repeat(max), "FaceUrl": "f".repeat(max) });
    assert_eq!(import(&h, at_limit).await, 0);
    assert_eq!(import(&h, json!({ "UserID": "u2" })).await, 0);
    assert_eq!(
        import(&h, json!({ "UserID": "u3" })).await,
        70398,
        "edition limit"
    );
    assert_eq!(
        import(&h, json!({ "UserID": "u1" })).await,
        0,
        "re-import still fine at the limit"
    );
    assert!(!h.imported("u3"));
    let stats = h.stats();
    assert_eq!(stats.imported_accounts, 2);
    assert_eq!(stats.rejected_by_code["40601"], 2);
    assert_eq!(stats.rejected_by_code["40005"], 1);
    assert_eq!(stats.rejected_by_code["70398"], 1);
    h.shutdown().await;
}

#[tokio::test]
async fn multiaccount_import_lists_failures() {
    let h = start(EmulatorConfig {
        sensitive_word: vec!["badword".into()],
        ..config()
    })
    .await;
    let body = json!({ "AccountList": [
        { "UserID": "m1", "Nick": "fine" },
        { "UserID": "m2", "Nick": "badword" },
        { "UserID": "m3" },
    ]});
    let reply = call(&h, Api::MultiaccountImport, body).await;
    let resp: MultiImportResponse = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(resp.status.error_code, 0);
    assert_eq!(resp.fail_accounts, ["m2"]);
    assert!(h.imported("m1") && h.imported("m3") && !h.imported("m2"));

    let reply = call(
        &h,
        Api::MultiaccountImport,
        json!({ "Accounts": ["m4", "x".repeat(33)] }),
    )
    .await;
    let resp: MultiImportResponse = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(resp.fail_accounts, ["x".repeat(33)]);
    assert!(h.imported("m4"));
    assert_eq!(
        call(&h, Api::MultiaccountImport, json!({})).await.code(),
        70402
    );
    assert_eq!(
        call(&h, Api::MultiaccountImport, json!({ "Accounts": [] }))
            .await
            .code(),
        70402
    );

    let stats = h.stats();
    assert_eq!(stats.item_failures_by_code["40005"], 1);
    assert_eq!(stats.item_failures_by_code["70402"], 1);
    assert_eq!(stats.accepted["multiaccount_import"], 2);
    assert_eq!(stats.imported_accounts, 3);
    h.shutdown().await;
}

#[tokio::test]
async fn delete_then_check_says_not_imported() {
    // Everything is preexisting here: the first delete removes a preexisting account.
    let h = start(EmulatorConfig {
        existing_fraction: 1.0,
        ..config()
    })
    .await;
    let reply = call(
        &h,
        Api::AccountDelete,
        json!({ "DeleteItem": [{ "UserID": "d1" }] }),
    )
    .await;
    let resp: DeleteResponse = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(resp.status.error_code, 0);
    assert_eq!(resp.result_item[0].result_code, 0);
    assert!(!h.imported("d1"));
    // Imported again, then deleted twice in one call: the second finds nothing.
    assert_eq!(import(&h, json!({ "UserID": "d1" })).await, 0);
    assert_eq!(h.stats().imported_accounts, 1);
    let reply = call(
        &h,
        Api::AccountDelete,
        json!({ "DeleteItem": [{ "UserID": "d1" }, { "UserID": "d1" }] }),
    )
    .await;
    let resp: DeleteResponse = serde_json::from_str(&reply.body).unwrap();
    let codes: Vec<i64> = resp.result_item.iter().map(|i| i.result_code).collect();
    assert_eq!(codes, [0, 70107]);
    assert!(!resp.result_item[1].result_info.is_empty());
    assert_eq!(
        statuses(&check(&h, &["d1", "d2"]).await),
        [Some(NotImported), Some(Imported)]
    );
    assert!(!h.imported("d1"));
    let items: Vec<Value> = (0..101)
        .map(|i| json!({ "UserID": format!("u{i}") }))
        .collect();
    assert_eq!(
        call(&h, Api::AccountDelete, json!({ "DeleteItem": items }))
            .await
            .code(),
        70402
    );
    assert_eq!(h.stats().item_failures_by_code["70107"], 1);
    h.shutdown().await;
}

#[tokio::test]
async fn http_502_and_recovery() {
    let h = start(EmulatorConfig {
        http_502_rate: 1.0,
        ..config()
    })
    .await;
    // Before auth, like a gateway: even a request without any query gets the 502.
    let reply = call_q(&h, Api::AccountImport, "", "{}").await;
    assert_eq!(reply.status, 502);
    assert!(reply.body.contains("502 Bad Gateway"));
    assert_eq!(
        call(&h, Api::AccountImport, json!({ "UserID": "g" }))
            .await
            .status,
        502
    );
    assert!(!h.imported("g"));
    h.set_faults(Faults::default());
    assert_eq!(import(&h, json!({ "UserID": "g" })).await, 0);
    let stats = h.stats();
    assert_eq!(stats.http_502, 2);
    assert_eq!(stats.calls["account_import"], 3);
    assert!(stats.rejected_by_code.is_empty(), "a 502 has no ErrorCode");
    h.shutdown().await;
}

#[tokio::test]
async fn transient_errors_have_no_effect() {
    let h = start(EmulatorConfig {
        transient_error_rate: 1.0,
        ..config()
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..8 {
        let reply = call(&h, Api::AccountImport, json!({ "UserID": "t" })).await;
        assert_eq!(reply.json()["ActionStatus"], "FAIL");
        seen.push(reply.code());
    }
    assert!(seen.iter().all(|c| [70169, 70500].contains(c)), "{seen:?}");
    assert!(!h.imported("t"));
    let stats = h.stats();
    assert_eq!(stats.transient_errors, 8);
    let counted: u64 = ["70169", "70500"]
        .iter()
        .filter_map(|c| stats.rejected_by_code.get(*c))
        .sum();
    assert_eq!(counted, 8);
    // Authentication comes first: a bad sig is reported as such even during trouble.
    let q = query_with(APP, ADMIN, &sig_for(&SecretKey::new("wrong"), ADMIN));
    assert_eq!(call_q(&h, Api::AccountImport, &q, "{}").await.code(), 70009);
    h.shutdown().await;
}

#[tokio::test]
async fn latency_and_hang() {
    let h = start(EmulatorConfig {
        latency_ms: 40,
        ..config()
    })
    .await;
    let t = Instant::now();
    assert_eq!(import(&h, json!({ "UserID": "slow" })).await, 0);
    assert!(
        t.elapsed() >= Duration::from_millis(40),
        "{:?}",
        t.elapsed()
    );

    h.set_faults(Faults {
        hang_rate: 1.0,
        hang_ms: 60,
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(
        import(&h, json!({ "UserID": "held" })).await,
        0,
        "processed after the hang"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(60),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(h.stats().hung, 1);

    // A client that gives up does not stop the import: the vendor would still carry it out.
    // The request is held at the entrance while the client gives up, so "not imported yet" holds
    // by construction (a client timeout racing the hang would depend on the machine's speed);
    // after the release it goes through the hang as before.
    h.hold();
    let quitter = call(&h, Api::AccountImport, json!({ "UserID": "timed-out" }));
    tokio::select! {
        r = quitter => panic!("answered while held: {}", r.body),
        () = until_held(&h, 1) => {}
    }
    assert!(!h.imported("timed-out"));
    h.release();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !h.imported("timed-out") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.imported("timed-out"), "imported although the client left");
    assert_eq!(h.stats().hung, 2);
    h.shutdown().await;
}

/// Waits until `n` requests are held. The 30 s are a bound for a loaded machine, not a premise.
async fn until_held(h: &EmulatorHandle, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.held() < n {
        assert!(
            Instant::now() < deadline,
            "{} requests held, not {n}",
            h.held()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn held_requests_wait_for_the_release() {
    let h = start(config()).await;
    h.hold();
    {
        let first = call(&h, Api::AccountImport, json!({ "UserID": "h1" }));
        let second = check(&h, &["h1"]);
        tokio::pin!(first, second);
        // Neither can be answered before the release: racing them against the count is safe.
        tokio::select! {
            r = &mut first => panic!("answered while held: {}", r.body),
            r = &mut second => panic!("answered while held: {r:?}"),
            () = until_held(&h, 2) => {}
        }
        assert!(!h.imported("h1"), "held, not processed");
        let stats = h.stats();
        assert!(stats.accepted.values().all(|&n| n == 0), "{stats:?}");
        assert!(
            stats.rejected_by_code.is_empty(),
            "held, not failed: {stats:?}"
        );
        let reply = raw(&h, "GET", "/stats", "").await;
        assert_eq!(reply.status, 200, "the counters are never held");

        h.release();
        assert_eq!(first.await.code(), 0);
        assert_eq!(statuses(&second.await).len(), 1);
    }
    assert!(h.imported("h1"));
    assert_eq!(h.held(), 0);
    // Released for good: new requests pass at once.
    assert_eq!(import(&h, json!({ "UserID": "h2" })).await, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn stats_endpoint_and_routing() {
    let h = start(config()).await;
    assert_eq!(import(&h, json!({ "UserID": "s1" })).await, 0);
    assert_eq!(call(&h, Api::AccountImport, json!({})).await.code(), 70402);
    check(&h, &["s1", ""]).await;

    let reply = raw(&h, "GET", "/stats", "").await;
    assert_eq!(reply.status, 200);
    let stats: Stats = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(stats, h.stats());
    assert_eq!(stats.calls["account_import"], 2);
    assert_eq!(stats.calls["account_check"], 1);
    assert_eq!(stats.calls["multiaccount_import"], 0, "every API is listed");
    assert_eq!(stats.accepted["account_import"], 1);
    assert_eq!(stats.accepted["account_check"], 1);
    assert_eq!(stats.rejected_by_code["70402"], 1);
    assert_eq!(stats.item_failures_by_code["70402"], 1);
    assert_eq!(stats.imported_accounts, 1);

    assert_eq!(
        raw(&h, "GET", Api::AccountCheck.path(), "").await.status,
        405
    );
    assert_eq!(
        raw(&h, "POST", "/v4/im_open_login_svc/nope", "{}")
            .await
            .status,
        404
    );
    assert_eq!(raw(&h, "GET", "/", "").await.status, 404);
    // Response headers of an API answer.
    let mut tcp = TcpStream::connect(h.local_addr()).await.unwrap();
    let req = format!(
        "POST {}?{} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        Api::AccountImport.path(),
        good_query()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{out}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn start_needs_a_key_and_a_valid_config() {
    let addr = "127.0.0.1:0".parse().unwrap();
    let err = Emulator::start(EmulatorConfig::default(), addr)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("ACCOUNT_SYNC_SECRET_KEY"), "{err}");
    let bad = EmulatorConfig {
        hang_rate: 1.5,
        ..config()
    };
    let err = Emulator::start(bad, addr).await.err().unwrap();
    assert!(err.to_string().contains("--hang-rate"), "{err}");
    assert!(EmulatorConfig {
        check_rate: -1.0,
        ..config()
    }
    .validate()
    .unwrap_err()
    .contains("--check-rate"));
    assert!(EmulatorConfig {
        import_rate: f64::NAN,
        ..config()
    }
    .validate()
    .is_err());
    assert!(EmulatorConfig {
        rate_burst: Some(0),
        ..config()
    }
    .validate()
    .is_err());
    assert!(EmulatorConfig::default().validate().is_ok());
}

#[tokio::test]
async fn serve_stops_on_its_shutdown_signal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(Emulator::serve(listener, config(), async move {
        let _ = rx.await;
    }));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    tx.send(()).unwrap();
    // A bound on a hang, not on the machine's speed: stopping an idle server takes milliseconds.
    let result = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("stops");
    assert!(result.unwrap().is_ok());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the socket is closed"
    );
}

#[test]
fn clap_flags_and_defaults_agree() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        emulator: EmulatorConfig,
    }
    let cli = Cli::try_parse_from(["x"]).unwrap().emulator;
    let def = EmulatorConfig::default();
    assert_eq!(
        (
            cli.sdkappid,
            cli.identifier.as_str(),
            cli.check_rate,
            cli.import_rate,
            cli.hang_ms
        ),
        (
            def.sdkappid,
            def.identifier.as_str(),
            def.check_rate,
            def.import_rate,
            def.hang_ms
        )
    );
    let cli = Cli::try_parse_from([
        "x",
        "--http-502-rate",
        "0.5",
        "--sensitive-word",
        "a",
        "--sensitive-word",
        "b",
        "--max-accounts",
        "100",
        "--rate-burst",
        "7",
    ])
    .unwrap()
    .emulator;
    assert_eq!(cli.http_502_rate, 0.5);
    assert_eq!(cli.sensitive_word, ["a", "b"]);
    assert_eq!(cli.max_accounts, Some(100));
    assert_eq!(cli.rate_burst, Some(7));
    assert!(cli.secret_key.is_none());
}

#[tokio::test]
async fn failure_shape_is_the_plain_response() {
    let h = start(config()).await;
    let reply = call(&h, Api::AccountImport, json!({})).await;
    let plain: PlainResponse = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(plain.status.action_status, "FAIL");
    assert_eq!(plain.status.error_code, 70402);
    let mut keys: Vec<String> = reply.json().as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["ActionStatus", "ErrorCode", "ErrorInfo"],
        "{}",
        reply.body
    );
    h.shutdown().await;
}

#[test]
fn preexisting_share_holds_for_blocks_of_sequential_ids() {
    // Demo and bench user IDs are sequential; every block of 100 must see roughly the fraction.
    for prefix in ["user-", "bulk-", "demo-run1-"] {
        for block in 0..20 {
            let hits = (block * 100..block * 100 + 100)
                .filter(|i| is_preexisting(&format!("{prefix}{i:06}"), 0.5))
                .count();
            assert!(
                (25..=75).contains(&hits),
                "{prefix} block {block}: {hits}/100"
            );
        }
    }
}

#[tokio::test]
async fn deletion_switched_off_answers_71000_and_deletes_nothing() {
    let h = start(EmulatorConfig {
        existing_fraction: 1.0,
        deletion_disabled: true,
        delete_rate: 1.0,
        rate_burst: Some(1),
        ..config()
    })
    .await;
    let delete = |user: &'static str| {
        call(
            &h,
            Api::AccountDelete,
            json!({ "DeleteItem": [{ "UserID": user }] }),
        )
    };
    let off = delete("d1").await;
    assert_eq!(off.code(), 71000);
    assert!(off.json()["ErrorInfo"]
        .as_str()
        .unwrap()
        .contains("deletion"));
    assert!(h.imported("d1"), "nothing deleted");
    h.set_deletion_enabled(true);
    // The switch came after the bucket's one token was spent: account_delete has its own limit.
    assert_eq!(delete("d1").await.code(), 60007);
    assert_eq!(h.stats().rate_limited["account_delete"], 1);
    assert!(h.imported("d1"));
    assert_eq!(h.stats().rejected_by_code["71000"], 1);
}

#[tokio::test]
async fn profiles_and_each_user_s_calls_are_kept_with_the_user_log() {
    let h = start(EmulatorConfig {
        user_log: true,
        paid_edition: true,
        ..config()
    })
    .await;
    let multi = |list: Value| call(&h, Api::MultiaccountImport, json!({ "AccountList": list }));
    assert_eq!(import(&h, json!({ "UserID": "p1", "Nick": "a" })).await, 0);
    assert_eq!(import(&h, json!({ "UserID": "p1", "Nick": "b" })).await, 0);
    assert_eq!(h.profile("p1").unwrap().nick.as_deref(), Some("a"));
    let updated = multi(json!([{ "UserID": "p1", "Nick": "c" }])).await;
    assert_eq!(updated.code(), 0);
    assert_eq!(h.profile("p1").unwrap().nick.as_deref(), Some("c"));
    let deleted = call(
        &h,
        Api::AccountDelete,
        json!({ "DeleteItem": [{ "UserID": "p1" }] }),
    )
    .await;
    assert_eq!(deleted.code(), 0);
    assert_eq!(h.profile("p1"), None);
    // A paid edition: the deleted UserID cannot come back (70399), singly or in a batch.
    assert_eq!(import(&h, json!({ "UserID": "p1" })).await, 70399);
    let batch = multi(json!([{ "UserID": "p1", "Nick": "d" }])).await;
    assert_eq!(batch.json()["FailAccounts"], json!(["p1"]));
    use crate::devtools::emulator::UserCall::*;
    let nick = |n: &str| Some(n.to_owned());
    assert_eq!(
        h.user_log("p1"),
        vec![
            Created {
                nick: nick("a"),
                face_url: None
            },
            Unchanged,
            Overwritten {
                nick: nick("c"),
                face_url: None
            },
            Deleted,
            Refused { code: 70399 },
            Refused { code: 70399 },
        ]
    );
}
