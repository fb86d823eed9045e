//! Certificate client assertions: an RS256-signed JWT naming the application, with the certificate's
//! SHA-256 thumbprint in `x5t#S256`
//! (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>).
//!
//! Signing uses aws-lc-rs, the crypto provider rustls already runs on in this binary: no second crypto
//! library, no ring, and constant-time RSA (the pure-Rust `rsa` crate carries an unfixed timing advisory,
//! RUSTSEC-2023-0071).

use std::fmt;

use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Lifetime of an assertion: Entra accepts up to 10 minutes of validity; each request signs a new one.
const ASSERTION_LIFETIME_SECS: i64 = 600;

/// Why a PEM could not be used as a client certificate. Messages never quote the PEM.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CertificateError {
    #[error("it holds no certificate: put the PEM certificate (-----BEGIN CERTIFICATE-----) and its private key in it")]
    NoCertificate,
    #[error("it holds no private key: put the PEM private key (PKCS#8 or PKCS#1 RSA) next to the certificate")]
    NoPrivateKey,
    #[error("its private key is not an RSA key lockstep can sign with (RSA 2048 to 8192 bits, PKCS#8 or PKCS#1)")]
    UnsupportedKey,
}

/// An application certificate with its private key. `Debug` shows only the thumbprint.
pub struct CertificateCredential {
    key: RsaKeyPair,
    /// base64url(SHA-256(leaf certificate DER)), the `x5t#S256` header.
    thumbprint_s256: String,
    /// Hex SHA-256 over certificate and key, for cache keys.
    fingerprint: String,
}

impl fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t#S256", &self.thumbprint_s256)
            .finish_non_exhaustive()
    }
}

impl CertificateCredential {
    /// From a PEM bundle holding the certificate (the first one is the leaf) and its private key, the
    /// format `az ad sp create-for-rbac --create-cert` writes and `AZURE_CLIENT_CERTIFICATE_PATH` names.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertificateError> {
        let leaf = CertificateDer::pem_slice_iter(pem)
            .find_map(Result::ok)
            .ok_or(CertificateError::NoCertificate)?;
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| CertificateError::NoPrivateKey)?;
        let pair = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(CertificateError::UnsupportedKey),
        }
        .map_err(|_| CertificateError::UnsupportedKey)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
        let mut material = leaf.as_ref().to_vec();
        material.extend_from_slice(key.secret_der());
        Ok(Self {
            key: pair,
            thumbprint_s256: b64url(digest.as_ref()),
            fingerprint: sha256_hex(&material),
        })
    }

    pub fn thumbprint_s256(&self) -> &str {
        &self.thumbprint_s256
    }

    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A fresh assertion for `client_id` towards `token_endpoint` (the `aud`), valid from `now_unix`.
    pub fn assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now_unix: i64,
    ) -> Result<String, CertificateError> {
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t#S256": self.thumbprint_s256,
        });
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| CertificateError::UnsupportedKey)?;
        let claims = serde_json::json!({
            "aud": token_endpoint,
            "iss": client_id,
            "sub": client_id,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "nbf": now_unix,
            "iat": now_unix,
            "exp": now_unix + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| CertificateError::UnsupportedKey)?;
        Ok(format!("{signing_input}.{}", b64url(&signature)))
    }
}

/// Lower-case hex SHA-256, for cache keys that must not hold secret material itself.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    /// A throw-away RSA 2048 key and a self-signed certificate for it, generated for these tests only
    /// (`openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=lockstep-test -days 36500`).
    pub(crate) const TEST_PEM: &str = include_str!("testdata/client-cert.pem");

    fn decode(part: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap()
    }

    #[test]
    fn assertions_are_signed_rs256_with_the_thumbprint() {
        let cred = CertificateCredential::from_pem(TEST_PEM.as_bytes()).unwrap();
        let jwt = cred
            .assertion(
                "client-1",
                "https://login.example/t/oauth2/v2.0/token",
                1_700_000_000,
            )
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t#S256"], cred.thumbprint_s256());
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        assert_eq!(claims["exp"], 1_700_000_600);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);

        // The thumbprint is SHA-256 of the certificate, and the signature verifies with its public key.
        let leaf = CertificateDer::pem_slice_iter(TEST_PEM.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
        assert_eq!(cred.thumbprint_s256(), b64url(digest.as_ref()));
        let public = aws_lc_rs::signature::KeyPair::public_key(&cred.key);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public.as_ref())
            .verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &decode(parts[2]),
            )
            .unwrap();
        // Two assertions never share a jti.
        let again = cred.assertion("client-1", "aud", 1).unwrap();
        assert_ne!(again.split('.').nth(1), Some(parts[1]));
    }

    #[test]
    fn incomplete_pems_say_what_is_missing() {
        let cert_only: String = TEST_PEM
            .split_inclusive('\n')
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .collect();
        assert_eq!(
            CertificateCredential::from_pem(cert_only.as_bytes()).unwrap_err(),
            CertificateError::NoPrivateKey
        );
        assert_eq!(
            CertificateCredential::from_pem(b"garbage").unwrap_err(),
            CertificateError::NoCertificate
        );
        let cred = CertificateCredential::from_pem(TEST_PEM.as_bytes()).unwrap();
        assert!(!format!("{cred:?}").contains("PRIVATE"));
    }
}
