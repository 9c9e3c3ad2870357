//! Notification URLs as shoutrrr (behind the old tool's `NOTIFICATION_URLS`) writes them:
//! `smtp://`, `generic://` and `generic+https://`, `telegram://`, `slack://` and `discord://`.
//! [`parse`] turns one into a [`Target`] and [`Target::send`] delivers a title and a message:
//! e-mail through [`super::mail`], the rest as one HTTP request each (per chat for Telegram)
//! through the notifier's reqwest client and runtime. Tokens, passwords and header values never
//! appear in an error, in `Debug` or `Display` output, nor in a [`redact`]ed URL.

use std::fmt;
use std::time::Duration;

use super::mail::{self, MailError, MailSettingsError, SmtpConfig, TlsMode};

/// The schemes [`parse`] understands.
pub const SUPPORTED: &[&str] = &[
    "smtp",
    "generic",
    "generic+http",
    "generic+https",
    "telegram",
    "slack",
    "discord",
];

const TELEGRAM_API: &str = "https://api.telegram.org";
const SLACK_HOOKS: &str = "https://hooks.slack.com";
const SLACK_API: &str = "https://slack.com";
const DISCORD_API: &str = "https://discord.com";
/// shoutrrr's `smtp://` default port (the `EMAIL_*` variables default to 587 instead).
const SMTP_URL_DEFAULT_PORT: u16 = 25;
/// Telegram's limit on a message, in UTF-16 units.
const TELEGRAM_MAX: usize = 4096;
/// Discord's limit on `content`.
const DISCORD_MAX: usize = 2000;
/// How much of a response body is read (for error messages).
const MAX_RESPONSE: usize = 64 * 1024;
/// The generic service's own query keys (anything else is forwarded to the target URL).
const GENERIC_KEYS: &[&str] = &[
    "contenttype",
    "disabletls",
    "template",
    "title",
    "titlekey",
    "messagekey",
    "method",
];

/// Why a notification URL does not parse: a configuration error that says what to fix and
/// holds no secret.
#[derive(Debug, thiserror::Error)]
pub enum NotifyUrlError {
    /// No `scheme://`.
    #[error("not a notification URL (no scheme://)")]
    NoScheme,
    /// A scheme with characters a scheme cannot have.
    #[error("not a notification URL (bad scheme)")]
    BadScheme,
    /// A percent-encoded part that is not UTF-8.
    #[error("the URL is not UTF-8 once percent-decoded")]
    NotUtf8,
    /// A service coffer does not send to.
    #[error("unsupported notification URL scheme {0:?} (supported: {list})", list = SUPPORTED.join(", "))]
    Unsupported(String),
    /// The service's part of the URL is wrong.
    #[error("{service}: {problem}")]
    Service {
        /// `smtp`, `generic`, `telegram`, `slack`, `discord`.
        service: &'static str,
        /// What is wrong.
        problem: UrlSettingError,
    },
}

/// What is wrong with the settings in a service's URL.
#[derive(Debug, thiserror::Error)]
pub enum UrlSettingError {
    /// No host.
    #[error("host missing")]
    HostMissing,
    /// `[v6` without `]`.
    #[error("unclosed [ in host")]
    UnclosedBracket,
    /// A port that is not one.
    #[error("{0:?} is not a port number")]
    Port(String),
    /// A yes/no setting with another value.
    #[error("{key}: expected yes or no, not {value:?}")]
    Flag {
        /// The query key.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// `smtp://` without `from=`.
    #[error("fromAddress missing (?from=a@b)")]
    FromMissing,
    /// `smtp://` without `to=`.
    #[error("toAddresses missing (?to=a@b[,c@d])")]
    ToMissing,
    /// `smtp://` with an unknown `encryption=`.
    #[error("encryption {0:?}: expected None, ExplicitTLS, ImplicitTLS or Auto")]
    Encryption(String),
    /// `smtp://` settings the mailer refuses.
    #[error(transparent)]
    Mail(#[from] MailSettingsError),
    /// `generic://` with a bad `@header` name.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// `generic://` with a bad `@header` value (not shown: it may be a credential).
    #[error("invalid value for header {0}")]
    HeaderValue(String),
    /// `generic://` with a `template=` other than json.
    #[error("template {0:?} is not supported (only json)")]
    Template(String),
    /// `generic://` with a bad `method=`.
    #[error(transparent)]
    Method(#[from] InvalidMethod),
    /// `generic://` with a bad `contenttype=`.
    #[error("invalid contenttype")]
    ContentType,
    /// `generic://` that makes no URL.
    #[error("invalid URL: {0}")]
    Url(String),
    /// `telegram://` with a malformed bot token.
    #[error("the bot token must look like 123456:ABC-def (telegram://TOKEN@telegram)")]
    TelegramToken,
    /// `telegram://` without chats.
    #[error("no chats (add ?chats=ID[,ID...])")]
    NoChats,
    /// `slack://` in none of its forms.
    #[error("{SLACK_FORMS}")]
    SlackForm,
    /// `slack://` with an API token and no channel.
    #[error("an API token needs a channel (slack://xoxb:TOKEN@CHANNEL)")]
    SlackChannel,
    /// `discord://.../raw`.
    #[error("the raw JSON mode (/raw) is not supported")]
    DiscordRaw,
    /// `discord://` with a path.
    #[error("expected discord://TOKEN@WEBHOOKID")]
    DiscordForm,
    /// `discord://` without a token.
    #[error("token missing")]
    TokenMissing,
    /// `discord://` without a usable webhook id.
    #[error("webhook id missing or invalid (discord://TOKEN@WEBHOOKID)")]
    WebhookId,
}

/// One entry of a list of notification URLs does not parse.
#[derive(Debug, thiserror::Error)]
#[error("URL {position} ({redacted}): {source}")]
pub struct NotifyListError {
    /// 1 for the first URL.
    pub position: usize,
    /// The URL, [`redact`]ed.
    pub redacted: String,
    /// Why.
    pub source: NotifyUrlError,
}

/// An HTTP method that does not parse (checked by [`parse`], so a bug when met later).
#[derive(Debug, thiserror::Error)]
#[error("invalid method {0:?}")]
pub struct InvalidMethod(pub String);

/// Why one attempt to notify failed. No variant holds a token, password or header value.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// E-mail: the settings, the server or the network.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// The service or the network refused one or more requests (the caller retries).
    #[error("{target}: {failures}")]
    Http {
        /// The target, as [`Target`]'s `Display` names it.
        target: String,
        /// Each failed request (`chat: HTTP 400 ...`), `; `-separated, secrets scrubbed.
        failures: String,
    },
    /// The notifier has no HTTP client: a bug.
    #[error("{target}: no HTTP client")]
    NoHttpClient {
        /// The target.
        target: String,
    },
    /// A request could not be built: a bug.
    #[error(transparent)]
    Request(#[from] InvalidMethod),
}

/// A Slack credential.
#[derive(Clone, PartialEq, Eq)]
pub enum SlackToken {
    /// An incoming webhook: the three parts of `hooks.slack.com/services/A/B/C`.
    Webhook([String; 3]),
    /// A bot or user API token (`xoxb-…`, `xoxp-…`), sent as a bearer token.
    Api(String),
}

/// Where one notification URL sends to. The HTTP variants carry `base_url`, the scheme and
/// host of the service's API as [`parse`] sets it (tests point it at loopback, see
/// [`Target::with_base_url`]).
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// `smtp://[user:pass@]host[:port]/?from=a@b&to=c@d[,e@f]`.
    Smtp(SmtpConfig),
    /// `generic://host[:port]/path?…` (https unless `disabletls=yes`) or
    /// `generic+https://host/path?…`: the message (or, with `template=json`, a JSON object of
    /// title, message and the `$` fields) as the body of one request to `url`.
    Generic {
        /// The URL requested, forwarded query included, without credentials.
        url: String,
        /// `POST` unless `method=` says otherwise.
        method: String,
        /// `Content-Type` (and `Accept`) of the request.
        content_type: String,
        /// The `@name=value` headers (name normalised as shoutrrr does).
        headers: Vec<(String, String)>,
        /// Basic auth from the URL's `user:pass@`.
        basic_auth: Option<(String, String)>,
        /// `template=json`: a JSON object; otherwise the message alone is the body.
        json: bool,
        /// The JSON key of the title.
        title_key: String,
        /// The JSON key of the message.
        message_key: String,
        /// The `$name=value` fields added to the JSON object.
        extra: Vec<(String, String)>,
    },
    /// `telegram://TOKEN@telegram?chats=ID1[,ID2:THREAD,@channel]`.
    Telegram {
        /// The bot token, `123456:ABC…`.
        token: String,
        /// Chat ids or `@channel` names, each optionally `:thread_id`.
        chats: Vec<String>,
        /// `notification=no` sends silently.
        notification: bool,
        /// `preview=no` turns link previews off.
        preview: bool,
        /// `https://api.telegram.org`.
        base_url: String,
    },
    /// `slack://[botname@]A/B/C`, `slack://hook:A-B-C@webhook` or `slack://xoxb:TOKEN@CHANNEL`.
    Slack {
        /// Webhook parts or API token.
        token: SlackToken,
        /// The channel (API tokens only).
        channel: Option<String>,
        /// `botname=` (or the user part of the old webhook form).
        bot_name: Option<String>,
        /// `icon=`: an emoji name or an image URL.
        icon: Option<String>,
        /// `https://hooks.slack.com` for webhooks, `https://slack.com` for API tokens.
        base_url: String,
    },
    /// `discord://TOKEN@WEBHOOKID`.
    Discord {
        /// The webhook token.
        token: String,
        /// The webhook id.
        webhook_id: String,
        /// `username=`.
        username: Option<String>,
        /// `avatar=` (an image URL).
        avatar: Option<String>,
        /// `https://discord.com`.
        base_url: String,
    },
}

/// How a response says the notification was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Any 2xx.
    Success,
    /// 2xx with a JSON `description` on failure.
    Telegram,
    /// 2xx and JSON `{"ok": true}`.
    SlackApi,
}

/// One HTTP request of a target (its URL may hold a token: no `Debug`).
pub(crate) struct Request {
    pub(crate) method: reqwest::Method,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) basic_auth: Option<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) expect: Expect,
    /// What the error names (a chat id, never a token).
    pub(crate) what: String,
}

/// A URL cut into its parts; user, password and query are percent-decoded.
struct Parts {
    scheme: String,
    has_userinfo: bool,
    user: Option<String>,
    password: Option<String>,
    /// `host[:port]` as written.
    hostport: String,
    /// As written: empty or starting with `/`.
    path: String,
    query: Vec<(String, String)>,
}

fn from_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding (`+` is a space in a query); a `%` not followed by two hex digits stays.
fn decode(s: &str, plus_is_space: bool) -> Result<String, NotifyUrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let hex = match (b.get(i + 1), b.get(i + 2)) {
            (Some(&h), Some(&l)) if c == b'%' => from_hex(h).zip(from_hex(l)),
            _ => None,
        };
        if let Some((h, l)) = hex {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(if c == b'+' && plus_is_space { b' ' } else { c });
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| NotifyUrlError::NotUtf8)
}

fn split(url: &str) -> Result<Parts, NotifyUrlError> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").ok_or(NotifyUrlError::NoScheme)?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
    {
        return Err(NotifyUrlError::BadScheme);
    }
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (before_query, raw_query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => match ui.split_once(':') {
            Some((u, p)) => (Some(decode(u, false)?), Some(decode(p, false)?)),
            None => (Some(decode(ui, false)?), None),
        },
    };
    let mut query = Vec::new();
    for pair in raw_query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query.push((decode(k, true)?, decode(v, true)?));
    }
    Ok(Parts {
        scheme: scheme.to_ascii_lowercase(),
        has_userinfo: userinfo.is_some(),
        user,
        password,
        hostport: hostport.to_string(),
        path: path.to_string(),
        query,
    })
}

/// The first value of any of `keys` (case-insensitive).
fn get<'a>(query: &'a [(String, String)], keys: &[&str]) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| keys.iter().any(|want| k.eq_ignore_ascii_case(want)))
        .map(|(_, v)| v.as_str())
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, UrlSettingError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" | "y" => Ok(true),
        "no" | "false" | "0" | "off" | "n" => Ok(false),
        _ => Err(UrlSettingError::Flag {
            key,
            value: v.to_string(),
        }),
    }
}

fn flag(
    query: &[(String, String)],
    keys: &[&'static str],
    default: bool,
) -> Result<bool, UrlSettingError> {
    match get(query, keys) {
        Some(v) => parse_bool(keys[0], v),
        None => Ok(default),
    }
}

/// A comma-separated list, trimmed, without empty items.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(str::trim).filter(|s| !s.is_empty()).map(String::from)
}

/// `host` and `port` of `host[:port]` (`[v6]:port` too).
fn host_port(hostport: &str, default: u16) -> Result<(String, u16), UrlSettingError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or(UrlSettingError::UnclosedBracket)?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => default,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(UrlSettingError::Port(p.to_string())),
        },
    };
    Ok((host.to_string(), port))
}

/// `acceptLanguage` → `Accept-Language`, as shoutrrr's generic service does.
fn header_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() * 2);
    let mut prev: Option<char> = None;
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            if prev.is_some_and(|p| p != '-') {
                out.push('-');
            }
            out.push(c);
        } else if prev.is_none() || prev == Some('-') {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

/// Parse one notification URL.
pub fn parse(url: &str) -> Result<Target, NotifyUrlError> {
    let p = split(url)?;
    let (service, parsed) = match p.scheme.as_str() {
        "smtp" => ("smtp", parse_smtp(p)),
        "generic" => ("generic", parse_generic(p, None)),
        "generic+http" => ("generic", parse_generic(p, Some("http"))),
        "generic+https" => ("generic", parse_generic(p, Some("https"))),
        "telegram" => ("telegram", parse_telegram(p)),
        "slack" => ("slack", parse_slack(p)),
        "discord" => ("discord", parse_discord(p)),
        other => return Err(NotifyUrlError::Unsupported(other.to_string())),
    };
    parsed.map_err(|problem| NotifyUrlError::Service { service, problem })
}

/// Parse `NOTIFICATION_URLS`: URLs separated by commas. A piece without `://` belongs to the
/// URL before it (`?to=a@b,c@d`, `?chats=1,2`). An error names the entry by its position and
/// its [`redact`]ed form.
pub fn parse_list(value: &str) -> Result<Vec<Target>, NotifyListError> {
    let mut urls: Vec<String> = Vec::new();
    for piece in value.split(',') {
        match urls.last_mut() {
            _ if piece.trim().is_empty() => {}
            Some(last) if !piece.contains("://") => {
                last.push(',');
                last.push_str(piece);
            }
            _ => urls.push(piece.to_string()),
        }
    }
    urls.iter()
        .enumerate()
        .map(|(i, u)| {
            parse(u).map_err(|source| NotifyListError {
                position: i + 1,
                redacted: redact(u),
                source,
            })
        })
        .collect()
}

fn parse_smtp(p: Parts) -> Result<Target, UrlSettingError> {
    let (host, port) = host_port(&p.hostport, SMTP_URL_DEFAULT_PORT)?;
    if host.is_empty() {
        return Err(UrlSettingError::HostMissing);
    }
    let q = &p.query;
    // shoutrrr turns the spaces of a decoded `+` back into `+` (address tags).
    let addr = |s: &str| s.trim().replace(' ', "+");
    let from = get(q, &["fromaddress", "from"])
        .map(addr)
        .filter(|s| !s.is_empty())
        .ok_or(UrlSettingError::FromMissing)?;
    let from = match non_empty(get(q, &["fromname"])) {
        Some(name) => format!("\"{}\" <{from}>", name.replace(['"', '\\'], "")),
        None => from,
    };
    let to: Vec<String> = list(get(q, &["toaddresses", "to"]).unwrap_or(""))
        .iter()
        .map(|s| addr(s))
        .collect();
    if to.is_empty() {
        return Err(UrlSettingError::ToMissing);
    }
    let starttls = flag(q, &["usestarttls", "starttls"], true)?;
    let encryption = get(q, &["encryption"]).unwrap_or("auto");
    let tls = match encryption.trim().to_ascii_lowercase().as_str() {
        "auto" if !starttls && port != mail::IMPLICIT_TLS_PORT => TlsMode::None,
        "auto" => TlsMode::Auto,
        "implicittls" => TlsMode::Implicit,
        "explicittls" => TlsMode::StartTlsRequired,
        "none" => TlsMode::None,
        _ => return Err(UrlSettingError::Encryption(encryption.to_string())),
    };
    let cfg = SmtpConfig {
        host,
        port,
        username: p.user.filter(|u| !u.is_empty()),
        password: p.password.filter(|pw| !pw.is_empty()),
        from,
        to,
        tls,
    };
    cfg.validate()?;
    Ok(Target::Smtp(cfg))
}

/// The query of a `generic://` URL, sorted into the service's settings and what is passed on.
struct GenericQuery {
    content_type: String,
    disable_tls: bool,
    template: String,
    title_key: String,
    message_key: String,
    method: String,
    headers: Vec<(String, String)>,
    extra: Vec<(String, String)>,
    forward: Vec<(String, String)>,
}

impl GenericQuery {
    fn new(custom: Option<&str>) -> Self {
        GenericQuery {
            content_type: "application/json".to_string(),
            disable_tls: custom == Some("http"),
            template: String::new(),
            title_key: "title".to_string(),
            message_key: "message".to_string(),
            method: "POST".to_string(),
            headers: Vec::new(),
            extra: Vec::new(),
            forward: Vec::new(),
        }
    }

    /// Sort one `key=value`: `@name` is a header, `$name` a JSON field, the service's own keys
    /// (not with `generic+http(s)://`) set it up, anything else goes on to the target.
    fn take(&mut self, k: String, v: String, custom: Option<&str>) -> Result<(), UrlSettingError> {
        if let Some(h) = k.strip_prefix('@') {
            return self.header(h, v);
        }
        if let Some(x) = k.strip_prefix('$') {
            self.extra.push((x.to_string(), v));
        } else if custom.is_none() {
            self.service_key(k, v)?;
        } else {
            self.forward.push((k, v));
        }
        Ok(())
    }

    fn header(&mut self, key: &str, v: String) -> Result<(), UrlSettingError> {
        let name = header_name(key);
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| UrlSettingError::HeaderName(name.clone()))?;
        reqwest::header::HeaderValue::from_str(&v)
            .map_err(|_| UrlSettingError::HeaderValue(name.clone()))?;
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.headers.push((name, v));
        Ok(())
    }

    /// The service's own keys; `__key` passes `key` on to the target.
    fn service_key(&mut self, k: String, v: String) -> Result<(), UrlSettingError> {
        let lower = k.to_ascii_lowercase();
        match lower.as_str() {
            "contenttype" => self.content_type = v,
            "disabletls" => self.disable_tls = parse_bool("disabletls", &v)?,
            "template" => self.template = v,
            "title" => {}
            "titlekey" => self.title_key = v,
            "messagekey" => self.message_key = v,
            "method" => self.method = v.trim().to_ascii_uppercase(),
            _ => match lower.strip_prefix("__") {
                Some(esc) if GENERIC_KEYS.contains(&esc) => {
                    self.forward.push((k[2..].to_string(), v))
                }
                _ => self.forward.push((k, v)),
            },
        }
        Ok(())
    }

    /// `template=json` or none; a method and content type that make a request.
    fn check(&self) -> Result<bool, UrlSettingError> {
        let json = match self.template.trim().to_ascii_lowercase().as_str() {
            "" => false,
            "json" => true,
            _ => return Err(UrlSettingError::Template(self.template.clone())),
        };
        parse_method(&self.method)?;
        reqwest::header::HeaderValue::from_str(&self.content_type)
            .map_err(|_| UrlSettingError::ContentType)?;
        Ok(json)
    }
}

fn parse_method(method: &str) -> Result<reqwest::Method, InvalidMethod> {
    reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| InvalidMethod(method.to_string()))
}

fn parse_generic(p: Parts, custom: Option<&str>) -> Result<Target, UrlSettingError> {
    let mut q = GenericQuery::new(custom);
    for (k, v) in p.query {
        q.take(k, v, custom)?;
    }
    let json = q.check()?;
    if p.hostport.is_empty() {
        return Err(UrlSettingError::HostMissing);
    }
    let scheme = if q.disable_tls { "http" } else { "https" };
    let mut url = reqwest::Url::parse(&format!("{scheme}://{}{}", p.hostport, p.path))
        .map_err(|e| UrlSettingError::Url(e.to_string()))?;
    if !q.forward.is_empty() {
        url.query_pairs_mut().extend_pairs(q.forward);
    }
    let basic_auth = p
        .user
        .map(|u| (u, p.password.unwrap_or_default()))
        .filter(|(u, pw)| !u.is_empty() || !pw.is_empty());
    Ok(Target::Generic {
        url: url.to_string(),
        method: q.method,
        content_type: q.content_type,
        headers: q.headers,
        basic_auth,
        json,
        title_key: q.title_key,
        message_key: q.message_key,
        extra: q.extra,
    })
}

fn parse_telegram(p: Parts) -> Result<Target, UrlSettingError> {
    let token = format!(
        "{}:{}",
        p.user.as_deref().unwrap_or(""),
        p.password.as_deref().unwrap_or("")
    );
    let valid = token.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !secret.is_empty()
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !valid {
        return Err(UrlSettingError::TelegramToken);
    }
    let chats = list(get(&p.query, &["chats", "channels"]).unwrap_or(""));
    if chats.is_empty() {
        return Err(UrlSettingError::NoChats);
    }
    Ok(Target::Telegram {
        token,
        chats,
        notification: flag(&p.query, &["notification"], true)?,
        preview: flag(&p.query, &["preview"], true)?,
        base_url: TELEGRAM_API.to_string(),
    })
}

const SLACK_FORMS: &str =
    "expected slack://hook:A-B-C@webhook, slack://[botname@]A/B/C or slack://xoxb:TOKEN@CHANNEL";

/// A Slack token as shoutrrr reads it: an optional `hook`/`xox?` type and `:` or `-`, then
/// three alphanumeric parts separated by `-`, `/` or `,`.
fn slack_token(s: &str) -> Result<SlackToken, UrlSettingError> {
    let typed = |prefix_len: usize| {
        let sep = s.as_bytes().get(prefix_len).copied();
        match (s.get(..prefix_len), sep, s.get(prefix_len + 1..)) {
            (Some(kind), Some(b':' | b'-'), Some(rest)) => Some((kind, rest)),
            _ => None,
        }
    };
    let (kind, rest) = match typed(4) {
        Some((kind, rest)) if kind == "hook" || kind.starts_with("xox") => (kind, rest),
        _ => ("hook", s.strip_prefix(':').unwrap_or(s)),
    };
    let parts: Vec<&str> = rest.split(['-', '/', ',']).collect();
    let [a, b, c] = parts.as_slice() else {
        return Err(UrlSettingError::SlackForm);
    };
    if [a, b, c]
        .iter()
        .any(|p| p.is_empty() || !p.bytes().all(|x| x.is_ascii_alphanumeric()))
    {
        return Err(UrlSettingError::SlackForm);
    }
    Ok(if kind == "hook" {
        SlackToken::Webhook([a.to_string(), b.to_string(), c.to_string()])
    } else {
        SlackToken::Api(format!("{kind}-{a}-{b}-{c}"))
    })
}

fn parse_slack(p: Parts) -> Result<Target, UrlSettingError> {
    let (token, channel, mut bot_name) = if p.path.len() > 1 {
        // The old webhook form: the token is host and path, the user part a bot name.
        let token = slack_token(&format!("{}{}", p.hostport, p.path))?;
        (token, None, p.user.filter(|u| !u.is_empty()))
    } else {
        let user = p.user.as_deref().unwrap_or("");
        let raw = match p.password.as_deref() {
            Some(pw) => format!("{user}:{pw}"),
            None => user.to_string(),
        };
        let token = slack_token(&raw)?;
        let channel = Some(p.hostport.clone()).filter(|h| !h.is_empty() && h != "webhook");
        (token, channel, None)
    };
    if let Some(b) = non_empty(get(&p.query, &["botname", "username"])) {
        bot_name = Some(b);
    }
    let (channel, base_url) = match &token {
        SlackToken::Webhook(_) => (None, SLACK_HOOKS),
        SlackToken::Api(_) if channel.is_none() => {
            return Err(UrlSettingError::SlackChannel);
        }
        SlackToken::Api(_) => (channel, SLACK_API),
    };
    Ok(Target::Slack {
        token,
        channel,
        bot_name,
        icon: non_empty(get(&p.query, &["icon", "icon_emoji", "icon_url"])),
        base_url: base_url.to_string(),
    })
}

fn parse_discord(p: Parts) -> Result<Target, UrlSettingError> {
    match p.path.as_str() {
        "" | "/" => {}
        "/raw" => return Err(UrlSettingError::DiscordRaw),
        _ => return Err(UrlSettingError::DiscordForm),
    }
    let token = p
        .user
        .filter(|t| !t.is_empty())
        .ok_or(UrlSettingError::TokenMissing)?;
    if p.hostport.is_empty() || !p.hostport.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(UrlSettingError::WebhookId);
    }
    Ok(Target::Discord {
        token,
        webhook_id: p.hostport,
        username: non_empty(get(&p.query, &["username"])),
        avatar: non_empty(get(&p.query, &["avatar", "avatarurl"])),
        base_url: DISCORD_API.to_string(),
    })
}

/// `url` fit for a log: credentials, tokens, path and query values become `***` (the query
/// keys stay).
pub fn redact(url: &str) -> String {
    let Ok(p) = split(url) else {
        return "<invalid URL>".into();
    };
    let mut out = format!("{}://", p.scheme);
    if p.has_userinfo {
        out.push_str("***@");
    }
    let long_path = p.path.len() > 1;
    // The old Slack webhook form has its token in host and path.
    if p.scheme == "slack" && long_path {
        out.push_str("***");
    } else {
        out.push_str(&p.hostport);
    }
    out.push_str(if long_path { "/***" } else { &p.path });
    if !p.query.is_empty() {
        let keys: Vec<String> = p.query.iter().map(|(k, _)| format!("{k}=***")).collect();
        out.push('?');
        out.push_str(&keys.join("&"));
    }
    out
}

/// Scheme, host and port of `url`, and `/…` when it has a path or query.
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
            if let Some(port) = u.port() {
                out.push_str(&format!(":{port}"));
            }
            if u.path().len() > 1 || u.query().is_some() {
                out.push_str("/…");
            }
            out
        }
        Err(_) => "<invalid URL>".into(),
    }
}

/// `s` cut to at most `max` UTF-16 units (what Telegram and Discord count), `…` marking a cut.
fn truncate(s: &str, max: usize) -> String {
    let total: usize = s.chars().map(char::len_utf16).sum();
    if total <= max {
        return s.to_string();
    }
    let mut used = 0;
    let mut out = String::new();
    for c in s.chars() {
        if used + c.len_utf16() + 1 > max {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Title and message as one text.
fn joined(title: &str, message: &str) -> String {
    if title.is_empty() {
        message.to_string()
    } else {
        format!("{title}\n{message}")
    }
}

fn json_request(url: String, body: serde_json::Value, expect: Expect, what: String) -> Request {
    Request {
        method: reqwest::Method::POST,
        url,
        headers: vec![("Content-Type".into(), "application/json".into())],
        basic_auth: None,
        body: body.to_string().into_bytes(),
        expect,
        what,
    }
}

/// `Content-Type` and `Accept` from `contenttype=`, unless an `@header` sets them, then the
/// `@header`s.
fn generic_headers(content_type: &str, headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = vec![
        ("Content-Type".to_string(), content_type.to_string()),
        ("Accept".to_string(), content_type.to_string()),
    ];
    all.retain(|(n, _)| !headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n)));
    all.extend(headers.iter().cloned());
    all
}

/// Slack's JSON: the text, and the bot's name and icon (an image URL or an emoji name).
fn slack_body(text: &str, bot_name: &Option<String>, icon: &Option<String>) -> serde_json::Value {
    let mut body = serde_json::json!({ "text": text });
    if let Some(b) = bot_name {
        body["username"] = b.as_str().into();
    }
    if let Some(i) = icon {
        let key = if i.starts_with("http://") || i.starts_with("https://") {
            "icon_url"
        } else {
            "icon_emoji"
        };
        body[key] = i.as_str().into();
    }
    body
}

/// Discord's JSON: the text cut to its limit, and the webhook's name and avatar.
fn discord_body(
    text: &str,
    username: &Option<String>,
    avatar: &Option<String>,
) -> serde_json::Value {
    let mut body = serde_json::json!({ "content": truncate(text, DISCORD_MAX) });
    if let Some(u) = username {
        body["username"] = u.as_str().into();
    }
    if let Some(a) = avatar {
        body["avatar_url"] = a.as_str().into();
    }
    body
}

impl Target {
    /// The same target with its API's scheme and host (`http://127.0.0.1:PORT`) in place of
    /// the real one; for tests. Targets without a fixed API (e-mail, generic) are unchanged.
    pub fn with_base_url(mut self, base: &str) -> Self {
        match &mut self {
            Target::Telegram { base_url, .. }
            | Target::Slack { base_url, .. }
            | Target::Discord { base_url, .. } => {
                *base_url = base.trim_end_matches('/').to_string();
            }
            Target::Smtp(_) | Target::Generic { .. } => {}
        }
        self
    }

    /// What must never reach a log: tokens, passwords, header values.
    fn secrets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = match self {
            Target::Smtp(c) => c.password.as_deref().into_iter().collect(),
            Target::Generic {
                headers,
                basic_auth,
                ..
            } => headers
                .iter()
                .map(|(_, v)| v.as_str())
                .chain(basic_auth.as_ref().map(|(_, p)| p.as_str()))
                .collect(),
            Target::Telegram { token, .. } => {
                let secret = token.split_once(':').map_or("", |(_, s)| s);
                vec![token.as_str(), secret]
            }
            Target::Slack { token, .. } => match token {
                SlackToken::Webhook([_, _, c]) => vec![c.as_str()],
                SlackToken::Api(t) => vec![t.as_str()],
            },
            Target::Discord { token, .. } => vec![token.as_str()],
        };
        out.retain(|s| s.len() >= 4);
        out
    }

    /// `msg` without any of this target's secrets.
    fn scrub(&self, msg: String) -> String {
        self.secrets().iter().fold(msg, |m, s| m.replace(s, "***"))
    }

    /// The HTTP requests that deliver `title` and `message` (none for e-mail).
    pub(crate) fn requests(
        &self,
        title: &str,
        message: &str,
    ) -> Result<Vec<Request>, InvalidMethod> {
        Ok(match self {
            Target::Smtp(_) => Vec::new(),
            Target::Generic {
                url,
                method,
                content_type,
                headers,
                basic_auth,
                json,
                title_key,
                message_key,
                extra,
            } => {
                let body = if *json {
                    generic_json(title_key, message_key, extra, title, message)
                } else {
                    message.as_bytes().to_vec()
                };
                vec![Request {
                    method: parse_method(method)?,
                    url: url.clone(),
                    headers: generic_headers(content_type, headers),
                    basic_auth: basic_auth.clone(),
                    body,
                    expect: Expect::Success,
                    what: String::new(),
                }]
            }
            Target::Telegram {
                token,
                chats,
                notification,
                preview,
                base_url,
            } => {
                let text = telegram_text(title, message);
                let flags = (*notification, *preview);
                chats
                    .iter()
                    .map(|chat| telegram_request(base_url, token, chat, &text, flags))
                    .collect()
            }
            Target::Slack {
                token,
                channel,
                bot_name,
                icon,
                base_url,
            } => {
                let body = slack_body(&joined(title, message), bot_name, icon);
                vec![slack_request(base_url, token, channel.as_deref(), body)]
            }
            Target::Discord {
                token,
                webhook_id,
                username,
                avatar,
                base_url,
            } => {
                let url = format!("{base_url}/api/webhooks/{webhook_id}/{token}");
                let body = discord_body(&joined(title, message), username, avatar);
                vec![json_request(url, body, Expect::Success, String::new())]
            }
        })
    }

    /// Deliver `title` and `message`, waiting at most `timeout` per request: e-mail blocks on
    /// SMTP; the rest needs `http`, the notifier's client and the runtime it was built in (as
    /// in [`super::notify`]). One attempt (the caller retries). Every chat of a Telegram
    /// target is tried; the error lists those that failed and holds no secret.
    pub fn send(
        &self,
        title: &str,
        message: &str,
        http: Option<(&reqwest::Client, &crate::runtime::IoHandle)>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        if let Target::Smtp(cfg) = self {
            // The mailer keeps the password out of its errors.
            return Ok(mail::send(cfg, title, message, timeout)?);
        }
        let (client, rt) = http.ok_or_else(|| SendError::NoHttpClient {
            target: self.to_string(),
        })?;
        let mut errors = Vec::new();
        for req in self.requests(title, message)? {
            if let Err(e) = execute(&req, client, rt, timeout) {
                errors.push(if req.what.is_empty() {
                    e
                } else {
                    format!("{}: {e}", req.what)
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SendError::Http {
                target: self.to_string(),
                failures: self.scrub(errors.join("; ")),
            })
        }
    }
}

/// A reqwest error without its URL (which may hold a token), with its causes.
fn http_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(&e);
    for _ in 0..8 {
        let Some(c) = src else { break };
        msg.push_str(&format!(": {c}"));
        src = c.source();
    }
    msg
}

/// At most 200 characters of a response body, for an error.
fn snippet(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        String::new()
    } else {
        format!(": {}", truncate(body, 200))
    }
}

fn execute(
    req: &Request,
    client: &reqwest::Client,
    rt: &crate::runtime::IoHandle,
    timeout: Duration,
) -> Result<(), String> {
    // reqwest sets up its timers when a request is made, not when it is polled.
    let _in_runtime = rt.enter();
    let mut builder = client
        .request(req.method.clone(), req.url.as_str())
        .timeout(timeout);
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some((user, password)) = &req.basic_auth {
        builder = builder.basic_auth(user, Some(password));
    }
    let builder = builder.body(req.body.clone());
    let (status, body) = rt
        .block_on(async {
            let mut resp = builder.send().await?;
            let status = resp.status();
            let mut body = Vec::new();
            while body.len() < MAX_RESPONSE {
                match resp.chunk().await? {
                    Some(chunk) => body.extend_from_slice(&chunk),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>((status, body))
        })
        .map_err(http_error)?;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_RESPONSE)]);
    let json = || serde_json::from_str::<serde_json::Value>(&text).ok();
    match req.expect {
        _ if !status.is_success() => {
            let detail = match req.expect {
                Expect::Telegram => json()
                    .and_then(|j| j["description"].as_str().map(|d| format!(": {d}")))
                    .unwrap_or_else(|| snippet(&text)),
                _ => snippet(&text),
            };
            Err(format!("HTTP {status}{detail}"))
        }
        Expect::SlackApi => match json() {
            Some(j) if j["ok"] == serde_json::Value::Bool(true) => Ok(()),
            Some(j) => Err(format!(
                "Slack API: {}",
                j["error"].as_str().unwrap_or("not ok")
            )),
            None => Err(format!("Slack API: not JSON{}", snippet(&text))),
        },
        Expect::Success | Expect::Telegram => Ok(()),
    }
}

impl fmt::Display for Target {
    /// A description without secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Smtp(c) => write!(f, "smtp {}:{} to {}", c.host, c.port, c.to.join(",")),
            Target::Generic { url, .. } => write!(f, "generic {}", origin(url)),
            Target::Telegram { chats, .. } => match chats.len() {
                1 => write!(f, "telegram (1 chat)"),
                n => write!(f, "telegram ({n} chats)"),
            },
            Target::Slack { channel, .. } => match channel {
                Some(c) => write!(f, "slack channel {c}"),
                None => write!(f, "slack webhook"),
            },
            Target::Discord { webhook_id, .. } => write!(f, "discord webhook {webhook_id}"),
        }
    }
}

impl fmt::Debug for SlackToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlackToken::Webhook([a, b, _]) => write!(f, "Webhook({a}/{b}/***)"),
            SlackToken::Api(t) => write!(f, "Api({}-***)", t.get(..4).unwrap_or("")),
        }
    }
}

impl fmt::Debug for Target {
    /// Like a derived `Debug`, secrets replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Smtp(c) => f.debug_tuple("Smtp").field(c).finish(),
            Target::Generic {
                url,
                method,
                content_type,
                headers,
                basic_auth,
                json,
                title_key,
                message_key,
                extra,
            } => {
                let header_names: Vec<String> =
                    headers.iter().map(|(n, _)| format!("{n}: ***")).collect();
                f.debug_struct("Generic")
                    .field("url", &origin(url))
                    .field("method", method)
                    .field("content_type", content_type)
                    .field("headers", &header_names)
                    .field("basic_auth", &basic_auth.as_ref().map(|(u, _)| (u, "***")))
                    .field("json", json)
                    .field("title_key", title_key)
                    .field("message_key", message_key)
                    .field("extra", extra)
                    .finish()
            }
            Target::Telegram {
                token,
                chats,
                notification,
                preview,
                base_url,
            } => f
                .debug_struct("Telegram")
                .field(
                    "token",
                    &format!("{}:***", token.split(':').next().unwrap_or("")),
                )
                .field("chats", chats)
                .field("notification", notification)
                .field("preview", preview)
                .field("base_url", base_url)
                .finish(),
            Target::Slack {
                token,
                channel,
                bot_name,
                icon,
                base_url,
            } => f
                .debug_struct("Slack")
                .field("token", token)
                .field("channel", channel)
                .field("bot_name", bot_name)
                .field("icon", icon)
                .field("base_url", base_url)
                .finish(),
            Target::Discord {
                token: _,
                webhook_id,
                username,
                avatar,
                base_url,
            } => f
                .debug_struct("Discord")
                .field("token", &"***")
                .field("webhook_id", webhook_id)
                .field("username", username)
                .field("avatar", avatar)
                .field("base_url", base_url)
                .finish(),
        }
    }
}

/// The JSON body of a generic webhook: title and message under their keys, plus the extra
/// fields.
fn generic_json(
    title_key: &str,
    message_key: &str,
    extra: &[(String, String)],
    title: &str,
    message: &str,
) -> Vec<u8> {
    let mut obj = serde_json::Map::new();
    obj.insert(title_key.to_string(), title.into());
    obj.insert(message_key.to_string(), message.into());
    for (k, v) in extra {
        obj.insert(k.clone(), v.as_str().into());
    }
    serde_json::Value::Object(obj).to_string().into_bytes()
}

/// A Telegram message: the title in bold, the message cut to what fits, both HTML-escaped.
fn telegram_text(title: &str, message: &str) -> String {
    let title_units: usize = title.chars().map(char::len_utf16).sum();
    let room = TELEGRAM_MAX.saturating_sub(title_units + 1);
    let message = html_escape(&truncate(message, room));
    if title.is_empty() {
        message
    } else {
        format!("<b>{}</b>\n{message}", html_escape(title))
    }
}

/// One Telegram `sendMessage` to `chat` (`id` or `id:thread`); `flags` are (notification,
/// preview).
fn telegram_request(
    base_url: &str,
    token: &str,
    chat: &str,
    text: &str,
    (notification, preview): (bool, bool),
) -> Request {
    let mut body = serde_json::json!({
        "text": text,
        "parse_mode": "HTML",
        "disable_notification": !notification,
        "disable_web_page_preview": !preview,
    });
    let (id, thread) = match chat.split_once(':') {
        Some((id, t)) => (id, t.parse::<i64>().ok()),
        None => (chat, None),
    };
    body["chat_id"] = id.into();
    if let Some(t) = thread {
        body["message_thread_id"] = t.into();
    }
    json_request(
        format!("{base_url}/bot{token}/sendMessage"),
        body,
        Expect::Telegram,
        format!("chat {chat}"),
    )
}

/// The Slack request: to the webhook, or to `chat.postMessage` with the API token.
fn slack_request(
    base_url: &str,
    token: &SlackToken,
    channel: Option<&str>,
    mut body: serde_json::Value,
) -> Request {
    match token {
        SlackToken::Webhook([a, b, c]) => json_request(
            format!("{base_url}/services/{a}/{b}/{c}"),
            body,
            Expect::Success,
            String::new(),
        ),
        SlackToken::Api(t) => {
            if let Some(ch) = channel {
                body["channel"] = ch.into();
            }
            let mut r = json_request(
                format!("{base_url}/api/chat.postMessage"),
                body,
                Expect::SlackApi,
                String::new(),
            );
            r.headers[0].1 = "application/json; charset=utf-8".into();
            r.headers
                .push(("Authorization".into(), format!("Bearer {t}")));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread::JoinHandle;
    use std::time::Instant;

    const TG_TOKEN: &str = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
    const DISCORD_TOKEN: &str = "W3dE2OZz4C13_4z_uHfDOoC7BqTW288s-z1ykqI0iJnY";
    const SLACK_C: &str = "Webc4MAvoacrpPakR8phF0zi";

    fn body_json(r: &Request) -> serde_json::Value {
        serde_json::from_slice(&r.body).expect("json body")
    }

    fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn one(t: &Target) -> Request {
        let mut v = t
            .requests("Backup failed", "disk <full> & more")
            .expect("requests");
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn smtp_urls() {
        let t = parse(
            "smtp://user:p%40ss@mail.example.org:587/?fromAddress=bk%2Btag@example.org\
             &toAddresses=a@example.org,b@example.org&useHTML=no",
        )
        .expect("smtp");
        let Target::Smtp(c) = &t else { panic!("{t:?}") };
        assert_eq!(c.host, "mail.example.org");
        assert_eq!(c.port, 587);
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(c.from, "bk+tag@example.org");
        assert_eq!(c.to, vec!["a@example.org", "b@example.org"]);
        assert_eq!(c.tls, TlsMode::Auto);
        assert!(t.requests("t", "m").expect("none").is_empty());

        let c = |url: &str| match parse(url) {
            Ok(Target::Smtp(c)) => c,
            other => panic!("{url}: {other:?}"),
        };
        let base = "smtp://relay/?from=a@example.org&to=b@example.org";
        assert_eq!(c(base).port, 25);
        assert_eq!(c(base).username, None);
        assert_eq!(
            c(&format!("{base}&encryption=ImplicitTLS")).tls,
            TlsMode::Implicit
        );
        assert_eq!(
            c(&format!("{base}&encryption=explicittls")).tls,
            TlsMode::StartTlsRequired
        );
        assert_eq!(c(&format!("{base}&encryption=None")).tls, TlsMode::None);
        assert_eq!(c(&format!("{base}&useStartTLS=no")).tls, TlsMode::None);
        assert_eq!(
            c("smtp://relay:465/?from=a@example.org&to=b@example.org&starttls=no").tls,
            TlsMode::Auto
        );
        assert_eq!(
            c(&format!("{base}&fromName=Coffer%20Backups")).from,
            "\"Coffer Backups\" <a@example.org>"
        );
        assert_eq!(c("smtp://[::1]:2525/?from=a@x.org&to=b@x.org").host, "::1");

        for (url, want) in [
            ("smtp://relay/?to=b@example.org", "fromAddress"),
            ("smtp://relay/?from=a@example.org", "toAddresses"),
            (
                "smtp://relay:x/?from=a@example.org&to=b@example.org",
                "port",
            ),
            (&format!("{base}&encryption=SSL"), "encryption"),
            ("smtp://relay/?from=nope&to=b@example.org", "sender"),
        ] {
            let e = parse(url).expect_err(url).to_string();
            assert!(e.starts_with("smtp: ") && e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn generic_urls() {
        let t = parse(
            "generic://hooks.example.org:8443/api/hook?template=json&titleKey=subject\
             &@acceptLanguage=tlh-Piqd&@authorization=Bearer%20s3cr3t-header&$env=prod\
             &foo=bar&__method=x",
        )
        .expect("generic");
        let r = one(&t);
        assert_eq!(r.method, reqwest::Method::POST);
        assert_eq!(
            r.url,
            "https://hooks.example.org:8443/api/hook?foo=bar&method=x"
        );
        assert_eq!(header(&r, "Accept-Language"), Some("tlh-Piqd"));
        assert_eq!(header(&r, "Authorization"), Some("Bearer s3cr3t-header"));
        assert_eq!(header(&r, "Content-Type"), Some("application/json"));
        assert_eq!(
            body_json(&r),
            json!({"subject": "Backup failed", "message": "disk <full> & more", "env": "prod"})
        );
        assert_eq!(r.expect, Expect::Success);

        // No template: the message is the body, as in shoutrrr.
        let t = parse("generic://ha.local:8123/api/webhook/abc?disabletls=yes").expect("plain");
        let r = one(&t);
        assert_eq!(r.url, "http://ha.local:8123/api/webhook/abc");
        assert_eq!(r.body, b"disk <full> & more");

        // The shortcut form forwards every query key, the service's own included.
        let t = parse("generic+https://example.com/api/v1/postStuff?template=json&a=1&@x-Key=v")
            .expect("custom");
        let r = one(&t);
        assert_eq!(
            r.url,
            "https://example.com/api/v1/postStuff?template=json&a=1"
        );
        assert_eq!(header(&r, "X-Key"), Some("v"));
        assert_eq!(r.body, b"disk <full> & more");
        let t = parse("generic+http://user:pw%21@10.0.0.2:8080/in").expect("http");
        let r = one(&t);
        assert_eq!(r.url, "http://10.0.0.2:8080/in");
        assert_eq!(r.basic_auth, Some(("user".into(), "pw!".into())));

        let t = parse("generic://h/p?method=put&contenttype=text/plain").expect("put");
        let r = one(&t);
        assert_eq!(r.method, reqwest::Method::PUT);
        assert_eq!(header(&r, "Content-Type"), Some("text/plain"));

        for (url, want) in [
            ("generic:///path", "host"),
            ("generic://h/?template=news", "template"),
            ("generic://h/?disabletls=maybe", "disabletls"),
            ("generic://h/?@bad%20name=v", "header name"),
        ] {
            let e = parse(url).expect_err(url).to_string();
            assert!(e.starts_with("generic: ") && e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn telegram_urls() {
        let t = parse(&format!(
            "telegram://{TG_TOKEN}@telegram?chats=-1001234,@mychannel,42:7&notification=no"
        ))
        .expect("telegram");
        let reqs = t
            .requests("Backup <failed>", "disk full & more")
            .expect("requests");
        assert_eq!(reqs.len(), 3);
        for r in &reqs {
            assert_eq!(
                r.url,
                format!("https://api.telegram.org/bot{TG_TOKEN}/sendMessage")
            );
            assert_eq!(r.expect, Expect::Telegram);
        }
        assert_eq!(
            body_json(&reqs[0]),
            json!({
                "chat_id": "-1001234",
                "text": "<b>Backup &lt;failed&gt;</b>\ndisk full &amp; more",
                "parse_mode": "HTML",
                "disable_notification": true,
                "disable_web_page_preview": false,
            })
        );
        assert_eq!(body_json(&reqs[1])["chat_id"], "@mychannel");
        assert_eq!(body_json(&reqs[2])["chat_id"], "42");
        assert_eq!(body_json(&reqs[2])["message_thread_id"], 7);

        // `channels` is the older key; a long message is cut to Telegram's limit.
        let t = parse(&format!("telegram://{TG_TOKEN}@telegram/?channels=5")).expect("channels");
        let long = "x".repeat(10_000);
        let r = t.requests("T", &long).expect("requests").remove(0);
        let text = body_json(&r)["text"].as_str().expect("text").to_string();
        assert!(
            text.ends_with('…') && text.chars().count() < 4200,
            "{}",
            text.len()
        );

        for (url, want) in [
            ("telegram://telegram?chats=1", "token"),
            ("telegram://abc:def@telegram?chats=1", "token"),
            (&format!("telegram://{TG_TOKEN}@telegram"), "chats"),
            (
                &format!("telegram://{TG_TOKEN}@telegram?chats=1&preview=perhaps"),
                "preview",
            ),
        ] {
            let e = parse(url).expect_err(url).to_string();
            assert!(e.starts_with("telegram: ") && e.contains(want), "{e}");
            assert!(!e.contains("AAHdq"), "{e}");
        }
    }

    #[test]
    fn slack_urls() {
        let want_url = format!("https://hooks.slack.com/services/WNA3PBYV6/F20DUQND3RQ/{SLACK_C}");
        for url in [
            format!("slack://hook:WNA3PBYV6-F20DUQND3RQ-{SLACK_C}@webhook"),
            format!("slack://WNA3PBYV6/F20DUQND3RQ/{SLACK_C}"),
            format!("slack://hook:WNA3PBYV6/F20DUQND3RQ/{SLACK_C}"),
        ] {
            let t = parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
            let r = one(&t);
            assert_eq!(r.url, want_url, "{url}");
            assert_eq!(
                body_json(&r),
                json!({"text": "Backup failed\ndisk <full> & more"})
            );
            assert_eq!(header(&r, "Authorization"), None);
        }
        let t = parse(&format!(
            "slack://Coffer@WNA3PBYV6/F20DUQND3RQ/{SLACK_C}?icon=floppy_disk"
        ))
        .expect("botname");
        assert_eq!(
            body_json(&one(&t)),
            json!({"text": "Backup failed\ndisk <full> & more", "username": "Coffer",
                   "icon_emoji": "floppy_disk"})
        );

        let t = parse(&format!(
            "slack://xoxb:123456789012-1234567890123-{SLACK_C}@C001CH4NN3L?botname=bk\
             &icon=https://example.org/i.png&color=good"
        ))
        .expect("api");
        let r = one(&t);
        assert_eq!(r.url, "https://slack.com/api/chat.postMessage");
        assert_eq!(
            header(&r, "Authorization"),
            Some(format!("Bearer xoxb-123456789012-1234567890123-{SLACK_C}").as_str())
        );
        assert_eq!(r.expect, Expect::SlackApi);
        assert_eq!(
            body_json(&r),
            json!({"text": "Backup failed\ndisk <full> & more", "channel": "C001CH4NN3L",
                   "username": "bk", "icon_url": "https://example.org/i.png"})
        );

        for url in [
            "slack://hook:only-two@webhook",
            "slack://a/b",
            &format!("slack://xoxb:1-2-{SLACK_C}"),
        ] {
            let e = parse(url).expect_err(url).to_string();
            assert!(e.starts_with("slack: "), "{e}");
            assert!(!e.contains(SLACK_C), "{e}");
        }
    }

    #[test]
    fn discord_urls() {
        let t = parse(&format!(
            "discord://{DISCORD_TOKEN}@693853386302554172?username=coffer&splitLines=no"
        ))
        .expect("discord");
        let r = one(&t);
        assert_eq!(
            r.url,
            format!("https://discord.com/api/webhooks/693853386302554172/{DISCORD_TOKEN}")
        );
        assert_eq!(
            body_json(&r),
            json!({"content": "Backup failed\ndisk <full> & more", "username": "coffer"})
        );
        let long = "y".repeat(5000);
        let r = t.requests("T", &long).expect("requests").remove(0);
        let content = body_json(&r)["content"]
            .as_str()
            .expect("content")
            .to_string();
        assert_eq!(content.chars().count(), 2000);

        for (url, want) in [
            ("discord://693853386302554172", "token"),
            (&format!("discord://{DISCORD_TOKEN}@"), "webhook id"),
            (&format!("discord://{DISCORD_TOKEN}@1/raw"), "raw"),
        ] {
            let e = parse(url).expect_err(url).to_string();
            assert!(e.starts_with("discord: ") && e.contains(want), "{e}");
            assert!(!e.contains(DISCORD_TOKEN), "{e}");
        }
    }

    #[test]
    fn unknown_schemes_name_themselves_and_the_supported_ones() {
        let e = parse("pushover://shoutrrr:tok@user/?devices=a")
            .expect_err("pushover")
            .to_string();
        assert!(e.contains("\"pushover\""), "{e}");
        for s in SUPPORTED {
            assert!(e.contains(s), "{e}");
        }
        assert!(!e.contains("tok@"), "{e}");
        assert!(parse("not a url").is_err());
        assert!(parse("generic+ftp://h/p").is_err());
    }

    #[test]
    fn lists_keep_commas_inside_urls() {
        let v = parse_list(&format!(
            "smtp://relay/?from=a@example.org&to=b@example.org,c@example.org, \
             telegram://{TG_TOKEN}@telegram?chats=1,2,discord://{DISCORD_TOKEN}@42"
        ))
        .expect("list");
        assert_eq!(v.len(), 3);
        let Target::Smtp(c) = &v[0] else { panic!() };
        assert_eq!(c.to.len(), 2);
        let Target::Telegram { chats, .. } = &v[1] else {
            panic!()
        };
        assert_eq!(chats, &["1", "2"]);
        assert!(matches!(v[2], Target::Discord { .. }));
        assert!(parse_list("").expect("empty").is_empty());
        let v = parse_list(&format!(" discord://{DISCORD_TOKEN}@42, ")).expect("trailing comma");
        assert!(matches!(&v[..], [Target::Discord { webhook_id, .. }] if webhook_id == "42"));
        let e = parse_list(&format!(
            "discord://{DISCORD_TOKEN}@42,telegram://x@telegram"
        ))
        .expect_err("bad second")
        .to_string();
        assert!(e.starts_with("URL 2 (telegram://***@telegram)"), "{e}");
    }

    #[test]
    fn redaction_hides_every_secret() {
        for (url, want) in [
            (
                format!("telegram://{TG_TOKEN}@telegram?chats=1,2"),
                "telegram://***@telegram?chats=***".to_string(),
            ),
            (
                format!("discord://{DISCORD_TOKEN}@693853386302554172"),
                "discord://***@693853386302554172".to_string(),
            ),
            (
                format!("slack://bot@WNA3PBYV6/F20DUQND3RQ/{SLACK_C}"),
                "slack://***@***/***".to_string(),
            ),
            (
                format!("slack://hook:WNA3PBYV6-F20DUQND3RQ-{SLACK_C}@webhook"),
                "slack://***@webhook".to_string(),
            ),
            (
                "smtp://u:hunter2@mail.example.org:587/?from=a@b.org&to=c@d.org".to_string(),
                "smtp://***@mail.example.org:587/?from=***&to=***".to_string(),
            ),
            (
                "generic+https://ha.local/api/webhook/s3cretid?@authorization=tok".to_string(),
                "generic+https://ha.local/***?@authorization=***".to_string(),
            ),
        ] {
            assert_eq!(redact(&url), want);
        }
        assert_eq!(redact("garbage"), "<invalid URL>");

        let targets = [
            parse(&format!("telegram://{TG_TOKEN}@telegram?chats=1")),
            parse(&format!("discord://{DISCORD_TOKEN}@693853386302554172")),
            parse(&format!("slack://WNA3PBYV6/F20DUQND3RQ/{SLACK_C}")),
            parse(&format!(
                "slack://xoxb:123456789012-1234567890123-{SLACK_C}@C1"
            )),
            parse("smtp://u:hunter2-pw@mail.example.org/?from=a@b.org&to=c@d.org"),
            parse("generic://u:hunter2-pw@h/s?@authorization=Bearer%20tok-s3cr3t"),
        ];
        for t in targets {
            let t = t.expect("parse");
            for shown in [format!("{t}"), format!("{t:?}"), format!("{t:#?}")] {
                for secret in ["AAHdq", DISCORD_TOKEN, SLACK_C, "hunter2", "tok-s3cr3t"] {
                    assert!(!shown.contains(secret), "{secret} in {shown}");
                }
            }
        }
    }

    /// What the loopback server received.
    #[derive(Debug)]
    struct Captured {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Captured {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("json")
        }
    }

    /// A loopback HTTP server for one request, answering `status` and `body`. Bounded: 10 s
    /// to connect, 10 s per read, 1 MiB.
    fn http_once(status: &'static str, reply: &'static str) -> (String, JoinHandle<Captured>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let handle = std::thread::spawn(move || {
            listener.set_nonblocking(true).expect("nonblocking");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("no connection: {e}"),
                }
            };
            stream.set_nonblocking(false).expect("blocking");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
                let n = stream.read(&mut chunk).expect("read");
                assert!(n > 0 && buf.len() < 1 << 20, "short request");
                buf.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next().expect("request line").split(' ');
            let method = first.next().expect("method").to_string();
            let target = first.next().expect("target").to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().expect("length"));
            let mut body = buf[head_end + 4..].to_vec();
            while body.len() < len {
                let n = stream.read(&mut chunk).expect("read body");
                assert!(n > 0, "short body");
                body.extend_from_slice(&chunk[..n]);
            }
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len(),
            );
            stream.write_all(response.as_bytes()).expect("reply");
            Captured {
                method,
                target,
                headers,
                body,
            }
        });
        (base, handle)
    }

    fn client() -> (reqwest::Client, crate::runtime::IoHandle) {
        let rt = crate::runtime::IoRuntime::new().handle().expect("runtime");
        let c = {
            let _in = rt.enter();
            reqwest::Client::builder().build().expect("client")
        };
        (c, rt)
    }

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn sends_to_telegram() {
        let (base, server) = http_once("200 OK", "");
        let t = parse(&format!("telegram://{TG_TOKEN}@telegram?chats=-100987"))
            .expect("parse")
            .with_base_url(&base);
        let (c, rt) = client();
        t.send("Backup ok", "3 snapshots", Some((&c, &rt)), T)
            .expect("send");
        let got = server.join().expect("server");
        assert_eq!(got.method, "POST");
        assert_eq!(got.target, format!("/bot{TG_TOKEN}/sendMessage"));
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(got.json()["chat_id"], "-100987");
        assert_eq!(got.json()["text"], "<b>Backup ok</b>\n3 snapshots");
    }

    #[test]
    fn sends_to_slack_webhook_and_api() {
        let (base, server) = http_once("200 OK", "ok");
        let t = parse(&format!(
            "slack://hook:WNA3PBYV6-F20DUQND3RQ-{SLACK_C}@webhook"
        ))
        .expect("parse")
        .with_base_url(&base);
        let (c, rt) = client();
        t.send("T", "M", Some((&c, &rt)), T).expect("send");
        let got = server.join().expect("server");
        assert_eq!(got.method, "POST");
        assert_eq!(
            got.target,
            format!("/services/WNA3PBYV6/F20DUQND3RQ/{SLACK_C}")
        );
        assert_eq!(got.json(), json!({"text": "T\nM"}));

        let token = format!("xoxb-123456789012-1234567890123-{SLACK_C}");
        let api = parse(&format!(
            "slack://xoxb:123456789012-1234567890123-{SLACK_C}@C001"
        ))
        .expect("parse");
        let (base, server) = http_once("200 OK", r#"{"ok":true}"#);
        api.clone()
            .with_base_url(&base)
            .send("T", "M", Some((&c, &rt)), T)
            .expect("send");
        let got = server.join().expect("server");
        assert_eq!(got.target, "/api/chat.postMessage");
        assert_eq!(
            got.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
        assert_eq!(got.json(), json!({"text": "T\nM", "channel": "C001"}));

        // Slack's API answers 200 with ok=false.
        let (base, server) = http_once("200 OK", r#"{"ok":false,"error":"invalid_auth"}"#);
        let e = api
            .with_base_url(&base)
            .send("T", "M", Some((&c, &rt)), T)
            .expect_err("not ok")
            .to_string();
        server.join().expect("server");
        assert!(e.contains("invalid_auth") && !e.contains(SLACK_C), "{e}");
    }

    #[test]
    fn sends_to_discord() {
        let (base, server) = http_once("204 No Content", "");
        let t = parse(&format!("discord://{DISCORD_TOKEN}@693853386302554172"))
            .expect("parse")
            .with_base_url(&base);
        let (c, rt) = client();
        t.send("Backup failed", "no space", Some((&c, &rt)), T)
            .expect("send");
        let got = server.join().expect("server");
        assert_eq!(got.method, "POST");
        assert_eq!(
            got.target,
            format!("/api/webhooks/693853386302554172/{DISCORD_TOKEN}")
        );
        assert_eq!(got.json(), json!({"content": "Backup failed\nno space"}));
    }

    #[test]
    fn sends_generic_json_with_headers_and_basic_auth() {
        let (base, server) = http_once("200 OK", "");
        let hostport = base.trim_start_matches("http://");
        let t = parse(&format!(
            "generic://bk:pw@{hostport}/api/webhook/abc?disabletls=yes&template=json\
             &messagekey=text&@X-Api-Key=k3y-s3cr3t&$source=coffer&q=1"
        ))
        .expect("parse");
        let (c, rt) = client();
        t.send("Backup failed", "no space", Some((&c, &rt)), T)
            .expect("send");
        let got = server.join().expect("server");
        assert_eq!(got.method, "POST");
        assert_eq!(got.target, "/api/webhook/abc?q=1");
        assert_eq!(got.header("x-api-key"), Some("k3y-s3cr3t"));
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(got.header("authorization"), Some("Basic Yms6cHc="));
        assert_eq!(
            got.json(),
            json!({"title": "Backup failed", "text": "no space", "source": "coffer"})
        );
    }

    #[test]
    fn http_failures_are_reported_without_secrets() {
        let (c, rt) = client();
        // An error status with Telegram's description.
        let (base, server) = http_once(
            "400 Bad Request",
            r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#,
        );
        let t = parse(&format!("telegram://{TG_TOKEN}@telegram?chats=77"))
            .expect("parse")
            .with_base_url(&base);
        let e = t
            .send("T", "M", Some((&c, &rt)), T)
            .expect_err("400")
            .to_string();
        server.join().expect("server");
        assert!(e.contains("chat 77") && e.contains("chat not found"), "{e}");
        assert!(!e.contains("AAHdq") && !e.contains("110201543:"), "{e}");

        // Nobody listening: reqwest's error, without the URL (and so the token).
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        for t in [
            parse(&format!("discord://{DISCORD_TOKEN}@1")).expect("parse"),
            parse(&format!("telegram://{TG_TOKEN}@telegram?chats=1")).expect("parse"),
        ] {
            let t = t.with_base_url(&format!("http://127.0.0.1:{port}"));
            let e = t
                .send("T", "M", Some((&c, &rt)), T)
                .expect_err("refused")
                .to_string();
            assert!(!e.contains(DISCORD_TOKEN) && !e.contains("AAHdq"), "{e}");
            assert!(!e.contains("127.0.0.1"), "{e}");
        }
        let e = parse(&format!(
            "generic://127.0.0.1:{port}/hook/s3cr3t-path?disabletls=1"
        ))
        .expect("parse")
        .send("T", "M", Some((&c, &rt)), T)
        .expect_err("refused")
        .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");

        // No HTTP client at hand.
        let e = parse(&format!("discord://{DISCORD_TOKEN}@1"))
            .expect("parse")
            .send("T", "M", None, T)
            .expect_err("no client")
            .to_string();
        assert!(
            e.contains("no HTTP client") && !e.contains(DISCORD_TOKEN),
            "{e}"
        );
    }

    #[test]
    fn smtp_url_sends_through_mail() {
        let (port, server) = mail::tests::sink();
        let t = parse(&format!(
            "smtp://127.0.0.1:{port}/?fromAddress=bk@example.org\
             &toAddresses=a@example.org,b@example.org"
        ))
        .expect("parse");
        t.send("Backup failed", "no space left", None, T)
            .expect("send");
        let seen = server.join().expect("sink");
        assert_eq!(seen.mail_from, vec!["<bk@example.org>"]);
        assert_eq!(seen.rcpt_to, vec!["<a@example.org>", "<b@example.org>"]);
        assert!(seen.data[0].contains("Subject: Backup failed\r\n"));
        assert!(seen.data[0].contains("no space left"));

        // Credentials and no STARTTLS: refused, no password in the error.
        let (port, server) = mail::tests::sink();
        let e = parse(&format!(
            "smtp://bk:hunter2-pw@127.0.0.1:{port}/?from=bk@example.org&to=a@example.org"
        ))
        .expect("parse")
        .send("T", "M", None, T)
        .expect_err("refused")
        .to_string();
        let seen = server.join().expect("sink");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(seen.data.is_empty());
    }
}
