//! HTTP basic authentication: base64, the `Authorization` header, and a constant-time
//! comparison of credentials.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Decodes standard base64 (padding optional). `None` on any invalid character.
pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let input = input.trim_end_matches('=');
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in input.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The value of an `Authorization` header for basic authentication.
pub fn basic_header(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{username}:{password}").as_bytes())
    )
}

/// Compares two byte strings in time that depends only on their lengths, not on where they
/// differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    // Compare every byte of `a` against `b` (cycled when shorter) so the loop length does
    // not depend on `b`.
    for (i, x) in a.iter().enumerate() {
        let y = if b.is_empty() { 0 } else { b[i % b.len()] };
        diff |= x ^ y;
    }
    diff == 0
}

/// Precomputed expected credentials of an endpoint with basic security.
#[derive(Clone)]
pub struct BasicCredentials {
    /// `username:password`, the decoded form of a valid header.
    expected: Vec<u8>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicCredentials(..)")
    }
}

impl BasicCredentials {
    /// Credentials that accept exactly this user name and password.
    pub fn new(username: &str, password: &str) -> Self {
        BasicCredentials {
            expected: format!("{username}:{password}").into_bytes(),
        }
    }

    /// True when `header` (the `Authorization` value) carries these credentials. The
    /// comparison of the decoded credentials runs in constant time.
    pub fn check(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header else { return false };
        let Ok(h) = std::str::from_utf8(h) else {
            return false;
        };
        let h = h.trim();
        let Some((scheme, rest)) = h.split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Some(decoded) = base64_decode(rest.trim()) else {
            return false;
        };
        constant_time_eq(&decoded, &self.expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"user:password"), "dXNlcjpwYXNzd29yZA==");
        for s in ["", "a", "ab", "abc", "abcd", "user:pa:ss"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn basic_credentials_accept_only_the_right_pair() {
        let c = BasicCredentials::new("user", "password");
        assert!(c.check(Some(basic_header("user", "password").as_bytes())));
        assert!(c.check(Some(b"basic dXNlcjpwYXNzd29yZA==")));
        assert!(!c.check(Some(basic_header("user", "passwore").as_bytes())));
        assert!(!c.check(Some(basic_header("user", "password1").as_bytes())));
        assert!(!c.check(Some(basic_header("use", "password").as_bytes())));
        assert!(!c.check(Some(b"Bearer abc")));
        assert!(!c.check(Some(b"Basic !!!")));
        assert!(!c.check(None));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
