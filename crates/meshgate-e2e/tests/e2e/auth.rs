//! Authentication and authorization through the whole gateway: key-auth and basic-auth on
//! their own and together (any of them), the anonymous consumer, ACL groups, identity headers
//! for the upstream (spoofed copies removed), and the 401/403 answers.

use meshgate_e2e::client::{self, request};
use meshgate_e2e::{TestGateway, Upstream, body, config};
use meshgate_plugins::auth::basic_auth::hash_password;

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

async fn gateway(up: &Upstream) -> TestGateway {
    let hash = hash_password("s3cret pass");
    TestGateway::start(&config(&format!(
        r#"
services:
  - name: s
    url: "http://{a}"
routes:
  - name: keyed
    service: s
    paths: ["/keyed"]
    plugins:
      - {{name: key-auth, config: {{hide_credentials: true, key_names: [apikey, x-api-key]}}}}
  - name: either
    service: s
    paths: ["/either"]
    plugins:
      - {{name: key-auth}}
      - {{name: basic-auth}}
  - name: open-ish
    service: s
    paths: ["/open"]
    plugins:
      - {{name: key-auth, config: {{anonymous: guest}}}}
  - name: ops-only
    service: s
    paths: ["/ops"]
    plugins:
      - {{name: key-auth}}
      - {{name: acl, config: {{allow: [ops], deny: [suspended]}}}}
  - {{name: public, service: s, paths: ["/public"]}}
consumers:
  - username: alice
    custom_id: u-100
    groups: [ops, dev]
    credentials:
      key-auth: [{{key: alice-key-1, id: alice-laptop}}]
      basic-auth: [{{password_hash: '{hash}'}}]
  - username: bob
    groups: [dev]
    credentials:
      key-auth: [{{key: bob-key}}]
  - username: mallory
    groups: [ops, suspended]
    credentials:
      key-auth: [{{key: mallory-key}}]
  - username: guest
    groups: [anonymous]
"#,
        a = up.addr()
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_identity_and_refusals() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up).await;
    let addr = gw.addr();

    // Missing: 401 with the challenge and a JSON body; the upstream never sees the request.
    let resp = client::get(addr, "/keyed").await;
    resp.assert_error(401, "unauthorized");
    assert_eq!(resp.header("www-authenticate"), Some("Key realm=\"meshgate\""));
    // Wrong (including a near miss): 401, and the body does not say what was wrong.
    for key in ["alice-key-2", "alice-key-", "ALICE-KEY-1"] {
        let resp = client::get_with(addr, "/keyed", &[("apikey", key)]).await;
        resp.assert_error(401, "invalid_credentials");
        assert!(!resp.text().contains(key));
    }
    assert_eq!(up.hits(), 0);

    // Accepted by header, with spoofed identity headers replaced and the key hidden.
    let spoof = [
        ("x-api-key", "alice-key-1"),
        ("x-consumer-username", "admin"),
        ("x-consumer-groups", "admins"),
        ("x-anonymous-consumer", "false"),
    ];
    let resp = client::get_with(addr, "/keyed", &spoof).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("alice"));
    assert_eq!(resp.seen_header("x-consumer-custom-id").as_deref(), Some("u-100"));
    assert_eq!(resp.seen_header("x-consumer-groups").as_deref(), Some("ops, dev"));
    assert_eq!(resp.seen_header("x-credential-identifier").as_deref(), Some("alice-laptop"));
    assert_eq!(resp.seen_header("x-anonymous-consumer"), None);
    assert_eq!(resp.seen_header("x-api-key"), None, "hide_credentials");

    // By query parameter, hidden from the upstream's query string.
    let resp = client::get(addr, "/keyed?a=1&apikey=bob-key&b=2").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("bob"));
    assert_eq!(resp.json()["query"], "a=1&b=2");

    // A route without authentication still never passes spoofed identity upstream.
    let resp = client::get_with(addr, "/public", &spoof).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.seen_header("x-consumer-username"), None);
    assert_eq!(resp.seen_header("x-consumer-groups"), None);
    assert_eq!(resp.seen_header("x-anonymous-consumer"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_of_methods_anonymous_and_acl() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up).await;
    let addr = gw.addr();

    // Either method is enough.
    let by_key = client::get_with(addr, "/either", &[("apikey", "bob-key")]).await;
    assert_eq!(by_key.seen_header("x-consumer-username").as_deref(), Some("bob"));
    let by_password = client::get_with(addr, "/either", &[("authorization", &basic("alice", "s3cret pass"))]).await;
    assert_eq!(by_password.status, 200, "{}", by_password.text());
    assert_eq!(by_password.seen_header("x-consumer-username").as_deref(), Some("alice"));
    assert_eq!(by_password.seen_header("x-credential-identifier").as_deref(), Some("alice"));
    assert!(by_password.seen_header("authorization").is_some(), "kept without hide_credentials");
    // Neither: both challenges offered.
    let resp = client::get(addr, "/either").await;
    resp.assert_error(401, "unauthorized");
    let challenges: Vec<_> = resp.headers.get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(challenges, ["Key realm=\"meshgate\"", "Basic realm=\"meshgate\", charset=\"UTF-8\""]);
    let resp = client::get_with(addr, "/either", &[("authorization", &basic("alice", "wrong"))]).await;
    resp.assert_error(401, "invalid_credentials");

    // Anonymous: no key means the guest consumer, marked as such; a valid key still wins.
    let resp = client::get(addr, "/open").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("guest"));
    assert_eq!(resp.seen_header("x-anonymous-consumer").as_deref(), Some("true"));
    let resp = client::get_with(addr, "/open", &[("apikey", "bob-key")]).await;
    assert_eq!(resp.seen_header("x-consumer-username").as_deref(), Some("bob"));
    assert_eq!(resp.seen_header("x-anonymous-consumer"), None);

    // ACL: allowed group passes, other groups and denied groups get 403, nobody gets 401.
    let ok = client::get_with(addr, "/ops", &[("apikey", "alice-key-1")]).await;
    assert_eq!(ok.status, 200);
    let resp = client::get_with(addr, "/ops", &[("apikey", "bob-key")]).await;
    resp.assert_error(403, "forbidden");
    let resp = client::get_with(addr, "/ops", &[("apikey", "mallory-key")]).await;
    resp.assert_error(403, "forbidden");
    client::get(addr, "/ops").await.assert_error(401, "unauthorized");

    // Refusals are counted for the metrics endpoint.
    let f = &meshgate_core::auth::AUTH_FAILURES;
    use std::sync::atomic::Ordering::Relaxed;
    assert!(f.forbidden.load(Relaxed) >= 2 && f.invalid.load(Relaxed) >= 1 && f.missing.load(Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_do_not_reach_the_upstream_and_post_bodies_are_not_lost() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up).await;
    let req = request(http::Method::POST, "/keyed").header("apikey", "nope").body(body::full("payload")).unwrap();
    client::send(gw.addr(), req).await.assert_error(401, "invalid_credentials");
    assert_eq!(up.hits(), 0);
    let req = request(http::Method::POST, "/keyed").header("apikey", "bob-key").body(body::full("payload")).unwrap();
    let resp = client::send(gw.addr(), req).await;
    assert_eq!(resp.status, 200);
    assert_eq!(up.received(), 7);
}
