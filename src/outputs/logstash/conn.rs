//! One Lumberjack connection (TCP, or TLS through tokio-rustls) and the exchange of one
//! window on it: write the window, then read cumulative acks until the last frame is
//! acknowledged. Every wait is bounded by `timeout`: the connect, each write, and the wait for
//! the *next* ack (a keepalive ack restarts it, so a slow Logstash that keeps saying "still
//! working" is waited for, while a silent one is given up after `timeout`).
//!
//! A connection carries one window at a time (Lumberjack acks are per connection and carry no
//! window id), so concurrency comes from several connections, one per request in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ack::{AckReader, WindowAcks};
use super::frame::WindowEncoder;
use super::tls::TlsConfig;
use crate::event::Event;

/// A byte stream to the server (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TLS settings ready for connecting.
#[derive(Clone)]
pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub config: TlsConfig,
}

/// How one window ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowResult {
    /// Every frame acknowledged.
    Complete,
    /// The connection failed or timed out after `acked` frames were acknowledged; the rest
    /// must be sent again (on another connection).
    Failed { acked: u32, error: String },
}

pub struct Conn {
    io: Box<dyn Io>,
    /// Index of the host in the configured list.
    pub host: usize,
    pub opened: Instant,
    pub last_used: Instant,
    reader: AckReader,
    encoder: WindowEncoder,
    buf: Vec<u8>,
}

/// Splits `host:port` (port 5044 when absent; `[v6]:port` for IPv6) into (host, port).
pub fn split_host(addr: &str) -> Result<(String, u16), String> {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        let Some((h, p)) = rest.split_once(']') else {
            return Err(format!("`{addr}`: missing `]` after an IPv6 address"));
        };
        let port = match p.strip_prefix(':') {
            Some(p) => p
                .parse()
                .map_err(|_| format!("`{addr}`: invalid port `{p}`"))?,
            None if p.is_empty() => 5044,
            None => return Err(format!("`{addr}`: expected `[host]:port`")),
        };
        return Ok((h.to_owned(), port));
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p
                .parse()
                .map_err(|_| format!("`{addr}`: invalid port `{p}`"))?;
            if h.is_empty() {
                return Err(format!("`{addr}`: missing host"));
            }
            Ok((h.to_owned(), port))
        }
        Some(_) => Err(format!("`{addr}`: write IPv6 addresses as `[addr]:port`")),
        None if addr.is_empty() => Err("empty host".to_owned()),
        None => Ok((addr.to_owned(), 5044)),
    }
}

impl Conn {
    /// Connects to `addr` (`host:port`) within `timeout`.
    pub async fn dial(
        addr: &str,
        host: usize,
        tls: Option<&Tls>,
        timeout: Duration,
    ) -> Result<Conn, String> {
        let (name, port) = split_host(addr)?;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((name.as_str(), port)))
            .await
            .map_err(|_| format!("connect to {addr}: timed out after {timeout:?}"))?
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        // Windows are written whole; Nagle would only delay the last segment.
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some(tls) => {
                let server_name = tls
                    .config
                    .server_name(&name)
                    .map_err(|e| format!("{addr}: {e:#}"))?;
                let stream = tokio::time::timeout(timeout, tls.connector.connect(server_name, tcp))
                    .await
                    .map_err(|_| format!("TLS handshake with {addr}: timed out"))?
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                Box::new(stream)
            }
        };
        let now = Instant::now();
        Ok(Conn {
            io,
            host,
            opened: now,
            last_used: now,
            reader: AckReader::new(),
            encoder: WindowEncoder::new(),
            buf: Vec::new(),
        })
    }

    /// Sends one window of `events` and waits for its acks.
    pub async fn send_window(
        &mut self,
        events: &[Event],
        compression_level: u32,
        timeout: Duration,
    ) -> WindowResult {
        self.last_used = Instant::now();
        let mut buf = std::mem::take(&mut self.buf);
        self.encoder.encode(events, compression_level, &mut buf);
        let written = tokio::time::timeout(timeout, async {
            self.io.write_all(&buf).await?;
            self.io.flush().await
        })
        .await;
        // Keep the buffer's capacity for the next window, but not a huge one forever.
        buf.clear();
        if buf.capacity() <= 8 << 20 {
            self.buf = buf;
        }
        let mut acks = WindowAcks::new(events.len() as u32);
        match written {
            Err(_) => {
                return WindowResult::Failed {
                    acked: 0,
                    error: format!("writing the window timed out after {timeout:?}"),
                };
            }
            Ok(Err(e)) => {
                return WindowResult::Failed {
                    acked: 0,
                    error: format!("writing the window: {e}"),
                };
            }
            Ok(Ok(())) => {}
        }
        let mut chunk = [0u8; 512];
        while !acks.is_complete() {
            let n = match tokio::time::timeout(timeout, self.io.read(&mut chunk)).await {
                Err(_) => {
                    return WindowResult::Failed {
                        acked: acks.acked(),
                        error: format!(
                            "no ack for {timeout:?} ({} of {} frames acknowledged)",
                            acks.acked(),
                            acks.window()
                        ),
                    };
                }
                Ok(Err(e)) => {
                    return WindowResult::Failed {
                        acked: acks.acked(),
                        error: format!("reading acks: {e}"),
                    };
                }
                Ok(Ok(0)) => {
                    return WindowResult::Failed {
                        acked: acks.acked(),
                        error: format!(
                            "the server closed the connection ({} of {} frames acknowledged)",
                            acks.acked(),
                            acks.window()
                        ),
                    };
                }
                Ok(Ok(n)) => n,
            };
            let mut bad = None;
            let fed = self.reader.feed(&chunk[..n], |seq| {
                if bad.is_none()
                    && let Err(e) = acks.apply(seq)
                {
                    bad = Some(e);
                }
            });
            if let Some(e) = fed.err().or(bad) {
                return WindowResult::Failed {
                    acked: acks.acked(),
                    error: e.to_string(),
                };
            }
        }
        self.last_used = Instant::now();
        WindowResult::Complete
    }
}

/// Builds the TLS connector for a config (reads certificate files).
pub fn tls_for(config: &TlsConfig) -> anyhow::Result<Option<Arc<Tls>>> {
    if !config.enabled {
        return Ok(None);
    }
    let client = config.client_config()?;
    Ok(Some(Arc::new(Tls {
        connector: tokio_rustls::TlsConnector::from(client),
        config: config.clone(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the TLS test needs the openssl command to make its certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA, a server certificate for `localhost` and a client certificate, all signed by it.
    fn make_certs(dir: &Path) {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ]);
        openssl(dir, &ca);
        for (name, ext) in [
            (
                "server",
                "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "subjectAltName=DNS:agent\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
            ),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
            openssl(dir, &req);
            let pem = format!("{name}.pem");
            let extfile = format!("{name}.ext");
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                ],
            );
        }
    }

    /// A window over TLS with a client certificate, against a tokio-rustls server that
    /// requires one and acks in two steps (a partial ack, then the rest).
    #[tokio::test]
    async fn tls_with_client_certificate() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path());
        let p = |f: &str| dir.path().join(f).display().to_string();
        let server_tls = acceptor(&p);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let srv = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = server_tls
                .accept(tcp)
                .await
                .expect("handshake with a client certificate");
            let mut hdr = [0u8; 6];
            s.read_exact(&mut hdr).await.unwrap();
            assert_eq!(&hdr[..2], b"2W");
            let n = u32::from_be_bytes([hdr[2], hdr[3], hdr[4], hdr[5]]);
            for _ in 0..n {
                let mut f = [0u8; 10];
                s.read_exact(&mut f).await.unwrap();
                assert_eq!(&f[..2], b"2J");
                let len = u32::from_be_bytes([f[6], f[7], f[8], f[9]]) as usize;
                let mut body = vec![0u8; len];
                s.read_exact(&mut body).await.unwrap();
            }
            for seq in [n / 2, n] {
                let mut a = b"2A".to_vec();
                a.extend_from_slice(&seq.to_be_bytes());
                s.write_all(&a).await.unwrap();
            }
            s.flush().await.unwrap();
            n
        });
        let tls = tls_for(&TlsConfig {
            enabled: true,
            ca_file: Some(p("ca.pem")),
            cert_file: Some(p("client.pem")),
            key_file: Some(p("client.key")),
            verify: true,
            server_name: Some("localhost".into()),
        })
        .unwrap()
        .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let mut conn = Conn::dial(&addr, 0, Some(&tls), Duration::from_secs(5))
            .await
            .unwrap();
        let events: Vec<Event> = (0..6)
            .map(|i| Event::synthetic("t", &format!("m{i}")))
            .collect();
        assert_eq!(
            conn.send_window(&events, 0, Duration::from_secs(5)).await,
            WindowResult::Complete
        );
        assert_eq!(srv.await.unwrap(), 6);

        // Without the client certificate the server refuses the handshake.
        let no_client = tls_for(&TlsConfig {
            enabled: true,
            ca_file: Some(p("ca.pem")),
            cert_file: None,
            key_file: None,
            verify: true,
            server_name: Some("localhost".into()),
        })
        .unwrap()
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor2 = acceptor(&p);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            assert!(acceptor2.accept(tcp).await.is_err());
        });
        let r = match Conn::dial(&addr, 0, Some(&no_client), Duration::from_secs(5)).await {
            Err(e) => Err(e),
            Ok(mut c) => match c.send_window(&events, 0, Duration::from_secs(5)).await {
                WindowResult::Complete => Ok(()),
                WindowResult::Failed { error, .. } => Err(error),
            },
        };
        assert!(
            r.is_err(),
            "a server that requires a client certificate must refuse"
        );
    }

    /// A TLS server config that requires a client certificate signed by the test CA.
    fn acceptor(p: &dyn Fn(&str) -> String) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(p("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let chain: Vec<_> = CertificateDer::pem_file_iter(p("server.pem"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                chain,
                PrivateKeyDer::from_pem_file(p("server.key")).unwrap(),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(server))
    }

    #[test]
    fn host_forms() {
        assert_eq!(
            split_host("logstash:5044").unwrap(),
            ("logstash".into(), 5044)
        );
        assert_eq!(split_host("logstash").unwrap(), ("logstash".into(), 5044));
        assert_eq!(split_host("[::1]:6000").unwrap(), ("::1".into(), 6000));
        assert!(split_host("a:b").is_err());
        assert!(split_host("::1:5044").is_err());
        assert!(split_host(":5044").is_err());
    }
}
