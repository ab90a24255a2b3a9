//! `kernel start --RemoteProcessProxy.*`: the kernel launched by Jupyter Enterprise Gateway on
//! another host (a Kubernetes pod, a Docker container, a YARN or SSH node).
//!
//! EG does not write a connection file there. It passes a kernel id, a response address, its RSA
//! public key and a port range; the launcher picks the five ports (and a comm port) inside the range,
//! sends the connection info, sealed (`gateway_payload.rs`), to the response address, and then
//! serves signal and shutdown requests on the comm port (`gateway_comm.rs`). EG's own launchers are
//! Python/R/Scala programs that start the kernel beside them; llmspell does all of it in-process, so
//! a kernel image needs no Python.
//!
//! The flags are EG's (`docs/source/developers/kernel-launcher.md`, the launchers'
//! argument parsers), each also accepted without the `RemoteProcessProxy.` prefix as EG's
//! `bootstrap-kernel.sh` passes them.

use super::gateway_payload;
use crate::connection::ConnectionInfo;
use std::io::Write;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long the kernel waits to reach the response address (EG's own launch timeout is 30 s).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// What EG told us on the command line.
#[derive(Debug, Clone)]
pub struct Launch {
    pub kernel_id: String,
    /// `host:port` of EG's response socket.
    pub response_address: String,
    pub public_key: rsa::PublicKey,
    pub ports: PortRange,
}

/// The raw flag values, as `main.rs` read them.
#[derive(Debug, Default)]
pub struct Flags {
    pub kernel_id: Option<String>,
    pub response_address: Option<String>,
    pub public_key: Option<String>,
    pub port_range: Option<String>,
    /// `--spark-context-initialization-mode`, `--cluster-type`, `--kernel-class-name`: EG's
    /// launchers for Python, R and Scala use them; a Lua kernel has no Spark and no kernel class.
    pub ignored: Vec<(&'static str, String)>,
}

impl Flags {
    pub fn any(&self) -> bool {
        self.kernel_id.is_some()
            || self.response_address.is_some()
            || self.public_key.is_some()
            || self.port_range.is_some()
            || !self.ignored.is_empty()
    }
}

impl Launch {
    /// Checks the flags (all of id, response address and key are needed) before anything is bound.
    pub fn from_flags(flags: Flags) -> Result<Launch, String> {
        for (flag, value) in &flags.ignored {
            if value != "none" {
                log::warn!("--RemoteProcessProxy.{flag} {value:?} does not apply to a Lua kernel: ignored");
            }
        }
        let need = |v: Option<String>, flag: &str| -> Result<String, String> {
            let v = v.ok_or_else(|| {
                format!("--RemoteProcessProxy.{flag} is missing (Enterprise Gateway passes kernel-id, response-address, public-key and port-range together)")
            })?;
            unfilled(&v, flag)?;
            Ok(v)
        };
        let kernel_id = need(flags.kernel_id, "kernel-id")?;
        let response_address = need(flags.response_address, "response-address")?;
        split_address(&response_address)?;
        let public_key = gateway_payload::parse_public_key(&need(flags.public_key, "public-key")?)?;
        let ports = match flags.port_range {
            Some(r) => {
                unfilled(&r, "port-range")?;
                PortRange::parse(&r)?
            }
            None => PortRange::ANY,
        };
        Ok(Launch { kernel_id, response_address, public_key, ports })
    }

    /// Sends the connection info, with what EG's launchers add to it, to the response address.
    pub fn announce(&self, info: &ConnectionInfo, comm_port: u16) -> Result<(), String> {
        let mut json = serde_json::to_value(info).expect("connection info serialises");
        let pid = std::process::id();
        // SAFETY: getpgid(0) only reads our own process group.
        let pgid = unsafe { libc::getpgid(0) };
        json["pid"] = pid.into();
        json["pgid"] = pgid.into();
        json["comm_port"] = comm_port.into();
        json["kernel_id"] = self.kernel_id.clone().into();
        let sealed = gateway_payload::seal(json.to_string().as_bytes(), &self.public_key)?;
        let fail = |e: std::io::Error| {
            format!("cannot send the connection info to Enterprise Gateway at {}: {e}", self.response_address)
        };
        let mut stream = connect(&self.response_address).map_err(fail)?;
        stream.set_write_timeout(Some(RESPONSE_TIMEOUT)).map_err(fail)?;
        stream.write_all(&sealed).map_err(fail)?;
        // EG reads until end of stream, then decodes.
        stream.shutdown(std::net::Shutdown::Write).map_err(fail)?;
        log::info!(
            "sent the connection info of kernel {} to {} (comm port {comm_port})",
            self.kernel_id,
            self.response_address
        );
        Ok(())
    }
}

/// A `{template}` EG did not fill means the kernelspec was run by something else.
fn unfilled(value: &str, flag: &str) -> Result<(), String> {
    if value.starts_with('{') && value.ends_with('}') {
        return Err(format!(
            "--RemoteProcessProxy.{flag} is {value}: that kernelspec is meant to be launched by Enterprise Gateway"
        ));
    }
    Ok(())
}

/// `host:port`, as EG's launchers split it (exactly one colon: no IPv6 literals there either).
fn split_address(address: &str) -> Result<(&str, u16), String> {
    let bad = || format!("--RemoteProcessProxy.response-address {address:?} is not HOST:PORT");
    let (host, port) = address.split_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.contains(':') {
        return Err(bad());
    }
    Ok((host, port.parse().map_err(|_| bad())?))
}

fn connect(address: &str) -> std::io::Result<TcpStream> {
    let (host, port) = split_address(address).map_err(std::io::Error::other)?;
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, RESPONSE_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{host} resolves to no address"))))
}

/// `--RemoteProcessProxy.port-range LOW..HIGH`; `0..0` (EG's default) lets the OS pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    low: u16,
    high: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange { low: 0, high: 0 };

    /// As EG's launchers check it: a non-empty range must span at least `EG_MIN_PORT_RANGE_SIZE`
    /// ports (EG passes that variable to the kernel; default 1000).
    pub fn parse(text: &str) -> Result<PortRange, String> {
        if text.is_empty() {
            return Ok(PortRange::ANY);
        }
        let bad = |why: &str| format!("--RemoteProcessProxy.port-range {text:?}: {why}");
        let (low, high) = text.split_once("..").ok_or_else(|| bad("not LOW..HIGH"))?;
        let low: u16 = low.trim().parse().map_err(|_| bad("LOW is not a port number"))?;
        let high: u16 = high.trim().parse().map_err(|_| bad("HIGH is not a port number"))?;
        if low > high {
            return Err(bad("LOW is above HIGH"));
        }
        let min = env_number(&["MIN_PORT_RANGE_SIZE", "EG_MIN_PORT_RANGE_SIZE"]).unwrap_or(1000);
        if high != low && u32::from(high - low) < min {
            return Err(bad(&format!("the range must span at least {min} ports (EG_MIN_PORT_RANGE_SIZE)")));
        }
        Ok(PortRange { low, high })
    }

    pub fn is_any(&self) -> bool {
        self.low == self.high
    }

    pub fn contains(&self, port: u16) -> bool {
        self.is_any() || (self.low..=self.high).contains(&port)
    }

    /// Binds something on a random port of the range, trying again on failure (a port in use) as
    /// many times as EG's launchers do (`EG_MAX_PORT_RANGE_RETRIES`, default 5). With no range the
    /// OS picks: port 0.
    pub fn bind<T, E: std::fmt::Display>(
        &self,
        mut bind: impl FnMut(u16) -> Result<T, E>,
    ) -> Result<T, String> {
        if self.is_any() {
            return bind(0).map_err(|e| e.to_string());
        }
        let retries = env_number(&["MAX_PORT_RANGE_RETRIES", "EG_MAX_PORT_RANGE_RETRIES"]).unwrap_or(5);
        let mut last = String::new();
        for _ in 0..=retries {
            match bind(self.random_port()) {
                Ok(t) => return Ok(t),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("no free port in {}..{} after {} tries (last: {last})", self.low, self.high, retries + 1))
    }

    fn random_port(&self) -> u16 {
        let r = crate::wire::random_bytes(4);
        let r = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        let span = u32::from(self.high - self.low) + 1;
        self.low + (r % span) as u16
    }
}

fn env_number(names: &[&str]) -> Option<u32> {
    names.iter().find_map(|n| std::env::var(n).ok()?.trim().parse().ok())
}

/// The comm port: a TCP listener inside the range, on the kernel's address.
pub fn bind_comm_port(ip: &str, ports: &PortRange) -> Result<TcpListener, String> {
    ports
        .bind(|port| TcpListener::bind((ip, port)))
        .map_err(|e| format!("cannot bind the comm port on {ip}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_as_eg_checks_them() {
        assert!(PortRange::parse("0..0").unwrap().is_any());
        assert!(PortRange::parse("").unwrap().is_any());
        let r = PortRange::parse("40000..41000").unwrap();
        assert!(r.contains(40000) && r.contains(41000) && !r.contains(39999) && !r.contains(41001));
        for _ in 0..200 {
            assert!(r.contains(r.random_port()));
        }
        for bad in ["40000", "a..b", "41000..40000", "40000..40010", "1..70000"] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn response_addresses_are_host_colon_port() {
        assert_eq!(split_address("10.0.0.1:8877").unwrap(), ("10.0.0.1", 8877));
        for bad in ["10.0.0.1", ":1", "h:x", "::1:80", "h:1:2"] {
            assert!(split_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unfilled_templates_are_refused() {
        assert!(unfilled("{response_address}", "response-address").is_err());
        assert!(unfilled("127.0.0.1:1", "response-address").is_ok());
    }
}
