//! What a request to a REST endpoint looks like to the converter: one JSON object merged from
//! the path parameters, the query string and the body, in that order (later keys win), as
//! upstream does. The body is read by its `Content-Type`:
//!
//! * JSON (`application/json`, `*+json`): an object is merged; of an array the first element;
//!   any other JSON value is stored as `text`. Invalid JSON is a malformed request (400).
//! * `application/x-www-form-urlencoded`: the fields, as strings.
//! * `multipart/form-data`: the text fields (parts without a file name), as strings.
//! * anything else: a JSON object body is merged, otherwise the body is stored as `text`.

use serde_json::{Map, Value as Json};

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body does not match its content type.
    #[error("{0}")]
    Malformed(String),
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set). Invalid escapes are kept.
pub fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Adds `a=1&b=2` pairs to `into`.
pub fn parse_form(s: &str, into: &mut Map<String, Json>) {
    for pair in s.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.insert(
            percent_decode(k, true),
            Json::String(percent_decode(v, true)),
        );
    }
}

/// The value of parameter `name` in a header such as `multipart/form-data; boundary=x`.
fn header_param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from >= hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Adds the text fields of a multipart body to `into`.
fn parse_multipart(
    body: &[u8],
    boundary: &str,
    into: &mut Map<String, Json>,
) -> Result<(), BodyError> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = find(body, delim, 0)
        .ok_or_else(|| BodyError::Malformed("multipart body without its boundary".into()))?;
    loop {
        pos += delim.len();
        if body[pos..].starts_with(b"--") {
            return Ok(());
        }
        let headers_end = find(body, b"\r\n\r\n", pos)
            .ok_or_else(|| BodyError::Malformed("multipart part without headers".into()))?;
        let headers = String::from_utf8_lossy(&body[pos..headers_end]).into_owned();
        let content_start = headers_end + 4;
        let next = find(body, delim, content_start)
            .ok_or_else(|| BodyError::Malformed("unterminated multipart part".into()))?;
        let content_end = next.saturating_sub(2).max(content_start); // strip the CRLF
        let disposition = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or("");
        let name = header_param(disposition, "name");
        let is_file = header_param(disposition, "filename").is_some();
        if let (Some(name), false) = (name, is_file) {
            into.insert(
                name.to_string(),
                Json::String(
                    String::from_utf8_lossy(&body[content_start..content_end]).into_owned(),
                ),
            );
        }
        pos = next;
    }
}

fn merge_json(v: Json, body: &[u8], into: &mut Map<String, Json>) {
    let v = match v {
        Json::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    match v {
        Json::Object(m) => into.extend(m),
        _ => {
            into.insert(
                "text".into(),
                Json::String(String::from_utf8_lossy(body).into_owned()),
            );
        }
    }
}

/// Adds the body's data to `into`, read by `content_type`.
pub fn merge_body(
    content_type: Option<&str>,
    body: &[u8],
    into: &mut Map<String, Json>,
) -> Result<(), BodyError> {
    if body.is_empty() {
        return Ok(());
    }
    let ct = content_type.unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        let v: Json = serde_json::from_slice(body)
            .map_err(|e| BodyError::Malformed(format!("the body is not valid JSON: {e}")))?;
        merge_json(v, body, into);
    } else if mime == "application/x-www-form-urlencoded" {
        let text = std::str::from_utf8(body)
            .map_err(|_| BodyError::Malformed("the form body is not UTF-8".into()))?;
        parse_form(text, into);
    } else if mime == "multipart/form-data" {
        let boundary = header_param(ct, "boundary").ok_or_else(|| {
            BodyError::Malformed("multipart content type without a boundary".into())
        })?;
        parse_multipart(body, boundary, into)?;
    } else {
        match serde_json::from_slice::<Json>(body) {
            Ok(v @ (Json::Object(_) | Json::Array(_))) => merge_json(v, body, into),
            _ => {
                into.insert(
                    "text".into(),
                    Json::String(String::from_utf8_lossy(body).into_owned()),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(ct: Option<&str>, body: &[u8]) -> Result<Json, BodyError> {
        let mut m = Map::new();
        merge_body(ct, body, &mut m).map(|_| Json::Object(m))
    }

    #[test]
    fn bodies_are_read_by_content_type() {
        assert_eq!(
            merged(Some("application/json"), br#"{"a": 1}"#).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            merged(
                Some("application/json; charset=utf-8"),
                br#"[{"a": 1}, {"a": 2}]"#
            )
            .unwrap(),
            json!({"a": 1})
        );
        assert!(merged(Some("application/json"), b"{oops").is_err());
        assert_eq!(
            merged(Some("application/x-www-form-urlencoded"), b"a=1&b=x+y%21").unwrap(),
            json!({"a": "1", "b": "x y!"})
        );
        assert_eq!(
            merged(Some("text/plain"), b"hello").unwrap(),
            json!({"text": "hello"})
        );
        assert_eq!(merged(None, br#"{"t": 2}"#).unwrap(), json!({"t": 2}));
        let mp = b"--XX\r\nContent-Disposition: form-data; name=\"temp\"\r\n\r\n21.5\r\n--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n\r\nBIN\r\n--XX--\r\n";
        assert_eq!(
            merged(Some("multipart/form-data; boundary=XX"), mp).unwrap(),
            json!({"temp": "21.5"})
        );
        assert!(merged(Some("multipart/form-data; boundary=XX"), b"junk").is_err());
        assert!(merged(Some("multipart/form-data"), b"junk").is_err());
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%20b%zz%4", false), "a b%zz%4");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("a+b", true), "a b");
    }
}
