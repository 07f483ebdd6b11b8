//! The subset of RFC 8941 Structured Field Values that RFC 9421 and RFC 9530 need:
//! dictionaries whose members are items or inner lists, with parameters; bare items
//! of type integer, string, token, byte sequence and boolean (decimals are refused).

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard alphabet, padding optional on decode (RFC 8941 §4.2.7 lets parsers be lenient).
pub(crate) const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    Integer(i64),
    String(String),
    Token(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

pub(crate) type Params = Vec<(String, Item)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Member {
    Item(Item, Params),
    Inner(Vec<(Item, Params)>, Params),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

type R<T> = Result<T, String>;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> R<String> {
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => {}
            _ => return Err(format!("expected a key at offset {}", self.i)),
        }
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn params(&mut self) -> R<Params> {
        let mut out: Params = Vec::new();
        while self.peek() == Some(b';') {
            self.i += 1;
            self.skip_sp();
            let k = self.key()?;
            let v = if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare_item()?
            } else {
                Item::Bool(true)
            };
            if let Some(slot) = out.iter_mut().find(|(ek, _)| *ek == k) {
                slot.1 = v;
            } else {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    fn bare_item(&mut self) -> R<Item> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b'"') => self.string(),
            Some(b':') => self.bytes(),
            Some(b'?') => {
                self.i += 1;
                let v = match self.peek() {
                    Some(b'1') => true,
                    Some(b'0') => false,
                    _ => return Err("bad boolean".into()),
                };
                self.i += 1;
                Ok(Item::Bool(v))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if is_tchar(c) || c == b':' || c == b'/' {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                Ok(Item::Token(String::from_utf8_lossy(&self.s[start..self.i]).into_owned()))
            }
            _ => Err(format!("expected an item at offset {}", self.i)),
        }
    }

    fn integer(&mut self) -> R<Item> {
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = &self.s[start..self.i];
        if digits.is_empty() || digits.len() > 15 {
            return Err("bad integer".into());
        }
        if self.peek() == Some(b'.') {
            return Err("decimals are not supported".into());
        }
        let v: i64 = std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).ok_or("bad integer")?;
        Ok(Item::Integer(if neg { -v } else { v }))
    }

    fn string(&mut self) -> R<Item> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return Ok(Item::String(out)),
                b'\\' => match self.peek() {
                    Some(e @ (b'"' | b'\\')) => {
                        self.i += 1;
                        out.push(e as char);
                    }
                    _ => return Err("bad escape in string".into()),
                },
                0x20..=0x7e => out.push(c as char),
                _ => return Err("non-printable character in string".into()),
            }
        }
    }

    fn bytes(&mut self) -> R<Item> {
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b':' {
                break;
            }
            if !(c.is_ascii_alphanumeric() || b"+/=".contains(&c)) {
                return Err("bad byte sequence".into());
            }
            self.i += 1;
        }
        if self.peek() != Some(b':') {
            return Err("unterminated byte sequence".into());
        }
        let raw = &self.s[start..self.i];
        self.i += 1;
        B64.decode(raw).map(Item::Bytes).map_err(|_| "bad base64 in byte sequence".into())
    }

    fn member(&mut self) -> R<Member> {
        if self.peek() == Some(b'(') {
            self.i += 1;
            let mut items = Vec::new();
            loop {
                self.skip_sp();
                if self.peek() == Some(b')') {
                    self.i += 1;
                    let p = self.params()?;
                    return Ok(Member::Inner(items, p));
                }
                let it = self.bare_item()?;
                let p = self.params()?;
                items.push((it, p));
                match self.peek() {
                    Some(b' ' | b')') => {}
                    _ => return Err("bad inner list".into()),
                }
            }
        }
        let it = self.bare_item()?;
        let p = self.params()?;
        Ok(Member::Item(it, p))
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Parse a structured-field dictionary (RFC 8941 §4.2.2). Duplicate keys: last wins.
pub(crate) fn parse_dictionary(input: &str) -> R<Vec<(String, Member)>> {
    let mut p = Parser { s: input.as_bytes(), i: 0 };
    let mut out: Vec<(String, Member)> = Vec::new();
    p.skip_sp();
    if p.peek().is_none() {
        return Err("empty dictionary".into());
    }
    loop {
        let k = p.key()?;
        let m = if p.peek() == Some(b'=') {
            p.i += 1;
            p.member()?
        } else {
            Member::Item(Item::Bool(true), p.params()?)
        };
        if let Some(slot) = out.iter_mut().find(|(ek, _)| *ek == k) {
            slot.1 = m;
        } else {
            out.push((k, m));
        }
        p.skip_ows();
        match p.peek() {
            None => return Ok(out),
            Some(b',') => {
                p.i += 1;
                p.skip_ows();
                if p.peek().is_none() {
                    return Err("trailing comma in dictionary".into());
                }
            }
            _ => return Err(format!("unexpected character at offset {}", p.i)),
        }
    }
}

/// Serialize an sf-string; fails on characters outside printable ASCII.
pub(crate) fn ser_string(s: &str) -> R<String> {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => return Err("string holds a character that is not printable ASCII".into()),
        }
    }
    out.push('"');
    Ok(out)
}

pub(crate) fn ser_item(it: &Item) -> R<String> {
    Ok(match it {
        Item::Integer(i) => {
            if i.unsigned_abs() > 999_999_999_999_999 {
                return Err("integer out of range".into());
            }
            i.to_string()
        }
        Item::String(s) => ser_string(s)?,
        Item::Token(t) => t.clone(),
        Item::Bytes(b) => format!(":{}:", B64.encode(b)),
        Item::Bool(true) => "?1".into(),
        Item::Bool(false) => "?0".into(),
    })
}

pub(crate) fn ser_params(params: &Params) -> R<String> {
    let mut out = String::new();
    for (k, v) in params {
        out.push(';');
        out.push_str(k);
        if *v != Item::Bool(true) {
            out.push('=');
            out.push_str(&ser_item(v)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signature_input() {
        let d =
            parse_dictionary(r#"sig1=("@method" "date");created=1618884473;keyid="k", sig2=("a");alg="hmac-sha256""#)
                .unwrap();
        assert_eq!(d.len(), 2);
        let Member::Inner(items, params) = &d[0].1 else { panic!() };
        assert_eq!(items[0].0, Item::String("@method".into()));
        assert_eq!(params[0], ("created".into(), Item::Integer(1618884473)));
        assert_eq!(params[1], ("keyid".into(), Item::String("k".into())));
    }

    #[test]
    fn parses_bytes_and_rejects_junk() {
        let d = parse_dictionary("sha-256=:AAEC:, sha-512=:AA==:").unwrap();
        assert_eq!(d[0].1, Member::Item(Item::Bytes(vec![0, 1, 2]), vec![]));
        assert!(parse_dictionary("sig1=(\"a\"").is_err());
        assert!(parse_dictionary("sig1=:!!:").is_err());
        assert!(parse_dictionary("Sig1=1").is_err());
        assert!(parse_dictionary("a=1,").is_err());
        assert!(parse_dictionary("a=1.5").is_err());
        assert!(parse_dictionary("").is_err());
    }

    #[test]
    fn string_escaping_round_trips() {
        let s = ser_string(r#"a"b\c"#).unwrap();
        assert_eq!(s, r#""a\"b\\c""#);
        let d = parse_dictionary(&format!("k={s}")).unwrap();
        assert_eq!(d[0].1, Member::Item(Item::String(r#"a"b\c"#.into()), vec![]));
        assert!(ser_string("é").is_err());
    }
}
