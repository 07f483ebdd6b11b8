//! Repository names and tags, checked against the distribution-spec 1.1 grammar:
//!
//! ```text
//! name      [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
//! tag       [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//! ```
//!
//! A name that passes can never contain `..`, an absolute path or an empty component, so it
//! is safe to use as a relative path under the store's root.

/// Longest repository name accepted (distribution's limit, host name included, is 255).
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is {0} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong(usize),
    #[error(
        "repository name {0:?} does not match the distribution-spec grammar \
         (lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/')"
    )]
    Invalid(String),
    #[error("tag {0:?} does not match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag(String),
}

pub fn validate_repository(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.split('/').all(valid_component) { Ok(()) } else { Err(NameError::Invalid(name.to_string())) }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        // one run of alphanumerics
        let start = i;
        while i < b.len() && is_alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // one separator
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

pub fn validate_tag(tag: &str) -> Result<(), NameError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..].iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
    if ok { Ok(()) } else { Err(NameError::InvalidTag(tag.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for n in ["a", "acme/plugin", "a.b/c_d/e__f/g-h/i---j", "0/1/2", "library/ubuntu"] {
            assert_eq!(validate_repository(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn rejects_names_outside_grammar() {
        for n in ["..", "a/../b", "/abs", "a//b", "A", "a/", "a_", "_a", "a___b", "a.-b", "a b", "a/.b"] {
            assert!(validate_repository(n).is_err(), "{n}");
        }
        assert_eq!(validate_repository(""), Err(NameError::Empty));
        assert_eq!(validate_repository(&"a".repeat(256)), Err(NameError::TooLong(256)));
    }

    #[test]
    fn tags() {
        assert!(validate_tag("v1.0.0-rc_1").is_ok());
        assert!(validate_tag("_x").is_ok());
        assert!(validate_tag(&"a".repeat(128)).is_ok());
        for t in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(validate_tag(t).is_err(), "{t}");
        }
    }
}
