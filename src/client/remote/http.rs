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

/// Root certificates compiled in (webpki-roots), plus the user's own CA if given: a server with a
/// private CA needs no change to the system.
pub fn tls_config(cacert: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = cacert {
        let bad = |e: String| ClientError::Remote(format!("cannot use the CA file {}: {e}", path.display()));
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no PEM certificate in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Remote(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Server {
    pub fn new(opts: &RemoteOptions) -> Result<Server, ClientError> {
        let base = opts.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Remote(format!(
                "--remote {base}: the URL must start with http:// or https://"
            )));
        }
        let tls = tls_config(opts.cacert.as_deref())?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls.clone())
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .build();
        let kernelspec = opts.kernelspec.clone();
        Ok(Server { base, token: opts.token.clone(), kernelspec, tls, agent })
    }

    /// One call; Ok(None) for 404 (a kernel that is gone), the JSON body (or null) otherwise.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Option<Value>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("token {t}"));
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match result {
            Ok(resp) => {
                let text = resp.into_string().unwrap_or_default();
                Ok(Some(serde_json::from_str(&text).unwrap_or(Value::Null)))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, resp)) => Err(status_error(&self.base, method, path, code, resp)),
            Err(ureq::Error::Transport(t)) => Err(unreachable(&self.base, &t)),
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

fn status_error(base: &str, method: &str, path: &str, code: u16, resp: ureq::Response) -> ClientError {
    if code == 401 || code == 403 {
        return ClientError::Remote(format!(
            "the server refused the token ({base} answered {code}; give it with --token, \
             --token-file or LLMSPELL_TOKEN)"
        ));
    }
    // Jupyter Server explains itself in a JSON body: {"message": ..., "reason": ...}.
    let body: Value = resp.into_json().unwrap_or(Value::Null);
    let why = body["message"].as_str().or(body["reason"].as_str()).unwrap_or("").to_string();
    ClientError::Remote(format!("{method} {base}{path} failed with HTTP {code} {why}").trim_end().to_string())
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
