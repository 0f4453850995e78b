//! Parsing and formatting of the Digest header fields:
//! `WWW-Authenticate` (RFC 7616 3.3), `Authorization` (RFC 7616 3.4),
//! `Authentication-Info` (RFC 7616 3.5 / RFC 2617 3.2.3), including the
//! `auts` parameter of RFC 3310 3.4.
//!
//! Grammar (RFC 7235 2.1, RFC 7230 3.2.6):
//!
//! ```text
//! credentials/challenge = auth-scheme 1*SP #auth-param
//! auth-param            = token BWS "=" BWS ( token / quoted-string )
//! quoted-string         = DQUOTE *( qdtext / quoted-pair ) DQUOTE
//! quoted-pair           = "\" ( HTAB / SP / VCHAR / obs-text )
//! ```
//!
//! Parsing is total: it never panics and reports a typed [`HeaderError`]
//! that names the offending parameter. It is lenient where real
//! implementations differ: parameter names, the scheme, `algorithm`, `qop`
//! and `stale` are case-insensitive; any parameter may be quoted or not;
//! an unquoted value runs up to the next comma or whitespace (so an unquoted
//! base64 nonce is accepted); empty list elements are skipped; unknown
//! parameters are ignored (RFC 7616 3.3). Control characters (other than
//! HTAB) are rejected, both when parsing and when formatting, so a formatted
//! header can never split into two.
//!
//! A `WWW-Authenticate` field value is expected to hold one challenge;
//! callers split multiple header fields themselves.

use core::fmt::Write as _;
use std::borrow::Cow;

use super::{nc_hex, parse_nc, Algorithm, Qop};

/// Errors from parsing or formatting a Digest header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The value does not start with the `Digest` scheme.
    #[error("authentication scheme is not Digest")]
    NotDigest,
    /// Malformed syntax.
    #[error("syntax error at byte {at}{}: {reason}", param.as_ref().map(|p| format!(" (parameter `{p}`)")).unwrap_or_default())]
    Syntax {
        /// Parameter being parsed, if known.
        param: Option<String>,
        /// Byte offset in the input.
        at: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A quoted-string was not closed.
    #[error("parameter `{param}`: unterminated quoted string")]
    UnterminatedQuote {
        /// Parameter being parsed.
        param: String,
    },
    /// A parameter occurred twice.
    #[error("parameter `{param}` appears more than once")]
    Duplicate {
        /// The repeated parameter (lowercased).
        param: String,
    },
    /// A required parameter is absent.
    #[error("missing required parameter `{0}`")]
    Missing(&'static str),
    /// A parameter value is not acceptable.
    #[error("invalid value for parameter `{param}`: {reason}")]
    InvalidValue {
        /// The parameter.
        param: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// The `algorithm` parameter names an algorithm this crate does not
    /// implement.
    #[error("parameter `algorithm`: unsupported algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The `qop` parameter holds no supported value.
    #[error("parameter `qop`: unsupported qop `{0}`")]
    UnsupportedQop(String),
}

/// A Digest challenge, the value of `WWW-Authenticate` (RFC 7616 3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `realm` (required).
    pub realm: String,
    /// `domain`, a space-separated URI list.
    pub domain: Option<String>,
    /// `nonce` (required).
    pub nonce: String,
    /// `opaque`, echoed unchanged by the client.
    pub opaque: Option<String>,
    /// `stale`: the previous request was rejected only because its nonce
    /// had expired.
    pub stale: bool,
    /// `algorithm`; `None` means absent (MD5 implied).
    pub algorithm: Option<Algorithm>,
    /// The offered qop values in the server's order. Empty means the
    /// parameter was absent (RFC 2069 compatibility). Unknown values are
    /// dropped when parsing.
    pub qop: Vec<Qop>,
}

/// Digest credentials, the value of `Authorization` (RFC 7616 3.4, RFC 3310
/// 3.2-3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// `username` (required).
    pub username: String,
    /// `realm` (required).
    pub realm: String,
    /// `nonce` (required; empty in the first Ub request, TS 24.109 A.3).
    pub nonce: String,
    /// `uri` (required).
    pub uri: String,
    /// `response` (required; empty in the first Ub request).
    pub response: String,
    /// `algorithm`; `None` means absent (MD5 implied).
    pub algorithm: Option<Algorithm>,
    /// `cnonce` (required when `qop` is present).
    pub cnonce: Option<String>,
    /// `opaque`.
    pub opaque: Option<String>,
    /// `qop`; `None` for RFC 2069 style credentials.
    pub qop: Option<Qop>,
    /// `nc` (required when `qop` is present).
    pub nc: Option<u32>,
    /// `auts` (RFC 3310 3.4): base64 of AUTS on a synchronisation failure.
    pub auts: Option<String>,
}

/// The value of `Authentication-Info` (RFC 7616 3.5, RFC 2617 3.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthenticationInfo {
    /// `nextnonce`: the nonce the client should use next.
    pub nextnonce: Option<String>,
    /// `qop` of the request being answered.
    pub qop: Option<Qop>,
    /// `rspauth`: proves the server knows the password and protects the
    /// response body under `auth-int`.
    pub rspauth: Option<String>,
    /// `cnonce` of the request being answered.
    pub cnonce: Option<String>,
    /// `nc` of the request being answered.
    pub nc: Option<u32>,
}

// ---------------------------------------------------------------------------
// Lexing

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// One `auth-param`, borrowed from the header where it can be (a
/// lowercase name, a value without escapes): the parser is on every Ua and
/// Ub request, and only the values kept are copied
/// ([`ParamMap::take`]).
struct Param<'a> {
    name: Cow<'a, str>,
    value: Cow<'a, str>,
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Consumes bytes while `pred` holds; all accepted bytes must be ASCII
    /// or the slice boundaries must fall on ASCII delimiters.
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    fn quoted(&mut self, param: &str) -> Result<Cow<'a, str>, HeaderError> {
        // Caller checked the opening quote.
        self.pos += 1;
        let bytes = self.s.as_bytes();
        // The value is copied in runs between escapes (RFC 9110 5.6.4
        // quoted-pair): one allocation of the right size for a value
        // without escapes, instead of growing a buffer byte by byte (this
        // parser is on every Ua and Ub request).
        let mut buf: Vec<u8> = Vec::new();
        let mut run = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => {
                    return Err(HeaderError::UnterminatedQuote {
                        param: param.to_owned(),
                    })
                }
                Some(b'"') => {
                    if !escaped {
                        // No escape: the value as it stands in the header.
                        let v = self.s.get(run..self.pos).unwrap_or("");
                        self.pos += 1;
                        return Ok(Cow::Borrowed(v));
                    }
                    buf.extend_from_slice(&bytes[run..self.pos]);
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    escaped = true;
                    buf.extend_from_slice(&bytes[run..self.pos]);
                    self.pos += 1;
                    match self.peek() {
                        None => {
                            return Err(HeaderError::UnterminatedQuote {
                                param: param.to_owned(),
                            })
                        }
                        Some(c) if is_ctl(c) => return Err(ctl_error(param)),
                        Some(c) => {
                            buf.push(c);
                            self.pos += 1;
                            run = self.pos;
                        }
                    }
                }
                Some(c) if is_ctl(c) => return Err(ctl_error(param)),
                Some(_) => self.pos += 1,
            }
        }
        // Only ASCII bytes were removed (quotes and backslashes), so this is
        // valid UTF-8; map the impossible error rather than unwrap.
        String::from_utf8(buf)
            .map(Cow::Owned)
            .map_err(|_| HeaderError::InvalidValue {
                param: param.to_owned(),
                reason: "not valid UTF-8",
            })
    }
}

fn ctl_error(param: &str) -> HeaderError {
    HeaderError::InvalidValue {
        param: param.to_owned(),
        reason: "contains a control character",
    }
}

/// Parses `#auth-param` from the cursor position to the end.
fn parse_params<'a>(cur: &mut Cursor<'a>) -> Result<Vec<Param<'a>>, HeaderError> {
    let mut params: Vec<Param> = Vec::new();
    loop {
        cur.skip_ows();
        match cur.peek() {
            None => break,
            Some(b',') => {
                cur.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let at = cur.pos;
        let name = cur.take_while(is_tchar);
        let name: Cow<'a, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        if name.is_empty() {
            return Err(HeaderError::Syntax {
                param: None,
                at,
                reason: "expected a parameter name",
            });
        }
        cur.skip_ows();
        if cur.peek() != Some(b'=') {
            return Err(HeaderError::Syntax {
                param: Some(name.into_owned()),
                at: cur.pos,
                reason: "expected '='",
            });
        }
        cur.pos += 1;
        cur.skip_ows();
        let value = if cur.peek() == Some(b'"') {
            cur.quoted(&name)?
        } else {
            let at = cur.pos;
            let v = cur.take_while(|b| !matches!(b, b',' | b' ' | b'\t' | b'"') && !is_ctl(b));
            if v.is_empty() {
                return Err(HeaderError::Syntax {
                    param: Some(name.into_owned()),
                    at,
                    reason: "expected a token or quoted-string value",
                });
            }
            Cow::Borrowed(v)
        };
        cur.skip_ows();
        match cur.peek() {
            None => {}
            Some(b',') => cur.pos += 1,
            Some(_) => {
                return Err(HeaderError::Syntax {
                    param: Some(name.into_owned()),
                    at: cur.pos,
                    reason: "expected ',' after the value",
                })
            }
        }
        if params.iter().any(|p| p.name == name) {
            return Err(HeaderError::Duplicate {
                param: name.into_owned(),
            });
        }
        params.push(Param { name, value });
    }
    Ok(params)
}

/// Parses `Digest #auth-param`.
fn parse_digest(input: &str) -> Result<Vec<Param<'_>>, HeaderError> {
    let mut cur = Cursor::new(input);
    cur.skip_ows();
    let scheme = cur.take_while(is_tchar);
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(HeaderError::NotDigest);
    }
    match cur.peek() {
        None | Some(b' ' | b'\t') => {}
        Some(_) => {
            return Err(HeaderError::Syntax {
                param: None,
                at: cur.pos,
                reason: "expected whitespace after the scheme",
            })
        }
    }
    parse_params(&mut cur)
}

struct ParamMap<'a>(Vec<Param<'a>>);

impl<'a> ParamMap<'a> {
    /// The value of `name`, copied.
    fn take(&mut self, name: &str) -> Option<String> {
        self.take_borrowed(name).map(Cow::into_owned)
    }

    /// The value of `name`, borrowed when it can be.
    fn take_borrowed(&mut self, name: &str) -> Option<Cow<'a, str>> {
        let idx = self.0.iter().position(|p| p.name == name)?;
        Some(self.0.swap_remove(idx).value)
    }

    fn required(&mut self, name: &'static str) -> Result<String, HeaderError> {
        self.take(name).ok_or(HeaderError::Missing(name))
    }

    fn algorithm(&mut self) -> Result<Option<Algorithm>, HeaderError> {
        self.take_borrowed("algorithm")
            .map(|v| v.trim().parse())
            .transpose()
    }

    fn single_qop(&mut self) -> Result<Option<Qop>, HeaderError> {
        self.take_borrowed("qop")
            .map(|v| v.trim().parse())
            .transpose()
    }

    fn nc(&mut self) -> Result<Option<u32>, HeaderError> {
        self.take_borrowed("nc")
            .map(|v| parse_nc(v.trim()))
            .transpose()
    }
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value holding one Digest challenge.
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut m = ParamMap(parse_digest(value)?);
        let realm = m.required("realm")?;
        let nonce = m.required("nonce")?;
        let stale = match m.take("stale") {
            None => false,
            Some(v) if v.trim().eq_ignore_ascii_case("true") => true,
            Some(v) if v.trim().eq_ignore_ascii_case("false") => false,
            Some(_) => {
                return Err(HeaderError::InvalidValue {
                    param: "stale".to_owned(),
                    reason: "must be true or false",
                })
            }
        };
        let qop = match m.take("qop") {
            None => Vec::new(),
            Some(list) => {
                let mut out = Vec::new();
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if let Ok(q) = item.parse::<Qop>() {
                        if !out.contains(&q) {
                            out.push(q);
                        }
                    }
                }
                if out.is_empty() {
                    return Err(HeaderError::UnsupportedQop(list));
                }
                out
            }
        };
        Ok(Self {
            realm,
            domain: m.take("domain"),
            nonce,
            opaque: m.take("opaque"),
            stale,
            algorithm: m.algorithm()?,
            qop,
        })
    }

    /// The algorithm in effect (MD5 when absent, RFC 7616 3.3).
    pub fn effective_algorithm(&self) -> Algorithm {
        self.algorithm.unwrap_or(Algorithm::Md5)
    }

    /// Formats the `WWW-Authenticate` value. Fails only if a string field
    /// contains a control character.
    pub fn to_header_value(&self) -> Result<String, HeaderError> {
        let mut w = Writer::new("Digest ");
        w.quoted("realm", &self.realm)?;
        if let Some(d) = &self.domain {
            w.quoted("domain", d)?;
        }
        w.quoted("nonce", &self.nonce)?;
        if let Some(o) = &self.opaque {
            w.quoted("opaque", o)?;
        }
        if self.stale {
            w.token("stale", "true");
        }
        if let Some(a) = self.algorithm {
            w.token("algorithm", a.as_str());
        }
        if !self.qop.is_empty() {
            let list: Vec<&str> = self.qop.iter().map(|q| q.as_str()).collect();
            w.quoted("qop", &list.join(","))?;
        }
        Ok(w.finish())
    }
}

impl Authorization {
    /// The first request of Ub bootstrapping (TS 24.109 A.3, Table A.3-1):
    /// `username`, `realm`, `uri` set, `nonce` and `response` empty.
    pub fn initial(username: &str, realm: &str, uri: &str) -> Self {
        Self {
            username: username.to_owned(),
            realm: realm.to_owned(),
            nonce: String::new(),
            uri: uri.to_owned(),
            response: String::new(),
            algorithm: None,
            cnonce: None,
            opaque: None,
            qop: None,
            nc: None,
            auts: None,
        }
    }

    /// Parses an `Authorization` value holding Digest credentials.
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut m = ParamMap(parse_digest(value)?);
        let a = Self {
            username: m.required("username")?,
            realm: m.required("realm")?,
            nonce: m.required("nonce")?,
            uri: m.required("uri")?,
            response: m.required("response")?,
            algorithm: m.algorithm()?,
            cnonce: m.take("cnonce"),
            opaque: m.take("opaque"),
            qop: m.single_qop()?,
            nc: m.nc()?,
            auts: m.take("auts"),
        };
        if a.qop.is_some() {
            if a.cnonce.is_none() {
                return Err(HeaderError::Missing("cnonce"));
            }
            if a.nc.is_none() {
                return Err(HeaderError::Missing("nc"));
            }
        }
        Ok(a)
    }

    /// The algorithm in effect (MD5 when absent).
    pub fn effective_algorithm(&self) -> Algorithm {
        self.algorithm.unwrap_or(Algorithm::Md5)
    }

    /// Formats the `Authorization` value. Fails only if a string field
    /// contains a control character.
    pub fn to_header_value(&self) -> Result<String, HeaderError> {
        let mut w = Writer::new("Digest ");
        w.quoted("username", &self.username)?;
        w.quoted("realm", &self.realm)?;
        w.quoted("nonce", &self.nonce)?;
        w.quoted("uri", &self.uri)?;
        if let Some(a) = self.algorithm {
            w.token("algorithm", a.as_str());
        }
        w.quoted("response", &self.response)?;
        if let Some(q) = self.qop {
            w.token("qop", q.as_str());
        }
        if let Some(nc) = self.nc {
            w.token("nc", core::str::from_utf8(&nc_hex(nc)).unwrap_or_default());
        }
        if let Some(c) = &self.cnonce {
            w.quoted("cnonce", c)?;
        }
        if let Some(o) = &self.opaque {
            w.quoted("opaque", o)?;
        }
        if let Some(a) = &self.auts {
            w.quoted("auts", a)?;
        }
        Ok(w.finish())
    }
}

impl AuthenticationInfo {
    /// Parses an `Authentication-Info` value (a bare parameter list).
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut cur = Cursor::new(value);
        let mut m = ParamMap(parse_params(&mut cur)?);
        Ok(Self {
            nextnonce: m.take("nextnonce"),
            qop: m.single_qop()?,
            rspauth: m.take("rspauth"),
            cnonce: m.take("cnonce"),
            nc: m.nc()?,
        })
    }

    /// Formats the `Authentication-Info` value. Fails only if a string field
    /// contains a control character.
    pub fn to_header_value(&self) -> Result<String, HeaderError> {
        let mut w = Writer::new("");
        if let Some(n) = &self.nextnonce {
            w.quoted("nextnonce", n)?;
        }
        if let Some(q) = self.qop {
            w.token("qop", q.as_str());
        }
        if let Some(r) = &self.rspauth {
            w.quoted("rspauth", r)?;
        }
        if let Some(c) = &self.cnonce {
            w.quoted("cnonce", c)?;
        }
        if let Some(nc) = self.nc {
            w.token("nc", core::str::from_utf8(&nc_hex(nc)).unwrap_or_default());
        }
        Ok(w.finish())
    }
}

// ---------------------------------------------------------------------------
// Formatting

/// The initial capacity of a header being written ([`Writer`]).
const WRITER_CAPACITY: usize = 512;

struct Writer {
    out: String,
    first: bool,
}

impl Writer {
    fn new(prefix: &str) -> Self {
        // Room for a whole Digest header (an `Authorization` with a
        // B-TID, the nonces and a SHA-256 response is about 400 bytes):
        // written without growing.
        let mut out = String::with_capacity(WRITER_CAPACITY);
        out.push_str(prefix);
        Self { out, first: true }
    }

    fn sep(&mut self) {
        if !self.first {
            self.out.push_str(", ");
        }
        self.first = false;
    }

    fn token(&mut self, name: &str, value: &str) {
        self.sep();
        let _ = write!(self.out, "{name}={value}");
    }

    fn quoted(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        if value.bytes().any(is_ctl) {
            return Err(ctl_error(name));
        }
        self.sep();
        self.out.push_str(name);
        self.out.push_str("=\"");
        // Escaped in runs (RFC 9110 5.6.4 quoted-pair): most values have
        // nothing to escape and are copied whole.
        let mut run = 0;
        for (i, b) in value.bytes().enumerate() {
            if b == b'"' || b == b'\\' {
                self.out.push_str(&value[run..i]);
                self.out.push('\\');
                run = i;
            }
        }
        self.out.push_str(&value[run..]);
        self.out.push('"');
        Ok(())
    }

    fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rfc2617_challenge() {
        let c = Challenge::parse(
            "Digest\n realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""
                .replace('\n', "")
                .as_str(),
        )
        .unwrap();
        assert_eq!(c.realm, "testrealm@host.com");
        assert_eq!(c.qop, vec![Qop::Auth, Qop::AuthInt]);
        assert_eq!(
            c.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        assert!(!c.stale);
        assert_eq!(c.effective_algorithm(), Algorithm::Md5);
    }

    #[test]
    fn parse_ub_challenge_case_insensitive() {
        let c = Challenge::parse(
            "digest REALM=\"bsf.home1.net\",NONCE=\"a/b+c==\" , Algorithm=akav1-md5, QOP=\"auth-int\",stale=TRUE,,",
        )
        .unwrap();
        assert_eq!(c.algorithm, Some(Algorithm::AkaV1Md5));
        assert_eq!(c.nonce, "a/b+c==");
        assert!(c.stale);
        assert_eq!(c.qop, vec![Qop::AuthInt]);
    }

    #[test]
    fn parse_authorization_with_escapes_and_auts() {
        let a = Authorization::parse(
            r#"Digest username="us\"er\\1", realm="r", nonce=n, uri="/", response="", qop=auth-int, nc=0000000A, cnonce="c", auts="AAAA""#,
        )
        .unwrap();
        assert_eq!(a.username, "us\"er\\1");
        assert_eq!(a.nonce, "n");
        assert_eq!(a.nc, Some(10));
        assert_eq!(a.qop, Some(Qop::AuthInt));
        assert_eq!(a.auts.as_deref(), Some("AAAA"));
        let again = Authorization::parse(&a.to_header_value().unwrap()).unwrap();
        assert_eq!(again, a);
    }

    /// Quoted values are copied in runs between escapes: escapes at the
    /// start, the end, side by side, and non-ASCII text survive a round
    /// trip.
    #[test]
    fn quoted_values_round_trip_with_escapes_anywhere() {
        for value in [
            "",
            "plain",
            "\"",
            "\\",
            "\"start",
            "end\\",
            "a\\\"b\"\"c",
            "B-TID é \"ü\"",
        ] {
            let mut a = Authorization::initial(value, "r", "/");
            a.nonce = format!("{value}{value}");
            let v = a.to_header_value().unwrap();
            assert_eq!(Authorization::parse(&v).unwrap(), a, "{v}");
        }
        assert_eq!(
            Authorization::parse(r#"Digest username="a\"#),
            Err(HeaderError::UnterminatedQuote {
                param: "username".into()
            })
        );
    }

    #[test]
    fn initial_ub_request_round_trips() {
        let a = Authorization::initial("user1_private@home1.net", "bsf.home1.net", "/");
        let v = a.to_header_value().unwrap();
        assert_eq!(
            v,
            r#"Digest username="user1_private@home1.net", realm="bsf.home1.net", nonce="", uri="/", response="""#
        );
        assert_eq!(Authorization::parse(&v).unwrap(), a);
    }

    #[test]
    fn errors_name_the_parameter() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(HeaderError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(HeaderError::Missing("realm"))
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"x"),
            Err(HeaderError::UnterminatedQuote {
                param: "realm".into()
            })
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"x\", Realm=\"y\", nonce=n"),
            Err(HeaderError::Duplicate {
                param: "realm".into()
            })
        );
        assert!(matches!(
            Challenge::parse("Digest realm=x, nonce=n, stale=maybe"),
            Err(HeaderError::InvalidValue { param, .. }) if param == "stale"
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=x, nonce=n, algorithm=SHA-1"),
            Err(HeaderError::UnsupportedAlgorithm(a)) if a == "SHA-1"
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=x, nonce=n, qop=\"auth-conf\""),
            Err(HeaderError::UnsupportedQop(_))
        ));
        assert!(matches!(
            Authorization::parse("Digest username=u, realm=r, nonce=n, uri=/, response=x, qop=auth, cnonce=c, nc=1"),
            Err(HeaderError::InvalidValue { param, .. }) if param == "nc"
        ));
        assert_eq!(
            Authorization::parse(
                "Digest username=u, realm=r, nonce=n, uri=/, response=x, qop=auth, nc=00000001"
            ),
            Err(HeaderError::Missing("cnonce"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm x"),
            Err(HeaderError::Syntax { param: Some(p), .. }) if p == "realm"
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"a\" \"b\""),
            Err(HeaderError::Syntax { param: Some(p), .. }) if p == "realm"
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"a\r\nX: y\""),
            Err(HeaderError::InvalidValue { param, .. }) if param == "realm"
        ));
        assert!(matches!(
            Challenge::parse("Digest=x"),
            Err(HeaderError::Syntax { .. })
        ));
        assert!(matches!(Challenge::parse(""), Err(HeaderError::NotDigest)));
    }

    #[test]
    fn formatting_rejects_control_characters() {
        let mut a = Authorization::initial("u", "r", "/");
        a.username = "evil\r\nX-Injected: 1".into();
        assert!(matches!(
            a.to_header_value(),
            Err(HeaderError::InvalidValue { param, .. }) if param == "username"
        ));
    }

    #[test]
    fn authentication_info_round_trip() {
        let info = AuthenticationInfo {
            nextnonce: Some("nn".into()),
            qop: Some(Qop::AuthInt),
            rspauth: Some("abcdef".into()),
            cnonce: Some("c\"n".into()),
            nc: Some(0xffff_ffff),
        };
        let v = info.to_header_value().unwrap();
        assert_eq!(
            v,
            r#"nextnonce="nn", qop=auth-int, rspauth="abcdef", cnonce="c\"n", nc=ffffffff"#
        );
        assert_eq!(AuthenticationInfo::parse(&v).unwrap(), info);
        assert_eq!(
            AuthenticationInfo::parse("").unwrap(),
            AuthenticationInfo::default()
        );
    }

    #[test]
    fn unknown_parameters_are_ignored_and_utf8_survives() {
        let c =
            Challenge::parse("Digest realm=\"réalm ü\\é\", nonce=n, charset=UTF-8, userhash=false")
                .unwrap();
        assert_eq!(c.realm, "réalm üé");
    }
}
