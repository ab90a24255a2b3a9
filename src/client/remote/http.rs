//! The Jupyter Server REST API (`/api/kernels`, `/api/kernelspecs`) over blocking HTTP (ureq), and
//! the one TLS configuration the websocket shares. Failures become one line the user can act on.

use super::RemoteOptions;
use crate::client::ClientError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The kernelspec remote kernels are started with, unless `LLMSPELL_KERNELSPEC` names another.
pub const KERNELSPEC: &str = "llmspell";

/// One server: its base URL, its token and an HTTP agent.
pub struct Server {
    /// The URL without a trailing slash (`http://host:8888` or `https://host/prefix`).
    pub base: String,
    pub token: Option<String>,
    pub kernelspec: String,
    pub tls: Arc<rustls::ClientConfig>,
    agent: ureq::Agent,
}

/// The trusted roots: the system's (read at run time, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured) plus
/// the user's own CA file, so a server with a private CA needs no change to the system.
fn root_certs(cacert: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let mut roots = rustls_native_certs::load_native_certs().certs;
    if let Some(path) = cacert {
        let bad = |e: String| ClientError::Remote(format!("cannot use the CA file {}: {e}", path.display()));
        let before = roots.len();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            roots.push(cert.map_err(|e| bad(e.to_string()))?);
        }
        if roots.len() == before {
            return Err(bad("no PEM certificate in it".into()));
        }
    }
    Ok(roots)
}

/// The websocket's TLS configuration (ureq builds its own from the same roots and provider).
fn tls_config(roots: &[CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut store = rustls::RootCertStore::empty();
    // A system bundle may hold a certificate rustls cannot parse: skip it, as ureq does.
    let _ = store.add_parsable_certificates(roots.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Remote(format!("TLS setup failed: {e}")))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Server {
    pub fn new(opts: &RemoteOptions) -> Result<Server, ClientError> {
        let base = opts.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Remote(format!(
                "--remote {base}: the URL must start with http:// or https://"
            )));
        }
        // Roots are only read for https: a plain-HTTP server (a tunnel, localhost) needs none.
        let roots =
            if base.starts_with("https://") { root_certs(opts.cacert.as_deref())? } else { Vec::new() };
        let tls = tls_config(&roots)?;
        let ureq_roots: Vec<ureq::tls::Certificate<'static>> =
            roots.iter().map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()).collect();
        let ureq_tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(crypto())
            .root_certs(ureq::tls::RootCerts::new_with_certs(&ureq_roots))
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(60)))
            .tls_config(ureq_tls)
            .build()
            .new_agent();
        let kernelspec = opts.kernelspec.clone();
        Ok(Server { base, token: opts.token.clone(), kernelspec, tls, agent })
    }

    /// One call; Ok(None) for 404 (a kernel that is gone), the JSON body (or null) otherwise.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Option<Value>, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("token {t}")).unwrap_or_default();
        let result = match (method, body) {
            ("POST", body) => {
                self.agent.post(&url).header("Authorization", &auth).send_json(body.unwrap_or(json!({})))
            }
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            _ => self.agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Io(e)) => return Err(unreachable(&self.base, &e)),
            Err(e) => return Err(unreachable(&self.base, &e)),
        };
        let code = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match code {
            200..=299 => Ok(Some(body)),
            404 => Ok(None),
            401 | 403 => Err(ClientError::Remote(format!(
                "the server refused the token ({} answered {code}; give it with --token, \
                 --token-file or LLMSPELL_TOKEN)",
                self.base
            ))),
            _ => {
                // Jupyter Server explains itself in a JSON body: {"message": ..., "reason": ...}.
                let why = body["message"].as_str().or(body["reason"].as_str()).unwrap_or("");
                let line = format!("{method} {url} failed with HTTP {code} {why}");
                Err(ClientError::Remote(line.trim_end().to_string()))
            }
        }
    }

    /// A kernel's model (`{id, name, execution_state, connections, last_activity}`), None if gone.
    pub fn kernel(&self, id: &str) -> Result<Option<Value>, ClientError> {
        self.call("GET", &format!("/api/kernels/{id}"), None)
    }

    /// Every kernel the server will list (Kernel Gateway refuses unless configured to).
    pub fn kernels(&self) -> Result<Vec<Value>, ClientError> {
        let list = self.call("GET", "/api/kernels", None)?.unwrap_or(Value::Null);
        Ok(list.as_array().cloned().unwrap_or_default())
    }

    /// Starts a kernel of the llmspell kernelspec; its id. A server without the kernelspec gets an
    /// error that says how to install it there.
    pub fn start_kernel(&self) -> Result<String, ClientError> {
        let started = self.call("POST", "/api/kernels", Some(json!({ "name": self.kernelspec })));
        let failed = match started {
            Ok(Some(model)) => match model["id"].as_str() {
                Some(id) => return Ok(id.to_string()),
                None => format!("{} did not say which kernel it started: {model}", self.base),
            },
            Ok(None) => format!("{} has no /api/kernels (is it a Jupyter Server?)", self.base),
            Err(e) => e.to_string(),
        };
        if !self.has_kernelspec().unwrap_or(true) {
            return Err(ClientError::Remote(format!(
                "{} has no {} kernelspec: on the server's host, install llmspell and run \
                 `llmspell kernel install --user --name {}` (or --prefix of the server's environment), \
                 then retry",
                self.base, self.kernelspec, self.kernelspec
            )));
        }
        Err(ClientError::Remote(failed))
    }

    fn has_kernelspec(&self) -> Result<bool, ClientError> {
        Ok(self.kernelspecs()?["kernelspecs"].get(&self.kernelspec).is_some())
    }

    /// The server's kernelspecs; also a cheap check that it is there and takes the token.
    pub fn kernelspecs(&self) -> Result<Value, ClientError> {
        Ok(self.call("GET", "/api/kernelspecs", None)?.unwrap_or(Value::Null))
    }

    /// Shuts the kernel down (the server ends its process); false if it was already gone.
    pub fn delete_kernel(&self, id: &str) -> Result<bool, ClientError> {
        Ok(self.call("DELETE", &format!("/api/kernels/{id}"), None)?.is_some())
    }

    /// Interrupts whatever the kernel runs; false if it is gone.
    pub fn interrupt(&self, id: &str) -> Result<bool, ClientError> {
        Ok(self.call("POST", &format!("/api/kernels/{id}/interrupt"), Some(json!({})))?.is_some())
    }
}

/// "cannot reach URL: <the OS's reason>".
pub fn unreachable(base: &str, t: &dyn std::error::Error) -> ClientError {
    let mut why = t.to_string();
    let mut source = t.source();
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    ClientError::Remote(format!("cannot reach {base}: {why}"))
}
