//! A local SMTP server that accepts mail and keeps it in memory: what end-to-end tests send
//! campaign emails to. Speaks enough RFC 5321 for lettre without TLS: greeting, EHLO/HELO
//! (advertising PIPELINING, 8BITMIME, SMTPUTF8, SIZE and AUTH PLAIN LOGIN), AUTH PLAIN/LOGIN,
//! MAIL FROM, RCPT TO, DATA (dot-unstuffing), RSET, NOOP, QUIT; many connections at once and
//! many messages per connection.
//!
//! Failure injection: [`SmtpSink::fail_next_rcpt`] answers the next RCPT commands with a given
//! reply (e.g. `450 4.2.1 try later`), [`SmtpSink::reject_rcpt_matching`] answers every RCPT for
//! a matching address with one (e.g. `550 5.1.1 no such user`), [`SmtpSink::stall_next_data`]
//! never answers the end of the next messages (a hung server).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Largest message accepted (advertised with SIZE).
const MAX_SIZE: usize = 10 * 1024 * 1024;
/// Longest command line accepted.
const MAX_LINE: usize = 4096;

/// One message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Reverse path without `<>` (empty for a null sender).
    pub mail_from: String,
    /// Forward paths without `<>`, those the sink accepted.
    pub rcpt_to: Vec<String>,
    /// The raw message as transmitted after DATA (dot-unstuffed, CRLF line ends).
    pub data: String,
    /// The user name the client authenticated as, if it did.
    pub authenticated_as: Option<String>,
}

#[derive(Default)]
struct Inner {
    messages: Vec<ReceivedMail>,
    credentials: Option<(String, String)>,
    fail_next_rcpt: VecDeque<String>,
    reject_rcpt: Vec<(String, String)>,
    stall_next_data: usize,
    connections: usize,
}

/// The SMTP sink; stops when the last clone is dropped.
#[derive(Clone)]
pub struct SmtpSink {
    port: u16,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<tokio::sync::Notify>,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for SmtpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSink")
            .field("port", &self.port)
            .finish()
    }
}

impl SmtpSink {
    /// Starts on 127.0.0.1 (random port), accepting any sender and recipient without AUTH.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let token = CancellationToken::new();
        let (state, notify, stop) = (inner.clone(), arrived.clone(), token.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                let session = Session {
                    inner: state.clone(),
                    arrived: notify.clone(),
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = session.run(stream) => {}
                    }
                });
            }
        });
        Ok(Self {
            port,
            inner,
            arrived,
            _guard: Arc::new(token.drop_guard()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn host(&self) -> String {
        "127.0.0.1".into()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requires AUTH (PLAIN or LOGIN) with these credentials before MAIL.
    pub fn with_credentials(self, user: &str, pass: &str) -> Self {
        self.lock().credentials = Some((user.to_owned(), pass.to_owned()));
        self
    }

    /// Answers the next `n` RCPT commands with `reply` (a full reply line such as
    /// `450 4.2.1 try later`).
    pub fn fail_next_rcpt(&self, n: usize, reply: &str) {
        let mut inner = self.lock();
        for _ in 0..n {
            inner.fail_next_rcpt.push_back(reply.to_owned());
        }
    }

    /// Answers every RCPT whose address contains `substring` (case-insensitive) with `reply`
    /// (e.g. `550 5.1.1 no such user`).
    pub fn reject_rcpt_matching(&self, substring: &str, reply: &str) {
        self.lock()
            .reject_rcpt
            .push((substring.to_ascii_lowercase(), reply.to_owned()));
    }

    /// The next `n` messages are read to the end of DATA but never answered (nor kept): the
    /// server hangs from the client's point of view, until the client closes the connection.
    pub fn stall_next_data(&self, n: usize) {
        self.lock().stall_next_data += n;
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.lock().messages.clone()
    }

    pub fn count(&self) -> usize {
        self.lock().messages.len()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// Waits until at least `n` messages arrived; false if `timeout` passed first.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count() >= n;
            }
        }
    }
}

struct Session {
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<tokio::sync::Notify>,
}

/// Reads one line (without CRLF); None at EOF or on an over-long line.
async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<String> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut buf)
        .await
        .ok()?;
    if n == 0 || (buf.last() != Some(&b'\n') && buf.len() > MAX_LINE) {
        return None;
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn reply<W: AsyncWrite + Unpin>(w: &mut W, text: &str) -> std::io::Result<()> {
    // One write per reply (two small writes would meet Nagle + delayed ACK: 40 ms stalls).
    w.write_all(format!("{text}\r\n").as_bytes()).await?;
    w.flush().await
}

/// The address inside `<...>` after `prefix` (case-insensitive), e.g. `FROM:`.
fn path_arg(arg: &str, prefix: &str) -> Option<String> {
    let rest = arg.get(..prefix.len())?;
    if !rest.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

fn decode_b64(s: &str) -> Option<String> {
    B64.decode(s.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self, stream: TcpStream) -> std::io::Result<()> {
        self.lock().connections += 1;
        let _ = stream.set_nodelay(true);
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        reply(&mut w, "220 127.0.0.1 ESMTP cos-testkit SmtpSink").await?;
        let mut authenticated: Option<String> = None;
        let mut mail_from: Option<String> = None;
        let mut rcpt_to: Vec<String> = Vec::new();
        while let Some(line) = read_line(&mut r).await {
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_owned()),
                None => (line.trim().to_ascii_uppercase(), String::new()),
            };
            match verb.as_str() {
                "EHLO" => {
                    mail_from = None;
                    rcpt_to.clear();
                    w.write_all(
                        format!(
                            "250-127.0.0.1 greets {arg}\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
                             250-SMTPUTF8\r\n250-SIZE {MAX_SIZE}\r\n250-AUTH PLAIN LOGIN\r\n\
                             250 ENHANCEDSTATUSCODES\r\n"
                        )
                        .as_bytes(),
                    )
                    .await?;
                    w.flush().await?;
                }
                "HELO" => {
                    mail_from = None;
                    rcpt_to.clear();
                    reply(&mut w, "250 127.0.0.1").await?;
                }
                "AUTH" => {
                    let (mech, initial) = match arg.split_once(' ') {
                        Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_owned())),
                        None => (arg.to_ascii_uppercase(), None),
                    };
                    let creds = match mech.as_str() {
                        "PLAIN" => {
                            let resp = match initial {
                                Some(i) => i,
                                None => {
                                    reply(&mut w, "334 ").await?;
                                    read_line(&mut r).await.unwrap_or_default()
                                }
                            };
                            decode_b64(&resp).and_then(|s| {
                                let mut parts = s.split('\0');
                                let _authzid = parts.next()?;
                                let user = parts.next()?.to_owned();
                                let pass = parts.next()?.to_owned();
                                Some((user, pass))
                            })
                        }
                        "LOGIN" => {
                            let user = match initial {
                                Some(i) => decode_b64(&i),
                                None => {
                                    reply(&mut w, "334 VXNlcm5hbWU6").await?;
                                    read_line(&mut r).await.and_then(|l| decode_b64(&l))
                                }
                            };
                            reply(&mut w, "334 UGFzc3dvcmQ6").await?;
                            let pass = read_line(&mut r).await.and_then(|l| decode_b64(&l));
                            user.zip(pass)
                        }
                        _ => {
                            reply(&mut w, "504 5.5.4 unrecognized authentication type").await?;
                            continue;
                        }
                    };
                    let expected = self.lock().credentials.clone();
                    match (creds, expected) {
                        (Some((u, p)), Some((eu, ep))) if u == eu && p == ep => {
                            authenticated = Some(u);
                            reply(&mut w, "235 2.7.0 Authentication successful").await?;
                        }
                        (Some((u, _)), None) => {
                            authenticated = Some(u);
                            reply(&mut w, "235 2.7.0 Authentication successful").await?;
                        }
                        _ => {
                            reply(&mut w, "535 5.7.8 Authentication credentials invalid").await?;
                        }
                    }
                }
                "MAIL" => {
                    if self.lock().credentials.is_some() && authenticated.is_none() {
                        reply(&mut w, "530 5.7.0 Authentication required").await?;
                        continue;
                    }
                    match path_arg(&arg, "FROM:") {
                        Some(from) => {
                            mail_from = Some(from);
                            rcpt_to.clear();
                            reply(&mut w, "250 2.1.0 Ok").await?;
                        }
                        None => reply(&mut w, "501 5.5.4 Syntax: MAIL FROM:<address>").await?,
                    }
                }
                "RCPT" => {
                    if mail_from.is_none() {
                        reply(&mut w, "503 5.5.1 Error: need MAIL command").await?;
                        continue;
                    }
                    let Some(to) = path_arg(&arg, "TO:") else {
                        reply(&mut w, "501 5.5.4 Syntax: RCPT TO:<address>").await?;
                        continue;
                    };
                    let injected = {
                        let mut inner = self.lock();
                        let lower = to.to_ascii_lowercase();
                        inner
                            .reject_rcpt
                            .iter()
                            .find(|(sub, _)| lower.contains(sub.as_str()))
                            .map(|(_, reply)| reply.clone())
                            .or_else(|| inner.fail_next_rcpt.pop_front())
                    };
                    match injected {
                        Some(text) => reply(&mut w, &text).await?,
                        None => {
                            rcpt_to.push(to);
                            reply(&mut w, "250 2.1.5 Ok").await?;
                        }
                    }
                }
                "DATA" => {
                    if mail_from.is_none() || rcpt_to.is_empty() {
                        reply(&mut w, "554 5.5.1 Error: no valid recipients").await?;
                        continue;
                    }
                    reply(&mut w, "354 End data with <CR><LF>.<CR><LF>").await?;
                    let Some(data) = read_data(&mut r).await else {
                        return Ok(());
                    };
                    let stall = {
                        let mut inner = self.lock();
                        let stall = inner.stall_next_data > 0;
                        inner.stall_next_data = inner.stall_next_data.saturating_sub(1);
                        stall
                    };
                    if stall {
                        // Hang: swallow whatever comes next until the client gives up.
                        while read_line(&mut r).await.is_some() {}
                        return Ok(());
                    }
                    if data.len() > MAX_SIZE {
                        reply(&mut w, "552 5.3.4 Message size exceeds fixed limit").await?;
                    } else {
                        let id = {
                            let mut inner = self.lock();
                            inner.messages.push(ReceivedMail {
                                mail_from: mail_from.take().unwrap_or_default(),
                                rcpt_to: std::mem::take(&mut rcpt_to),
                                data,
                                authenticated_as: authenticated.clone(),
                            });
                            inner.messages.len()
                        };
                        self.arrived.notify_waiters();
                        reply(&mut w, &format!("250 2.0.0 Ok: queued as SINK{id:06}")).await?;
                    }
                    mail_from = None;
                    rcpt_to.clear();
                }
                "RSET" => {
                    mail_from = None;
                    rcpt_to.clear();
                    reply(&mut w, "250 2.0.0 Ok").await?;
                }
                "NOOP" => reply(&mut w, "250 2.0.0 Ok").await?,
                "VRFY" => reply(&mut w, "252 2.0.0 Cannot VRFY user").await?,
                "QUIT" => {
                    reply(&mut w, "221 2.0.0 Bye").await?;
                    return Ok(());
                }
                "STARTTLS" => reply(&mut w, "454 4.7.0 TLS not available").await?,
                _ => reply(&mut w, "502 5.5.2 Error: command not recognized").await?,
            }
        }
        Ok(())
    }
}

/// Reads DATA lines up to the lone `.`, undoing dot-stuffing; None if the client went away.
async fn read_data<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<String> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        let content = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(&line);
        if content == b"." {
            break;
        }
        let content = content.strip_prefix(b".").unwrap_or(content);
        if data.len() <= MAX_SIZE {
            data.extend_from_slice(content);
            data.extend_from_slice(b"\r\n");
        }
    }
    Some(String::from_utf8_lossy(&data).into_owned())
}

// ---- Reading what arrived -------------------------------------------------------------------

/// Splits a MIME entity into (unfolded headers, body).
fn split_entity(raw: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match raw.find("\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match raw.find("\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (raw, ""),
        },
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A parameter of a structured header value: `boundary` in `multipart/alternative; boundary="x"`.
fn header_param(value: &str, param: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(param)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable decoding (RFC 2045 6.7), soft line breaks included.
pub fn decode_quoted_printable(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'=' {
            if bytes.get(i + 1..i + 3) == Some(b"\r\n") {
                i += 3;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex_val),
                bytes.get(i + 2).copied().and_then(hex_val),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn decode_body(headers: &[(String, String)], body: &str) -> String {
    let cte = find_header(headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let bytes = match cte.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            B64.decode(compact).unwrap_or_default()
        }
        _ => body.as_bytes().to_vec(),
    };
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The decoded body of the first part with content type `mime` (searching nested multiparts).
fn find_part(raw: &str, mime: &str) -> Option<String> {
    let (headers, body) = split_entity(raw);
    let ctype = find_header(&headers, "Content-Type").unwrap_or("text/plain");
    let kind = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if kind.starts_with("multipart/") {
        let boundary = header_param(ctype, "boundary")?;
        let delimiter = format!("--{boundary}");
        let mut sections = body.split(delimiter.as_str());
        sections.next(); // preamble
        for section in sections {
            if section.starts_with("--") {
                break; // closing delimiter
            }
            let section = section
                .strip_prefix("\r\n")
                .or_else(|| section.strip_prefix('\n'))
                .unwrap_or(section);
            // The CRLF before the next delimiter belongs to the delimiter.
            let section = section
                .strip_suffix("\r\n")
                .or_else(|| section.strip_suffix('\n'))
                .unwrap_or(section);
            if let Some(found) = find_part(section, mime) {
                return Some(found);
            }
        }
        return None;
    }
    (kind == mime).then(|| decode_body(&headers, body))
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`) in a header value.
pub fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let decoded = (|| {
            let after = &rest[start + 2..];
            let (_charset, after) = after.split_once('?')?;
            let (enc, after) = after.split_once('?')?;
            let end = after.find("?=")?;
            let text = &after[..end];
            let bytes = match enc.to_ascii_lowercase().as_str() {
                "b" => B64.decode(text).ok()?,
                "q" => decode_quoted_printable(&text.replace('_', " ")),
                _ => return None,
            };
            let consumed = start + 2 + (rest[start + 2..].len() - after.len()) + end + 2;
            Some((String::from_utf8_lossy(&bytes).into_owned(), consumed))
        })();
        match decoded {
            Some((text, consumed)) => {
                let between = &rest[..start];
                // Whitespace between two adjacent encoded words is not part of the text.
                if !(last_was_word && between.trim().is_empty()) {
                    out.push_str(between);
                }
                out.push_str(&text);
                rest = &rest[consumed..];
                last_was_word = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

impl ReceivedMail {
    /// The first header called `name` (case-insensitive), unfolded, as transmitted (encoded
    /// words are left alone; see [`ReceivedMail::header_decoded`]).
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = split_entity(&self.data);
        find_header(&headers, name).map(str::to_owned)
    }

    /// Every header called `name`, unfolded.
    pub fn headers_named(&self, name: &str) -> Vec<String> {
        let (headers, _) = split_entity(&self.data);
        headers
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// All top-level header names, in order.
    pub fn header_names(&self) -> Vec<String> {
        let (headers, _) = split_entity(&self.data);
        headers.into_iter().map(|(n, _)| n).collect()
    }

    /// Like [`ReceivedMail::header`], with RFC 2047 encoded words decoded (e.g. a UTF-8
    /// subject).
    pub fn header_decoded(&self, name: &str) -> Option<String> {
        self.header(name).map(|v| decode_encoded_words(&v))
    }

    /// The decoded `text/plain` part (or body), if any.
    pub fn decoded_text(&self) -> Option<String> {
        find_part(&self.data, "text/plain")
    }

    /// The decoded `text/html` part (or body), if any.
    pub fn decoded_html(&self) -> Option<String> {
        find_part(&self.data, "text/html")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(data: &str) -> ReceivedMail {
        ReceivedMail {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            data: data.replace('\n', "\r\n"),
            authenticated_as: None,
        }
    }

    #[test]
    fn headers_are_unfolded_and_case_insensitive() {
        let m = mail("Subject: a\n  b\nX-Id: 1\nx-id: 2\n\nbody\n");
        assert_eq!(m.header("subject").as_deref(), Some("a b"));
        assert_eq!(m.header("X-ID").as_deref(), Some("1"));
        assert_eq!(m.headers_named("x-id"), vec!["1", "2"]);
        assert_eq!(m.header("missing"), None);
        assert_eq!(m.decoded_text().as_deref(), Some("body\r\n"));
    }

    #[test]
    fn multipart_with_qp_and_base64() {
        let m = mail(
            "Content-Type: multipart/alternative;\n boundary=\"XYZ\"\n\n--XYZ\n\
             Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
             Caf=C3=A9 =3D soft=\nbreak\n--XYZ\nContent-Type: text/html; charset=utf-8\n\
             Content-Transfer-Encoding: base64\n\nPHA+aMOpPC9wPg==\n--XYZ--\n",
        );
        assert_eq!(m.decoded_text().as_deref(), Some("Café = softbreak"));
        assert_eq!(m.decoded_html().as_deref(), Some("<p>hé</p>"));
    }

    #[test]
    fn encoded_words() {
        assert_eq!(
            decode_encoded_words("=?utf-8?b?Q2Fmw6k=?= =?utf-8?q?_ol=C3=A9?= x"),
            "Café olé x"
        );
        assert_eq!(decode_encoded_words("plain =? text"), "plain =? text");
    }
}
