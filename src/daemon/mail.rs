//! E-mail notifications over SMTP: the old tool's `EMAIL_*` variables ([`from_env`]) and the
//! settings of `smtp://` notification URLs ([`super::shoutrrr`]) both end in an [`SmtpConfig`],
//! and [`send`] delivers one plain-text message to all its recipients through lettre's
//! blocking transport with rustls. A password goes over the wire only inside TLS (unless TLS is
//! switched off by name, [`TlsMode::None`]) and never appears in an error or in `Debug` output.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};

/// The port where TLS starts with the connection (SMTPS).
pub const IMPLICIT_TLS_PORT: u16 = 465;
/// The old tool's `EMAIL_SMTP_PORT` default (submission).
pub const DEFAULT_PORT: u16 = 587;
/// The old tool's `EMAIL_NOTIFICATION_SENDER` default.
pub const DEFAULT_FROM: &str = "noreply@nohost";

/// Settings [`send`] refuses before it connects: the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum MailSettingsError {
    /// No server.
    #[error("no SMTP host")]
    NoHost,
    /// No one to send to.
    #[error("no recipient")]
    NoRecipient,
    /// The sender does not parse.
    #[error("invalid sender address {address:?}: {source}")]
    Sender {
        /// The address as given.
        address: String,
        /// Why it does not parse.
        source: lettre::address::AddressError,
    },
    /// A recipient does not parse.
    #[error("invalid recipient address {address:?}: {source}")]
    Recipient {
        /// The address as given.
        address: String,
        /// Why it does not parse.
        source: lettre::address::AddressError,
    },
}

/// Why an e-mail was not sent. No variant holds the password: the messages of the TLS and SMTP
/// layers are kept as text with it replaced by `***`.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The settings: the user's to fix.
    #[error(transparent)]
    Settings(#[from] MailSettingsError),
    /// The server or the network (refused, timed out, a reply that says no, TLS).
    #[error("SMTP {host}:{port}: {reason}")]
    Smtp {
        /// The server.
        host: String,
        /// Its port.
        port: u16,
        /// What failed, password scrubbed.
        reason: String,
    },
    /// TLS could not be set up for the server's name (no trust store?).
    #[error("TLS setup for {host}: {reason}")]
    TlsSetup {
        /// The server.
        host: String,
        /// What failed, password scrubbed.
        reason: String,
    },
    /// The message could not be built: a bug.
    #[error("building the message: {0}")]
    Build(#[source] lettre::error::Error),
}

/// The old `EMAIL_*` variables do not make a usable configuration: the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum MailEnvError {
    /// Recipients but no server.
    #[error("EMAIL_SMTP_HOST is required when EMAIL_NOTIFICATION_RECIPIENT is set")]
    NoHost,
    /// A port that is not one.
    #[error("EMAIL_SMTP_PORT: {0:?} is not a port number")]
    Port(String),
    /// The settings they make are refused.
    #[error("EMAIL_* settings: {0}")]
    Settings(#[source] MailSettingsError),
}

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Port 465: implicit TLS. Other ports: with credentials STARTTLS is required (a password
    /// is never sent in clear); without, STARTTLS is used when the server offers it and the
    /// message goes in clear otherwise (a local relay).
    Auto,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// STARTTLS, and no message (nor password) when the server does not offer it.
    StartTlsRequired,
    /// No TLS at all, credentials included: only for a trusted network.
    None,
}

/// Where and how to send e-mail.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// Server name or address (also the name its certificate must carry).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Login, when the server wants one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// The sender: `a@b` or `Name <a@b>`.
    pub from: String,
    /// The recipients, each `a@b` or `Name <a@b>`; at least one.
    pub to: Vec<String>,
    /// Transport security.
    pub tls: TlsMode,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("tls", &self.tls)
            .finish()
    }
}

/// What [`TlsMode`] means for one config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Security {
    Wrapper,
    Required,
    Opportunistic,
    Plain,
}

impl SmtpConfig {
    fn has_credentials(&self) -> bool {
        self.username.as_deref().is_some_and(|u| !u.is_empty())
    }

    fn security(&self) -> Security {
        match self.tls {
            TlsMode::Implicit => Security::Wrapper,
            TlsMode::StartTlsRequired => Security::Required,
            TlsMode::None => Security::Plain,
            TlsMode::Auto if self.port == IMPLICIT_TLS_PORT => Security::Wrapper,
            TlsMode::Auto if self.has_credentials() => Security::Required,
            TlsMode::Auto => Security::Opportunistic,
        }
    }

    /// The sender and the recipients, parsed; an error names the bad address.
    fn mailboxes(&self) -> Result<(Mailbox, Vec<Mailbox>), MailSettingsError> {
        let from = self
            .from
            .parse::<Mailbox>()
            .map_err(|source| MailSettingsError::Sender {
                address: self.from.clone(),
                source,
            })?;
        if self.to.is_empty() {
            return Err(MailSettingsError::NoRecipient);
        }
        let to = self
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|source| MailSettingsError::Recipient {
                        address: t.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((from, to))
    }

    /// Whether the addresses parse and the host is set; what [`send`] would refuse first.
    pub fn validate(&self) -> Result<(), MailSettingsError> {
        if self.host.trim().is_empty() {
            return Err(MailSettingsError::NoHost);
        }
        self.mailboxes().map(|_| ())
    }
}

/// `msg` with every occurrence of a non-empty `secret` replaced.
fn scrub(msg: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => msg.replace(s, "***"),
        _ => msg,
    }
}

/// This machine's name for EHLO and the Message-ID (`localhost` when it is not a plain DNS
/// name).
fn client_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    let plain = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if plain {
        name.to_string()
    } else {
        "localhost".to_string()
    }
}

/// Send `subject` and `body` (plain text) to every recipient of `cfg` in one message, waiting
/// at most `timeout` for the connection and for each reply. Blocking. The error says what
/// failed (address, TLS, server reply) and never contains the password.
pub fn send(
    cfg: &SmtpConfig,
    subject: &str,
    body: &str,
    timeout: Duration,
) -> Result<(), MailError> {
    cfg.validate()?;
    let (from, to) = cfg.mailboxes()?;
    let host_name = client_name();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut message = Message::builder()
        .from(from)
        .subject(subject)
        .message_id(Some(format!(
            "<{nanos:x}.{:x}@{host_name}>",
            std::process::id()
        )))
        .header(ContentType::TEXT_PLAIN);
    for mailbox in to {
        message = message.to(mailbox);
    }
    let message = message.body(body.to_string()).map_err(MailError::Build)?;

    let secret = cfg.password.as_deref();
    let tls_params = || {
        TlsParameters::new(cfg.host.clone()).map_err(|e| MailError::TlsSetup {
            host: cfg.host.clone(),
            reason: scrub(e.to_string(), secret),
        })
    };
    let tls = match cfg.security() {
        Security::Wrapper => Tls::Wrapper(tls_params()?),
        Security::Required => Tls::Required(tls_params()?),
        Security::Opportunistic => Tls::Opportunistic(tls_params()?),
        Security::Plain => Tls::None,
    };
    let mut transport = SmtpTransport::builder_dangerous(cfg.host.as_str())
        .port(cfg.port)
        .timeout(Some(timeout))
        .hello_name(ClientId::Domain(host_name))
        .tls(tls);
    if cfg.has_credentials() {
        transport = transport.credentials(Credentials::new(
            cfg.username.clone().unwrap_or_default(),
            cfg.password.clone().unwrap_or_default(),
        ));
    }
    transport
        .build()
        .send(&message)
        .map(|_| ())
        .map_err(|e| MailError::Smtp {
            host: cfg.host.clone(),
            port: cfg.port,
            reason: scrub(e.to_string(), secret),
        })
}

/// The old tool's variables, read through `env`: `EMAIL_NOTIFICATION_RECIPIENT` (comma
/// separated; unset or empty: `Ok(None)`), `EMAIL_NOTIFICATION_SENDER` (default
/// [`DEFAULT_FROM`]), `EMAIL_SMTP_HOST` (required then), `EMAIL_SMTP_PORT` (default
/// [`DEFAULT_PORT`]), `EMAIL_SMTP_USERNAME`, `EMAIL_SMTP_PASSWORD`; [`TlsMode::Auto`]. An
/// error names the variable and never holds the password.
pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<SmtpConfig>, MailEnvError> {
    let set = |key: &str| {
        env(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let Some(recipients) = set("EMAIL_NOTIFICATION_RECIPIENT") else {
        return Ok(None);
    };
    let to: Vec<String> = recipients
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let host = set("EMAIL_SMTP_HOST").ok_or(MailEnvError::NoHost)?;
    let port = match set("EMAIL_SMTP_PORT") {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(MailEnvError::Port(p)),
        },
    };
    let cfg = SmtpConfig {
        host,
        port,
        username: set("EMAIL_SMTP_USERNAME"),
        // A password may have meaningful spaces at its ends: only an empty one is unset.
        password: env("EMAIL_SMTP_PASSWORD").filter(|p| !p.is_empty()),
        from: set("EMAIL_NOTIFICATION_SENDER").unwrap_or_else(|| DEFAULT_FROM.to_string()),
        to,
        tls: TlsMode::Auto,
    };
    cfg.validate().map_err(MailEnvError::Settings)?;
    Ok(Some(cfg))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread::JoinHandle;
    use std::time::Instant;

    /// What a [`sink`] saw.
    #[derive(Debug, Default)]
    pub(crate) struct Seen {
        /// Every command line, as sent.
        pub commands: Vec<String>,
        pub mail_from: Vec<String>,
        pub rcpt_to: Vec<String>,
        /// The DATA of each message (dot-unstuffed, CRLF line ends).
        pub data: Vec<String>,
    }

    fn accept_within(listener: &TcpListener, limit: Duration) -> Option<TcpStream> {
        listener.set_nonblocking(true).ok()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).ok()?;
                    return Some(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        None
    }

    /// A plain SMTP sink on loopback for one connection: it advertises AUTH but not
    /// STARTTLS, accepts everything else and rejects AUTH. Bounded in time and lines.
    pub(crate) fn sink() -> (u16, JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = std::thread::spawn(move || {
            let mut seen = Seen::default();
            let Some(stream) = accept_within(&listener, Duration::from_secs(10)) else {
                return seen;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut out = stream.try_clone().expect("clone");
            let mut reader = BufReader::new(stream);
            let mut reply = |s: &str| out.write_all(s.as_bytes()).is_ok();
            reply("220 sink ESMTP\r\n");
            for _ in 0..1000 {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end().to_string();
                let upper = line.to_ascii_uppercase();
                seen.commands.push(line.clone());
                let ok = if upper.starts_with("EHLO") {
                    reply("250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
                } else if upper.starts_with("MAIL FROM:") {
                    seen.mail_from.push(line[10..].trim().to_string());
                    reply("250 ok\r\n")
                } else if upper.starts_with("RCPT TO:") {
                    seen.rcpt_to.push(line[8..].trim().to_string());
                    reply("250 ok\r\n")
                } else if upper == "DATA" {
                    reply("354 go on\r\n");
                    let mut data = String::new();
                    for _ in 0..10_000 {
                        let mut l = String::new();
                        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                            break;
                        }
                        data.push_str(l.strip_prefix('.').unwrap_or(&l));
                    }
                    seen.data.push(data);
                    reply("250 queued\r\n")
                } else if upper.starts_with("AUTH") {
                    reply("535 no\r\n")
                } else if upper == "QUIT" {
                    reply("221 bye\r\n");
                    break;
                } else if upper.starts_with("HELO") || upper == "RSET" || upper == "NOOP" {
                    reply("250 ok\r\n")
                } else {
                    reply("502 not implemented\r\n")
                };
                if !ok {
                    break;
                }
            }
            seen
        });
        (port, handle)
    }

    fn cfg(port: u16) -> SmtpConfig {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            username: None,
            password: None,
            from: "Coffer <backup@example.org>".into(),
            to: vec!["ops@example.org".into(), "Second <two@example.net>".into()],
            tls: TlsMode::Auto,
        }
    }

    #[test]
    fn delivers_to_every_recipient_in_clear_without_credentials() {
        let (port, server) = sink();
        let r = send(
            &cfg(port),
            "coffer: backup failed",
            "line one\nsecond line",
            Duration::from_secs(10),
        );
        let seen = server.join().expect("sink");
        assert!(r.is_ok(), "{r:?} {seen:?}");
        assert_eq!(seen.mail_from, vec!["<backup@example.org>"]);
        assert_eq!(seen.rcpt_to, vec!["<ops@example.org>", "<two@example.net>"]);
        assert_eq!(seen.data.len(), 1);
        let data = &seen.data[0];
        assert!(
            data.contains("Subject: coffer: backup failed\r\n"),
            "{data}"
        );
        assert!(
            data.contains("From: Coffer <backup@example.org>\r\n"),
            "{data}"
        );
        assert!(data.contains("ops@example.org"), "{data}");
        assert!(data.contains("line one"), "{data}");
        assert!(data.contains("second line"), "{data}");
        assert!(!seen.commands.iter().any(|c| c.starts_with("AUTH")));
    }

    #[test]
    fn refuses_credentials_without_starttls() {
        let (port, server) = sink();
        let mut c = cfg(port);
        c.username = Some("backup".into());
        c.password = Some("hunter2-secret".into());
        let r = send(&c, "s", "b", Duration::from_secs(10));
        let seen = server.join().expect("sink");
        let e = r.expect_err("must refuse").to_string();
        assert!(e.contains("STARTTLS"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            !seen
                .commands
                .iter()
                .any(|c| c.to_ascii_uppercase().starts_with("AUTH"))
        );
        assert!(seen.mail_from.is_empty() && seen.data.is_empty());
    }

    #[test]
    fn starttls_required_refuses_a_plain_server() {
        let (port, server) = sink();
        let mut c = cfg(port);
        c.tls = TlsMode::StartTlsRequired;
        let r = send(&c, "s", "b", Duration::from_secs(10));
        let seen = server.join().expect("sink");
        assert!(r.is_err());
        assert!(seen.data.is_empty());
    }

    #[test]
    fn security_follows_the_mode() {
        let mut c = cfg(25);
        assert_eq!(c.security(), Security::Opportunistic);
        c.port = 465;
        assert_eq!(c.security(), Security::Wrapper);
        c.port = 587;
        c.username = Some("u".into());
        assert_eq!(c.security(), Security::Required);
        c.tls = TlsMode::None;
        assert_eq!(c.security(), Security::Plain);
        c.tls = TlsMode::Implicit;
        assert_eq!(c.security(), Security::Wrapper);
    }

    #[test]
    fn debug_hides_the_password() {
        let mut c = cfg(25);
        c.password = Some("hunter2-secret".into());
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("***"), "{d}");
    }

    #[test]
    fn bad_addresses_are_refused_before_connecting() {
        let mut c = cfg(1);
        c.to = vec!["not an address".into()];
        let e = send(&c, "s", "b", Duration::from_secs(1))
            .expect_err("bad")
            .to_string();
        assert!(e.contains("recipient"), "{e}");
        c.to.clear();
        assert!(send(&c, "s", "b", Duration::from_secs(1)).is_err());
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_unset_is_none() {
        assert!(matches!(from_env(&env_of(&[])), Ok(None)));
        assert!(matches!(
            from_env(&env_of(&[("EMAIL_SMTP_HOST", "h")])),
            Ok(None)
        ));
        assert!(matches!(
            from_env(&env_of(&[("EMAIL_NOTIFICATION_RECIPIENT", " ")])),
            Ok(None)
        ));
    }

    #[test]
    fn env_defaults_and_values() {
        let c = from_env(&env_of(&[
            (
                "EMAIL_NOTIFICATION_RECIPIENT",
                "a@example.org, b@example.org",
            ),
            ("EMAIL_SMTP_HOST", "smtp.example.org"),
        ]))
        .expect("ok")
        .expect("some");
        assert_eq!(c.port, 587);
        assert_eq!(c.from, "noreply@nohost");
        assert_eq!(c.to, vec!["a@example.org", "b@example.org"]);
        assert_eq!((c.username, c.password, c.tls), (None, None, TlsMode::Auto));

        let c = from_env(&env_of(&[
            ("EMAIL_NOTIFICATION_RECIPIENT", "a@example.org"),
            ("EMAIL_NOTIFICATION_SENDER", "Backups <bk@example.org>"),
            ("EMAIL_SMTP_HOST", "smtp.example.org"),
            ("EMAIL_SMTP_PORT", "465"),
            ("EMAIL_SMTP_USERNAME", "user"),
            ("EMAIL_SMTP_PASSWORD", " p w "),
        ]))
        .expect("ok")
        .expect("some");
        assert_eq!(c.port, 465);
        assert_eq!(c.from, "Backups <bk@example.org>");
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some(" p w "));
    }

    #[test]
    fn env_errors() {
        let base = [
            ("EMAIL_NOTIFICATION_RECIPIENT", "a@example.org"),
            ("EMAIL_SMTP_HOST", "smtp.example.org"),
            ("EMAIL_SMTP_PASSWORD", "hunter2-secret"),
        ];
        for port in ["0", "65536", "smtp", "-1"] {
            let mut v = base.to_vec();
            v.push(("EMAIL_SMTP_PORT", port));
            let e = from_env(&env_of(&v)).expect_err(port).to_string();
            assert!(e.contains("EMAIL_SMTP_PORT"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = from_env(&env_of(&base[..1]))
            .expect_err("no host")
            .to_string();
        assert!(e.contains("EMAIL_SMTP_HOST"), "{e}");
        let mut v = base.to_vec();
        v.push(("EMAIL_NOTIFICATION_SENDER", "not an address"));
        assert!(from_env(&env_of(&v)).is_err());
    }
}
