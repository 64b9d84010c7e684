//! Feature flags as the `Cutover-Flags` request header: set per environment, replaced at once,
//! never taken from the client.

use std::collections::BTreeMap;

use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::support::*;

async fn seen(c: &mut Conn, host: &str, forged: bool) -> Vec<String> {
    let mut req = Request::get("/headers").header("host", host);
    if forged {
        req = req
            .header("cutover-flags", "admin=on")
            .header("Cutover-Flags", "beta=on");
    }
    let resp = c.send(req.body(Conn::body("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("cutover-flags: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_flags_header_is_the_routers_own_and_follows_every_change() {
    let a = upstream(&sha('a')).await;
    let r = TestRouter::start(cutover_router::RouterConfig::default()).await;
    r.switch("yves", &sha('a'), &[&a]);
    let host = r.host("yves");
    let mut c = Conn::connect(r.addr).await;
    // No flags: none reach the upstream, not even the client's.
    assert!(seen(&mut c, &host, false).await.is_empty());
    assert!(seen(&mut c, &host, true).await.is_empty());

    let flags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    r.router
        .set_flags("shop", "stage", flags(&[("beta", "off"), ("checkout", "25%")]))
        .unwrap();
    // The next request on the same keep-alive connection has them, and only them.
    assert_eq!(seen(&mut c, &host, true).await, ["beta=off, checkout=25%"]);
    r.router
        .set_flags("shop", "stage", flags(&[("beta", "on")]))
        .unwrap();
    assert_eq!(seen(&mut c, &host, false).await, ["beta=on"]);
    // Another environment's flags are not this one's.
    r.router
        .set_flags("shop", "prod", flags(&[("other", "on")]))
        .unwrap();
    assert_eq!(seen(&mut c, &host, true).await, ["beta=on"]);
    // A refused set changes nothing; an empty set removes the header.
    assert!(
        r.router
            .set_flags("shop", "stage", flags(&[("beta", "on\r\nx-evil: 1")]))
            .is_err()
    );
    assert_eq!(seen(&mut c, &host, false).await, ["beta=on"]);
    r.router.set_flags("shop", "stage", BTreeMap::new()).unwrap();
    assert!(seen(&mut c, &host, true).await.is_empty());
}
