//! The admin token: 32 random bytes, as 64 hexadecimal digits, made anew at every start.
//!
//! It is kept in a [`Secret`], so it prints as `***` through `Debug` and `Display` and no log
//! line can carry it; the only copies are the admin file (owner-only) and the requests that
//! present it. A presented token is compared in constant time.

use std::io::Read;

use crate::secret::Secret;

/// Bytes of randomness in a token.
const BYTES: usize = 32;

/// The token a request must present as `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Token(Secret);

impl Token {
    /// A new token from the operating system's randomness (`/dev/urandom`).
    pub fn generate() -> std::io::Result<Token> {
        let mut bytes = [0u8; BYTES];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(Token(Secret::new(hex::encode(bytes))))
    }

    /// A token read back (from the admin file, a token file or the environment); surrounding
    /// whitespace is dropped.
    pub fn from_text(text: &str) -> Token {
        Token(Secret::new(text.trim()))
    }

    /// The token itself: for the admin file and the `Authorization` header only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// Whether `presented` is this token. Takes the same time wherever the two differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = self.0.expose().as_bytes();
        if ours.len() != presented.len() {
            // The length is no secret: every token has 64 digits.
            return false;
        }
        let diff = ours
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// Whether an `Authorization` header's value presents this token (`Bearer <token>`).
    pub fn authorizes(&self, header: Option<&[u8]>) -> bool {
        header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .is_some_and(|t| self.matches(t.trim_ascii()))
    }
}

/// The shortest token [`from_file`] takes.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The token in `path` (`[admin] token-file`), trimmed; refused when shorter than
/// [`MIN_TOKEN_CHARS`].
pub fn from_file(path: &std::path::Path) -> Result<Token, super::AdminError> {
    let text = std::fs::read_to_string(path).map_err(|source| super::AdminError::File {
        path: path.to_owned(),
        source,
    })?;
    let text = text.trim();
    if text.chars().count() < MIN_TOKEN_CHARS {
        return Err(super::AdminError::Usage(format!(
            "`[admin] token-file` {}: the token is shorter than {MIN_TOKEN_CHARS} characters",
            path.display()
        )));
    }
    Ok(Token::from_text(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_64_hex_digits_and_never_the_same_twice() {
        let (a, b) = (Token::generate().unwrap(), Token::generate().unwrap());
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn only_the_same_token_matches() {
        let t = Token::generate().unwrap();
        assert!(t.matches(t.expose().as_bytes()));
        let mut other = t.expose().as_bytes().to_vec();
        other[63] ^= 1;
        assert!(!t.matches(&other));
        assert!(!t.matches(&other[..63]));
        assert!(!t.matches(b""));
    }

    #[test]
    fn only_a_bearer_header_with_the_token_authorizes() {
        let t = Token::generate().unwrap();
        let header = format!("Bearer {}", t.expose());
        assert!(t.authorizes(Some(header.as_bytes())));
        assert!(!t.authorizes(Some(t.expose().as_bytes())));
        assert!(!t.authorizes(Some(b"Bearer ")));
        assert!(!t.authorizes(None));
    }

    #[test]
    fn a_token_never_prints() {
        let t = Token::generate().unwrap();
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
