//! Secrets at rest. A secret's value is sealed with ChaCha20-Poly1305 under the node's [`SecretsKey`]
//! before a store writes it, and opened when it is read back: the database, its WAL and its backups
//! never hold one in plain text.
//!
//! A sealed value is text, `sealed:v1:<key id>:<base64 of nonce and ciphertext>`. The key id is the
//! start of a hash of the key. A store records the id of the key its secrets are sealed with
//! ([`KEY_ID_SETTING`]), so a node started with another key is refused before it reads or writes one,
//! rather than failing on each secret later. The function's and the secret's names are the seal's
//! associated data, so a sealed value copied to another slot does not open.

use crate::StoreError;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How a sealed value begins.
const SEALED: &str = "sealed:v1:";

/// The name under which a store records the id of the key its secrets are sealed with.
pub(crate) const KEY_ID_SETTING: &str = "secrets_key_id";

/// The file a data directory keeps its generated key in, when no key is given.
pub const KEY_FILE: &str = "secrets.key";

/// The 256-bit key a node seals secrets with.
pub struct SecretsKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey").field("id", &self.id).finish()
    }
}

impl SecretsKey {
    /// The key whose 32 bytes are written in `text` as 64 hex digits or as base64 (surrounding
    /// whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| e.to_string())?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| "a secrets key is 32 bytes written as 64 hex digits or as base64")?
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "a secrets key is 32 bytes (256 bits), this one is {}",
                bytes.len()
            )
        })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The key read from `path` (see [`Self::parse`]).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("secrets key file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("secrets key file {}: {e}", path.display()))
    }

    /// The key kept in `data_dir`'s [`KEY_FILE`], generated (and written readable by its owner
    /// alone) when there is none yet; with whether it was generated now.
    pub fn in_data_dir(data_dir: &Path) -> Result<(Self, bool), String> {
        let path = data_dir.join(KEY_FILE);
        if path.exists() {
            return Ok((Self::read(&path)?, false));
        }
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| "the system's random source failed".to_string())?;
        write_owner_only(&path, hex(&bytes).as_bytes())
            .map_err(|e| format!("cannot write the secrets key {}: {e}", path.display()))?;
        Ok((Self::from_bytes(&bytes), true))
    }

    fn from_bytes(bytes: &[u8; 32]) -> Self {
        let id = ring::digest::digest(&ring::digest::SHA256, bytes);
        Self {
            key: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, bytes)
                    .unwrap_or_else(|_| unreachable!("a ChaCha20-Poly1305 key is 32 bytes")),
            ),
            id: hex(&id.as_ref()[..8]),
        }
    }

    /// The key's id: the first 8 bytes of its SHA-256, in hex. It names the key without giving it away.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `value`, the secret `name` of `function`, sealed.
    pub fn seal(&self, function: &str, name: &str, value: &str) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::SecretsKey("the system's random source failed".into()))?;
        let mut sealed = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(slot(function, name)),
                &mut sealed,
            )
            .map_err(|_| StoreError::SecretsKey("sealing a secret failed".into()))?;
        let mut both = nonce.to_vec();
        both.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED}{}:{}",
            self.id,
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(both)
        ))
    }

    /// The secret `name` of `function` that a store holds as `stored`.
    pub fn open(&self, function: &str, name: &str, stored: &str) -> Result<String, StoreError> {
        let what = || format!("secret `{name}` of function `{function}`");
        let (id, body) = stored
            .strip_prefix(SEALED)
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| StoreError::Corrupt(format!("{} is not sealed", what())))?;
        if id != self.id {
            return Err(StoreError::SecretsKey(format!(
                "{} is sealed with key {id}, and this node's key is {}",
                what(),
                self.id
            )));
        }
        let mut both = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| StoreError::Corrupt(format!("{} is not valid base64", what())))?;
        if both.len() < NONCE_LEN {
            return Err(StoreError::Corrupt(format!("{} is truncated", what())));
        }
        let nonce = Nonce::try_assume_unique_for_key(&both[..NONCE_LEN])
            .map_err(|_| StoreError::Corrupt(format!("{} is truncated", what())))?;
        let opened = self
            .key
            .open_in_place(
                nonce,
                Aad::from(slot(function, name)),
                &mut both[NONCE_LEN..],
            )
            .map_err(|_| StoreError::Corrupt(format!("{} fails its integrity check", what())))?;
        String::from_utf8(opened.to_vec())
            .map_err(|_| StoreError::Corrupt(format!("{} is not UTF-8", what())))
    }

    /// Whether `stored` is a sealed value rather than one written before secrets were sealed.
    pub(crate) fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED)
    }

    /// Checks that the store's secrets are sealed with this key: `recorded` is the key id the store
    /// holds (the one it was just given, on a store that had none).
    pub(crate) fn check_recorded(&self, recorded: &str) -> Result<(), StoreError> {
        if recorded == self.id {
            return Ok(());
        }
        Err(StoreError::SecretsKey(format!(
            "this store's secrets are sealed with key {recorded}, and this node was given key {}: \
             start it with the same key (--secrets-key-file or WAFER_SECRETS_KEY) as the node that \
             sealed them",
            self.id
        )))
    }
}

/// Where a node's secrets key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding the key.
    File(PathBuf),
    /// The key itself (from the environment).
    Value(String),
    /// The data directory's [`KEY_FILE`], generated on first use.
    DataDir,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Value(_) => f.write_str("Value(***)"),
            Self::DataDir => f.write_str("DataDir"),
        }
    }
}

impl KeySource {
    /// The key, read (or generated) from this source, for a store whose secrets are sealed with the
    /// key `recorded` names (`None`: a store that has none yet). A key is generated only for such a
    /// store: one whose key file went missing is refused, not given a key its secrets do not open with.
    pub fn load(&self, data_dir: &Path, recorded: Option<&str>) -> Result<SecretsKey, String> {
        match self {
            Self::File(path) => SecretsKey::read(path),
            Self::Value(text) => {
                SecretsKey::parse(text).map_err(|e| format!("WAFER_SECRETS_KEY: {e}"))
            }
            Self::DataDir => {
                let path = data_dir.join(KEY_FILE);
                if let (Some(recorded), false) = (recorded, path.exists()) {
                    return Err(format!(
                        "this store's secrets are sealed with key {recorded}, and {} is missing: \
                         put it back, or give the key with --secrets-key-file or WAFER_SECRETS_KEY",
                        path.display()
                    ));
                }
                let (key, generated) = SecretsKey::in_data_dir(data_dir)?;
                if generated {
                    tracing::warn!(
                        path = %data_dir.join(KEY_FILE).display(),
                        "generated a key to seal secrets with; keep a copy of it apart from the data \
                         (or give one with --secrets-key-file): without it, the secrets cannot be read"
                    );
                }
                Ok(key)
            }
        }
    }
}

/// The associated data binding a sealed value to its slot.
fn slot(function: &str, name: &str) -> Vec<u8> {
    let mut slot = Vec::with_capacity(function.len() + name.len() + 1);
    slot.extend_from_slice(function.as_bytes());
    slot.push(0);
    slot.extend_from_slice(name.as_bytes());
    slot
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a new file that only its owner may read, durably.
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_secret_opens_only_in_its_own_slot_under_its_own_key() {
        let key = SecretsKey::parse(HEX).unwrap();
        let sealed = key.seal("f", "token", "hunter2").unwrap();
        assert!(sealed.starts_with(&format!("sealed:v1:{}:", key.id())));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            key.seal("f", "token", "hunter2").unwrap(),
            "fresh nonce"
        );
        assert_eq!(key.open("f", "token", &sealed).unwrap(), "hunter2");
        for (function, name) in [("g", "token"), ("f", "other"), ("f\0t", "oken")] {
            let moved = key.open(function, name, &sealed).unwrap_err();
            assert!(moved.to_string().contains("integrity"), "{moved}");
        }
        let mut tampered = sealed.clone();
        tampered.replace_range(sealed.len() - 2.., "AA");
        assert!(key.open("f", "token", &tampered).is_err());
        let other = SecretsKey::parse(&"ab".repeat(32)).unwrap();
        let refused = other.open("f", "token", &sealed).unwrap_err();
        assert!(matches!(refused, StoreError::SecretsKey(_)), "{refused}");
        assert!(key.open("f", "token", "hunter2").is_err());
        assert!(key.open("f", "token", "sealed:v1:x").is_err());
        assert!(key
            .open("f", "token", &format!("sealed:v1:{}:AAAA", key.id()))
            .is_err());
    }

    #[test]
    fn keys_are_read_as_hex_or_base64_and_anything_else_is_refused() {
        let from_hex = SecretsKey::parse(&format!("  {HEX}\n")).unwrap();
        let bytes: Vec<u8> = (0u8..32).collect();
        let from_base64 =
            SecretsKey::parse(&base64::engine::general_purpose::STANDARD.encode(&bytes)).unwrap();
        assert_eq!(from_hex.id(), from_base64.id());
        assert_eq!(from_hex.id().len(), 16);
        for bad in [
            "",
            "short",
            &HEX[..62],
            &format!("{HEX}00"),
            "zz".repeat(32).as_str(),
        ] {
            assert!(SecretsKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            SecretsKey::parse(&base64::engine::general_purpose::STANDARD.encode([1u8; 16]))
                .unwrap_err()
                .contains("is 16")
        );
    }

    #[test]
    fn a_data_directory_key_is_generated_once_for_its_owner_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, generated) = SecretsKey::in_data_dir(dir.path()).unwrap();
        assert!(generated);
        let (again, generated) = SecretsKey::in_data_dir(dir.path()).unwrap();
        assert!(!generated);
        assert_eq!(first.id(), again.id());
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = first.seal("f", "s", "v").unwrap();
        assert_eq!(again.open("f", "s", &sealed).unwrap(), "v");
    }
}
