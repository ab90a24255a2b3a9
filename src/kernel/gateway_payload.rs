//! The sealed connection info a kernel sends Enterprise Gateway when it is launched remotely.
//!
//! The contract, as EG's launchers write it and its server reads it (EG's
//! `etc/kernel-launchers/python/scripts/launch_ipykernel.py` `_encrypt`, the Scala launcher's
//! `SecurityUtils.scala`, and `enterprise_gateway/services/processproxies/processproxy.py`
//! `ResponseManager._decode_payload`, version 1):
//!
//! 1. the connection info JSON is encrypted with AES-128 in ECB mode, PKCS#7 padding, under a fresh
//!    random 16-byte key, then base64-encoded: `conn_info`;
//! 2. that AES key is encrypted with the gateway's RSA public key, PKCS#1 v1.5 padding, then
//!    base64-encoded: `key`;
//! 3. `{"version": 1, "key": ..., "conn_info": ...}` is serialised to JSON and base64-encoded again;
//!    those bytes are what goes on the wire.
//!
//! The public key arrives as the base64 of its DER SubjectPublicKeyInfo (a PEM body without its
//! header, footer and newlines). ECB is EG's choice, not ours: the gateway can read nothing else.

use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::PublicKey;

/// The payload version EG's server decodes (`version == 1`).
const PAYLOAD_VERSION: u32 = 1;
const AES_BLOCK: usize = 16;

/// Reads `--RemoteProcessProxy.public-key`: base64 DER (SubjectPublicKeyInfo, or a bare PKCS#1
/// RSAPublicKey, both of which EG's `RSA.importKey` accepts). A full PEM is tolerated too.
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let bad = |why: String| format!("--RemoteProcessProxy.public-key is not an RSA public key ({why})");
    let der = BASE64.decode(body.as_bytes()).map_err(|e| bad(format!("not base64: {e}")))?;
    PublicKey::from_public_key_der(&der)
        .or_else(|spki_err| PublicKey::from_pkcs1_der(&der).map_err(|_| spki_err))
        .map_err(|e| bad(e.to_string()))
}

/// The bytes to send to the response address: `connection_info` (JSON) sealed as EG expects.
pub fn seal(connection_info: &[u8], gateway_key: &PublicKey) -> Result<Vec<u8>, String> {
    let aes_key = crate::wire::random_bytes(16);
    let conn_info = BASE64.encode(aes128_ecb_pkcs7(&aes_key, connection_info));
    let wrapped_key = gateway_key
        .pkcs1v15_encrypt(&aes_key)
        .map_err(|e| format!("cannot encrypt with the gateway's public key: {e}"))?;
    let payload = serde_json::json!({
        "version": PAYLOAD_VERSION,
        "key": BASE64.encode(wrapped_key),
        "conn_info": conn_info,
    });
    Ok(BASE64.encode(payload.to_string()).into_bytes())
}

/// AES-128, ECB mode, PKCS#7 padding (always 1..=16 bytes of padding, as Cryptodome's `pad`).
fn aes128_ecb_pkcs7(key: &[u8], plain: &[u8]) -> Vec<u8> {
    let key: [u8; 16] = key.try_into().expect("an AES-128 key is 16 bytes");
    let cipher = aes::Aes128::new(&Array::from(key));
    let pad = AES_BLOCK - plain.len() % AES_BLOCK;
    let mut data = plain.to_vec();
    data.resize(plain.len() + pad, pad as u8);
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks_exact(AES_BLOCK) {
        let mut block = Array::from(<[u8; AES_BLOCK]>::try_from(chunk).expect("16-byte chunk"));
        cipher.encrypt_block(&mut block);
        out.extend_from_slice(&block);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn aes_block_matches_the_fips_197_example() {
        // FIPS-197 appendix C.1; the 16-byte input gets a whole block of padding after it.
        let key = unhex("000102030405060708090a0b0c0d0e0f");
        let out = aes128_ecb_pkcs7(&key, &unhex("00112233445566778899aabbccddeeff"));
        assert_eq!(out.len(), 32);
        assert_eq!(out[..16], unhex("69c4e0d86a7b0430d8cdb78070b4c55a")[..]);
    }

    #[test]
    fn padding_always_adds_between_one_and_sixteen_bytes() {
        let key = [7u8; 16];
        for len in 0..40 {
            let out = aes128_ecb_pkcs7(&key, &vec![b'x'; len]);
            assert_eq!(out.len(), (len / 16 + 1) * 16, "len {len}");
        }
        // ECB: equal plaintext blocks give equal ciphertext blocks (why EG's key is per launch).
        let out = aes128_ecb_pkcs7(&key, &[b'a'; 32]);
        assert_eq!(out[..16], out[16..32]);
    }

    #[test]
    fn garbage_public_keys_are_refused_with_the_flag_named() {
        for bad in ["", "not base64!", "aGVsbG8gd29ybGQ="] {
            let err = parse_public_key(bad).unwrap_err();
            assert!(err.contains("--RemoteProcessProxy.public-key"), "{err}");
        }
    }
}
