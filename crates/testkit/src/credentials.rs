//! The one user the private test registries accept, in both of their auth modes (htpasswd
//! and bearer tokens). Its own module so that `registry` and `token_auth` both use it
//! without importing each other.

/// User name accepted by [`crate::Registry::start_with_basic_auth`] and the token service.
pub const TEST_USER: &str = "tester";
/// Password accepted by [`crate::Registry::start_with_basic_auth`] and the token service.
pub const TEST_PASSWORD: &str = "swarm-secret";

/// An htpasswd line for [`TEST_USER`], bcrypt-hashed now (cost 4: fast, and
/// distribution accepts only bcrypt entries).
pub(crate) fn htpasswd_line() -> String {
    let hash = bcrypt::hash(TEST_PASSWORD, 4).expect("bcrypt hash");
    format!("{TEST_USER}:{hash}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_line_verifies() {
        let line = htpasswd_line();
        let (user, hash) = line.trim().split_once(':').unwrap();
        assert_eq!(user, TEST_USER);
        assert!(bcrypt::verify(TEST_PASSWORD, hash).unwrap());
    }
}
