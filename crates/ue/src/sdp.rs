//! The SDP file the UE writes for the plain RTP output of a streaming
//! session, so that a standard player can read the decrypted stream:
//! `ffplay -protocol_whitelist file,udp,rtp -i news-video.sdp` or
//! `vlc news-video.sdp`.

use std::net::SocketAddr;

/// The SDP text (RFC 4566) describing plain RTP on `output` with payload
/// type `pt` and `a=rtpmap` encoding `encoding` (e.g. `MP2T/90000`). The
/// connection address is the output's IP; an unspecified address becomes
/// 127.0.0.1.
pub fn sdp(
    session: &str,
    service: &str,
    media: &str,
    output: SocketAddr,
    pt: u8,
    encoding: &str,
) -> String {
    let (family, ip) = match output.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => ("IP4", "127.0.0.1".to_string()),
        std::net::IpAddr::V4(v4) => ("IP4", v4.to_string()),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => ("IP6", "::1".to_string()),
        std::net::IpAddr::V6(v6) => ("IP6", v6.to_string()),
    };
    let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    format!(
        "v=0\r\n\
         o=- 0 0 IN {family} {ip}\r\n\
         s={} ({}), decrypted by mbms ue\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m={media} {} RTP/AVP {pt}\r\n\
         a=rtpmap:{pt} {encoding}\r\n\
         a=recvonly\r\n",
        clean(session),
        clean(service),
        output.port(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_plain_output() {
        let s = sdp(
            "video",
            "urn:mbms:service:news",
            "video",
            "127.0.0.1:6004".parse().unwrap(),
            33,
            "MP2T/90000",
        );
        assert!(s.contains("m=video 6004 RTP/AVP 33\r\n"));
        assert!(s.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(s.contains("a=rtpmap:33 MP2T/90000\r\n"));
        let s = sdp(
            "a",
            "b\nx",
            "audio",
            "0.0.0.0:5000".parse().unwrap(),
            96,
            "opus/48000/2",
        );
        assert!(s.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(s.contains("s=a (bx)"));
    }
}
