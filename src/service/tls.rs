//! TLS of `serve`'s own (rustls with ring), when `[service] tls_cert` and `tls_key` name
//! a PEM certificate chain and its private key. Read when the service file is, so a
//! bad file stops `serve` before it listens; read again on SIGHUP, so a renewed
//! certificate is used without a restart (a bad renewal keeps the one in use).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The largest certificate chain or key file read.
const MOST_PEM_BYTES: u64 = 1 << 20;

/// The certificate and key files, and the server settings made from them.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server: Arc<ServerConfig>,
}

impl Tls {
    /// Reads both files; an error names the key and the file, never the content.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Tls, String> {
        let server = server_config(&cert, &key)?;
        Ok(Tls { cert, key, server })
    }

    /// The files read again, for a reload.
    pub fn reread(&self) -> Result<Arc<ServerConfig>, String> {
        server_config(&self.cert, &self.key)
    }
}

/// The file, read through a bound: a FIFO or a file that grows is cut off, not followed.
fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("{key}: cannot read {}: {e}", path.display());
    // A FIFO would block the open until something writes to it.
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(format!("{key}: {} is not a file", path.display()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MOST_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MOST_PEM_BYTES {
        return Err(format!(
            "{key}: {} is larger than {MOST_PEM_BYTES} bytes; is it a PEM file?",
            path.display()
        ));
    }
    Ok(bytes)
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(cert, "[service] tls_cert")?)
            .collect::<Result<_, _>>()
            .map_err(|_| {
                format!(
                    "[service] tls_cert: {} is not a PEM certificate chain",
                    cert.display()
                )
            })?;
    if chain.is_empty() {
        return Err(format!(
            "[service] tls_cert: {} holds no certificate (-----BEGIN CERTIFICATE-----)",
            cert.display()
        ));
    }
    let private =
        PrivateKeyDer::from_pem_slice(&read(key, "[service] tls_key")?).map_err(|_| {
            format!(
                "[service] tls_key: {} holds no private key in PEM (PKCS#8, PKCS#1 or SEC1)",
                key.display()
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "[service] tls_cert and tls_key: {} and {} do not make a usable certificate \
                 and key ({e})",
                cert.display(),
                key.display()
            )
        })?;
    // The router speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_load_and_the_wrong_files_are_named_without_content() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair();
        let (other_cert, _) = pair();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let c = write("cert.pem", &cert);
        let k = write("key.pem", &key);
        assert!(Tls::load(c.clone(), k.clone()).is_ok());

        let swapped = Tls::load(k.clone(), c.clone()).unwrap_err();
        assert!(
            swapped.contains("tls_cert") && swapped.contains("key.pem"),
            "{swapped}"
        );
        let other = write("other.pem", &other_cert);
        let mismatched = Tls::load(other, k.clone()).unwrap_err();
        assert!(mismatched.contains("do not make"), "{mismatched}");
        let junk = write("junk.pem", "SECRET-LOOKING junk\n");
        for e in [
            Tls::load(junk.clone(), k.clone()).unwrap_err(),
            Tls::load(c.clone(), junk.clone()).unwrap_err(),
            Tls::load(dir.path().join("missing.pem"), k).unwrap_err(),
        ] {
            assert!(!e.contains("SECRET") && e.contains("[service] tls_"), "{e}");
        }
    }
}
