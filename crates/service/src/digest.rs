//! The HTTP side of a Digest server (RFC 7616, RFC 3310; PROFILE.md
//! sections 3 and 4), shared by the BSF (Ub) and the BM-SC (Ua): reading the
//! `Authorization` header into a [`gba::digest::Authorization`], the
//! request target that the response covers, and the header values of the
//! challenges and `Authentication-Info`. The protocol itself (nonces,
//! verification) is the sans-IO [`gba::digest`].

use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::Response;
use gba::digest::{AuthenticationInfo, Authorization, Challenge, HeaderError};

/// The `Authentication-Info` header (RFC 7615).
pub const AUTHENTICATION_INFO: HeaderName = HeaderName::from_static("authentication-info");

/// Why an `Authorization` header was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    /// The value holds bytes other than visible ASCII (RFC 9110 5.5).
    #[error("Authorization is not visible ASCII")]
    NotAscii,
    /// Not a Digest `Authorization` (RFC 7616 3.4).
    #[error("malformed Digest Authorization: {0}")]
    Malformed(#[from] HeaderError),
}

/// The Digest credentials of a request: `Ok(None)` without an
/// `Authorization` header.
pub fn authorization(headers: &HeaderMap) -> Result<Option<Authorization>, AuthorizationError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| AuthorizationError::NotAscii)?;
    Ok(Some(Authorization::parse(text)?))
}

/// The request target as the client put it in the Digest `uri` parameter
/// (RFC 7616 3.4: the request-target of the request line, path and query).
pub fn request_target(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// Adds one `WWW-Authenticate` header per challenge (one per algorithm,
/// RFC 7616 3.7); a challenge that cannot be written is left out.
pub fn append_challenges<'a>(
    response: &mut Response,
    challenges: impl IntoIterator<Item = &'a Challenge>,
) {
    for ch in challenges {
        if let Some(v) = header_value(ch.to_header_value()) {
            response.headers_mut().append(WWW_AUTHENTICATE, v);
        }
    }
}

/// The `Authentication-Info` header value, `None` if it cannot be written.
pub fn authentication_info(info: &AuthenticationInfo) -> Option<HeaderValue> {
    header_value(info.to_header_value())
}

/// A written header as a header value (`None` on either error).
pub fn header_value(written: Result<String, HeaderError>) -> Option<HeaderValue> {
    written.ok().and_then(|h| HeaderValue::from_str(&h).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(authorization(&h), Ok(None));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static(
                "Digest username=\"u\", realm=\"r\", nonce=\"\", uri=\"/\", response=\"\"",
            ),
        );
        let a = authorization(&h).unwrap().unwrap();
        assert_eq!(a.username, "u");
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic dTpw"));
        assert!(matches!(
            authorization(&h),
            Err(AuthorizationError::Malformed(_))
        ));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Digest username=\"\xe9\"").unwrap(),
        );
        assert_eq!(authorization(&h), Err(AuthorizationError::NotAscii));
        assert_eq!(
            AuthorizationError::NotAscii.to_string(),
            "Authorization is not visible ASCII"
        );
    }

    #[test]
    fn targets() {
        let u: Uri = "/keymanagement?requesttype=register".parse().unwrap();
        assert_eq!(request_target(&u), "/keymanagement?requesttype=register");
        let u: Uri = "/".parse().unwrap();
        assert_eq!(request_target(&u), "/");
    }
}
