//! HTTPS: rustls on the same router. A TLS session stays on the shard that accepted it; when
//! a request belongs to another shard, that shard gets one end of a socket pair and this one
//! relays plaintext between it and the session, so streams are still served by their owner.

use super::conn::{HttpConn, Io, TlsStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpStream, UnixStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Bytes moved per step by a relay, each way.
const RELAY_CHUNK_BYTES: usize = 16 * 1024;

/// A rustls server config from PEM files (certificate chain, private key).
pub fn load(cfg: &crate::config::TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("http.tls.cert_file {}: {e}", cfg.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("http.tls.cert_file {}: no certificate in it", cfg.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| format!("http.tls.key_file {}: {e}", cfg.key_file.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("http.tls: certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS handshake on an accepted connection.
pub async fn accept(config: Arc<rustls::ServerConfig>, tcp: TcpStream) -> std::io::Result<HttpConn> {
    let peer = tcp.peer_addr().map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let stream = futures_rustls::TlsAcceptor::from(config).accept(tcp).await?;
    Ok(HttpConn::with(Io::Tls(Box::new(stream)), peer))
}

/// Moves plaintext between a TLS session and the socket pair end whose other end serves the
/// request on another shard, until either side ends; then both are closed.
pub async fn relay(tls: TlsStream, local: UnixStream) {
    let (mut tls_r, mut tls_w) = futures_lite::io::split(tls);
    let (mut unix_r, mut unix_w) = futures_lite::io::split(local);
    let to_server = async {
        let mut buf = vec![0u8; RELAY_CHUNK_BYTES];
        while let Ok(n) = tls_r.read(&mut buf).await {
            if n == 0 || unix_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let to_client = async {
        let mut buf = vec![0u8; RELAY_CHUNK_BYTES];
        while let Ok(n) = unix_r.read(&mut buf).await {
            if n == 0 || tls_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        // The server side is done: the client gets close_notify.
        let _ = tls_w.close().await;
    };
    futures_lite::future::or(to_client, to_server).await;
}
