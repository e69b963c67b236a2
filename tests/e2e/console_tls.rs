//! `serve` with TLS of its own: HTTPS with the configured certificate, a console on an
//! open address allowed because of it, cookies marked Secure, plain HTTP refused, and
//! the certificate read again on SIGHUP (a bad file keeps the one in use).

use std::time::Duration;

use super::console::add_user;
use super::serve::{until, Folder};

/// A self-signed certificate for 127.0.0.1 and its key, in PEM.
fn certificate() -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// A client that trusts only `cert`, and keeps no connection between requests.
fn trusting(cert: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_https_with_its_certificate_and_reads_a_renewed_one_on_sighup() {
    let folder = Folder::new("tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\n[console]\n");
    folder.listen_on("0.0.0.0:0");
    let (first, first_key) = certificate();
    let write = |cert: &str, key: &str| {
        std::fs::write(folder.dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(folder.dir.path().join("key.pem"), key).unwrap();
    };
    write(&first, &first_key);
    add_user(&folder, "eva", "admin", &[]);

    // On an open address the console starts, because the listener is TLS.
    let serve = folder.start();
    assert!(serve.base.starts_with("https://0.0.0.0:"), "{}", serve.base);
    let port = serve.base.rsplit(':').next().unwrap().to_string();
    let https = format!("https://127.0.0.1:{port}");
    let reply = trusting(&first)
        .get(format!("{https}/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let cookie = reply
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.starts_with("ovs_login=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    let health = trusting(&first)
        .get(format!("{https}/healthz"))
        .send()
        .await;
    assert_eq!(health.unwrap().status(), 200);
    // Plain HTTP gets no answer on the TLS listener.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status() == 400),
        "{plain:?}"
    );

    // A renewed certificate: not used before SIGHUP, used after it.
    let (second, second_key) = certificate();
    let by_second = || async {
        trusting(&second)
            .get(format!("{https}/healthz"))
            .send()
            .await
    };
    assert!(
        by_second().await.is_err(),
        "the new certificate is trusted too early"
    );
    write(&second, &second_key);
    serve.signal(libc::SIGHUP);
    until("the renewed certificate", 30, || async {
        by_second().await.ok().filter(|r| r.status() == 200)
    })
    .await;
    assert!(trusting(&first)
        .get(format!("{https}/healthz"))
        .send()
        .await
        .is_err());

    // A broken renewal keeps the certificate in use, and the log says so.
    write("not a certificate", "not a key");
    serve.signal(libc::SIGHUP);
    until("the refused renewal in the log", 30, || async {
        serve
            .log()
            .contains("TLS certificate not reloaded")
            .then_some(())
    })
    .await;
    assert_eq!(by_second().await.unwrap().status(), 200);
    assert!(!serve.log().contains("not a key"));
    drop(serve);

    // A certificate without its key is refused before listening, naming the key.
    let half = Folder::new("tls_cert = \"cert.pem\"\n");
    let out = half.serve_output();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[service] tls_key"), "{stderr}");
}
