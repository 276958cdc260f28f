//! Client unit tests: URL building, regions, configuration checks, UserSig caching, the answer limit's setting.
//! Calls over the wire are tested against the emulator in `tests/chat_client.rs`.

use std::collections::HashMap;

use super::*;

const KEY: &str = "test-secret-key";

fn config(base: &str) -> ChatConfig {
    ChatConfig::new(
        1_400_000_000,
        "admin",
        SecretKey::new(KEY),
        parse_base_url(base, false).unwrap(),
    )
}

fn client(base: &str) -> ChatClient {
    ChatClient::new(config(base), ApiLimiters::unlimited(), Arc::new(NoObserver)).unwrap()
}

fn query(url: &Url) -> HashMap<String, String> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[test]
fn url_has_the_vendor_shape() {
    let c = client("https://console.tim.qq.com");
    let (sig, _) = c.usersig(false);
    let url = c.url(&c.config().base_url, Api::AccountCheck, &sig);
    assert_eq!(url.scheme(), "https");
    assert_eq!(url.host_str(), Some("console.tim.qq.com"));
    assert_eq!(url.path(), "/v4/im_open_login_svc/account_check");
    let q = query(&url);
    assert_eq!(q["sdkappid"], "1400000000");
    assert_eq!(q["identifier"], "admin");
    assert_eq!(q["usersig"], sig.expose());
    assert_eq!(q["contenttype"], "json");
    assert!(q["random"].parse::<u32>().is_ok());
    let keys: Vec<_> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(
        keys,
        ["sdkappid", "identifier", "usersig", "random", "contenttype"]
    );
    // The sig verifies for the configured app and admin.
    usersig::verify(
        &SecretKey::new(KEY),
        &q["usersig"],
        1_400_000_000,
        "admin",
        usersig::unix_now(),
    )
    .unwrap();
}

#[test]
fn random_is_fresh_per_request() {
    let c = client("https://console.tim.qq.com");
    let (sig, _) = c.usersig(false);
    let randoms: std::collections::HashSet<_> = (0..20)
        .map(|_| query(&c.url(&c.config().base_url, Api::AccountImport, &sig))["random"].clone())
        .collect();
    assert!(randoms.len() > 15, "randoms repeat: {randoms:?}");
}

#[test]
fn base_url_with_a_path_prefix_is_kept() {
    let c = client("http://127.0.0.1:8080/proxy/");
    let (sig, _) = c.usersig(false);
    let url = c.url(&c.config().base_url, Api::AccountImport, &sig);
    assert_eq!(url.path(), "/proxy/v4/im_open_login_svc/account_import");
    assert_eq!(url.port(), Some(8080));
}

#[test]
fn regions_by_name() {
    assert_eq!(
        "singapore".parse::<Region>().unwrap().domain(),
        "adminapisgp.im.qcloud.com"
    );
    assert_eq!(
        "Silicon-Valley".parse::<Region>().unwrap(),
        Region::SiliconValley
    );
    assert_eq!(
        Region::China.base_url().as_str(),
        "https://console.tim.qq.com/"
    );
    for r in Region::ALL {
        assert_eq!(r.name().parse::<Region>().unwrap(), r);
    }
    assert_eq!(
        "mumbai".parse::<Region>().unwrap().domain(),
        "adminapiind.im.qcloud.com"
    );
    assert_eq!(
        Region::Mumbai.backup_base_url().unwrap().as_str(),
        "https://adminapiind.my-imcloud.com/"
    );
    assert_eq!(
        Region::China.backup_domain(),
        Some("adminapi.my-imcloud.com")
    );
    assert_eq!(Region::Tokyo.backup_base_url(), None, "none listed");
    let err = "mars".parse::<Region>().unwrap_err();
    assert!(err.contains("mars") && err.contains("frankfurt"), "{err}");
}

#[test]
fn plain_http_only_on_loopback() {
    assert!(parse_base_url("http://127.0.0.1:1234", false).is_ok());
    assert!(parse_base_url("http://localhost:1234", false).is_ok());
    assert!(parse_base_url("http://[::1]:1234", false).is_ok());
    let err = parse_base_url("http://chat.example.com", false).unwrap_err();
    assert!(err.contains("clear text"), "{err}");
    assert!(parse_base_url("http://chat.example.com", true).is_ok());
    assert!(parse_base_url("https://chat.example.com", false).is_ok());
    assert!(parse_base_url("ftp://chat.example.com", false).is_err());
    assert!(parse_base_url("https://chat.example.com/?usersig=x", false).is_err());
    assert!(parse_base_url("not a url", false).is_err());
}

#[test]
fn config_validation_names_the_setting() {
    let mut c = config("https://console.tim.qq.com");
    c.request_timeout = Duration::from_secs(2);
    assert!(c.validate().unwrap_err().contains("timeout"));
    let mut c = config("https://console.tim.qq.com");
    c.secret_key = SecretKey::new("  ");
    assert!(c.validate().unwrap_err().contains("secret key"));
    let mut c = config("https://console.tim.qq.com");
    c.identifier = "bad id".into();
    assert!(c.validate().unwrap_err().contains("identifier"));
    let mut c = config("https://console.tim.qq.com");
    c.usersig_refresh_margin = c.usersig_validity;
    assert!(c.validate().unwrap_err().contains("margin"));
    let mut c = config("https://console.tim.qq.com");
    c.sdkappid = 0;
    assert!(c.validate().unwrap_err().contains("sdkappid"));
}

#[test]
fn usersig_is_cached_and_regenerated_within_the_margin() {
    let c = client("https://console.tim.qq.com");
    let (a, exp_a) = c.usersig(false);
    let (b, exp_b) = c.usersig(false);
    assert_eq!(a, b, "cached");
    assert_eq!(exp_a, exp_b);
    let now = usersig::unix_now();
    assert!(exp_a >= now + 180 * 86_400 - 5 && exp_a <= now + 180 * 86_400 + 5);
    // Validity shorter than margin + elapsed: every call is within the margin, so each regenerates.
    let mut cfg = config("https://console.tim.qq.com");
    cfg.usersig_validity = Duration::from_secs(600);
    cfg.usersig_refresh_margin = Duration::from_secs(599);
    let short = ChatClient::new(cfg, ApiLimiters::unlimited(), Arc::new(NoObserver)).unwrap();
    let (_, e1) = short.usersig(false);
    assert!(e1 <= usersig::unix_now() + 600);
    // Forced regeneration replaces the cache even when fresh.
    let (_, before) = c.usersig(false);
    let (_, after) = c.usersig(true);
    assert!(after >= before);
}

#[test]
fn usersig_generation_is_observed() {
    struct Seen(Mutex<Vec<u64>>);
    impl CallObserver for Seen {
        fn usersig_generated(&self, expires_at: u64) {
            self.0.lock().unwrap().push(expires_at);
        }
    }
    let seen = Arc::new(Seen(Mutex::new(Vec::new())));
    let c = ChatClient::new(
        config("https://console.tim.qq.com"),
        ApiLimiters::unlimited(),
        seen.clone(),
    )
    .unwrap();
    c.usersig(false);
    c.usersig(false);
    c.usersig(true);
    assert_eq!(seen.0.lock().unwrap().len(), 2);
}

#[test]
fn debug_output_has_no_secrets() {
    let c = client("https://console.tim.qq.com");
    let (sig, _) = c.usersig(false);
    let text = format!("{c:?} {:?}", c.config());
    assert!(!text.contains(KEY), "{text}");
    assert!(!text.contains(sig.expose()), "{text}");
}

#[tokio::test]
async fn oversized_check_is_refused_before_sending() {
    let c = client("http://127.0.0.1:9");
    let ids: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let r = c.account_check(&refs).await;
    assert_eq!(r.attempts, 0);
    assert_eq!(r.result.unwrap_err().class(), FailureClass::Permanent);
    assert_eq!(c.account_check(&[]).await.attempts, 0);
}

#[tokio::test]
async fn connection_errors_carry_no_url_or_usersig() {
    let mut cfg = config("http://127.0.0.1:9");
    cfg.retry.max_attempts = 1;
    let c = ChatClient::new(cfg, ApiLimiters::unlimited(), Arc::new(NoObserver)).unwrap();
    let (sig, _) = c.usersig(false);
    let err = c
        .account_import(ImportAccount {
            user_id: "u1",
            nick: None,
            face_url: None,
        })
        .await
        .result
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(sig.expose()), "{text}");
    assert!(!text.contains("usersig"), "{text}");
    assert_eq!(
        err.class(),
        FailureClass::Permanent,
        "exhausted after one attempt: {err:?}"
    );
    assert!(
        matches!(err, ChatError::Exhausted { ref last, .. } if matches!(**last, ChatError::Connect { .. }))
    );
}
