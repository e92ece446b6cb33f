//! TLS for `https://` sources: rustls with the system's authorities and `pull.ca_file`'s,
//! made once when the proxies start.

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;

/// Where Debian and Ubuntu keep every trusted authority in one file.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Certificates read from one file, at most.
const ROOTS_MAX: usize = 4096;

static CLIENT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Builds the client configuration (once); an error names what could not be read.
pub fn init(extra: Option<&std::path::Path>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut add = |path: &std::path::Path, required: bool| -> Result<usize, String> {
        let certs = match CertificateDer::pem_file_iter(path) {
            Ok(c) => c,
            Err(_) if !required => return Ok(0),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let (mut taken, mut refused) = (0, 0);
        for cert in certs.take(ROOTS_MAX) {
            match cert.map_err(|e| e.to_string()).and_then(|c| roots.add(c).map_err(|e| e.to_string())) {
                Ok(()) => taken += 1,
                Err(_) => refused += 1,
            }
        }
        if required && taken == 0 {
            return Err(format!("{}: no certificate in it ({refused} unreadable)", path.display()));
        }
        Ok(taken)
    };
    let system = add(std::path::Path::new(SYSTEM_ROOTS), false)?;
    let own = match extra {
        Some(path) => add(path, true).map_err(|e| format!("pull.ca_file {e}"))?,
        None => 0,
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = CLIENT.set(Arc::new(config));
    tracing::info!(system, own, "pull: authorities for https:// sources loaded");
    Ok(())
}

/// TLS over `tcp` to `host`, its certificate checked.
pub async fn connect(host: &str, tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = CLIENT.get().ok_or("TLS is not set up (pull.ca_file unreadable at start?)")?.clone();
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string()).map_err(|e| format!("TLS server name {host:?}: {e}"))?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS with {host}: {e}"))
}
