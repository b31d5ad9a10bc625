//! What travels between `edgeinfer-host` and a device to steer it: signed
//! orders on `<prefix>/cmd`, model chunks on `<prefix>/update`, JSON
//! replies on `<prefix>/reply`; and the Ed25519 key files that sign them.
//!
//! An order is postcard bytes signed as they are: the device verifies the
//! exact bytes it received, so no canonical form is needed. The order
//! names its device, so an order signed for one board is refused by every
//! other, and carries a time and a nonce against replays.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Version of [`Order`]; devices refuse others.
pub const ORDER_VERSION: u16 = 1;

/// File name of the secret key in a key directory.
pub const SECRET_FILE: &str = "edgeinfer.key";
/// File name of the public key in a key directory.
pub const PUBLIC_FILE: &str = "edgeinfer.pub";

/// A signed order as sent on `<prefix>/cmd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signed {
    /// Postcard bytes of an [`Order`].
    pub body: Vec<u8>,
    /// Ed25519 signature of `body` (64 bytes; empty when unsigned).
    pub signature: Vec<u8>,
}

/// One order for one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// [`ORDER_VERSION`].
    pub version: u16,
    /// The device id it is meant for.
    pub device: String,
    /// Names the order in its reply.
    pub id: String,
    /// When it was signed, milliseconds since the epoch.
    pub ts_ms: u64,
    /// Random; an order is carried out once.
    pub nonce: u64,
    /// What to do.
    pub action: Action,
}

/// What an order asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Answer `pong`.
    Ping,
    /// Answer with the info document.
    Info,
    /// Change a run-time setting (`policy.deadband`, `log_level`, ...).
    Set {
        /// The dotted setting name.
        key: String,
        /// Its new value, as TOML (`0.05`, `true`, `"text"`).
        value: String,
    },
    /// Go back to the previous model.
    Rollback,
    /// Drain and start again.
    Restart,
    /// A model update follows on `<prefix>/update`.
    Update(Manifest),
}

/// The signed description of an update: the chunks that follow must
/// assemble into exactly these bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// sha256 of the [`Bundle`] bytes, 64 hex digits.
    pub sha256: String,
    /// Size of the bundle in bytes.
    pub size: u64,
    /// Bytes per chunk (the last may be shorter).
    pub chunk_bytes: u32,
    /// The model's version, as the device reports it.
    pub version: String,
    /// The model's inputs, as `name: dtype [dims]` (informative).
    pub inputs: Vec<String>,
    /// The model's outputs, likewise.
    pub outputs: Vec<String>,
}

impl Manifest {
    /// Chunks the update is sent in.
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(u64::from(self.chunk_bytes.max(1)))
    }
}

/// One piece of an update on `<prefix>/update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The update's order id.
    pub id: String,
    /// Position, from 0.
    pub index: u32,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What an update delivers: the model file and, optionally, a reference
/// input and output the device checks before switching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// The ONNX file's bytes.
    pub model: Vec<u8>,
    /// Reference input and output for the self-test.
    pub selftest: Option<SelfTest>,
}

/// A reference input and the output it must give (within 1e-4 relative).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfTest {
    /// The input tensor, flat.
    pub input: Vec<f32>,
    /// The first output, flat.
    pub output: Vec<f32>,
}

impl SelfTest {
    /// Reads a reference pair of .npy files (any numeric type).
    pub fn read(input: &Path, output: &Path) -> Result<SelfTest, String> {
        let read = |p: &Path| -> Result<Vec<f32>, String> {
            let t = crate::npy::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let t = t
                .cast_to::<f32>()
                .map_err(|e| format!("{}: {e}", p.display()))?;
            let v = t
                .to_plain_array_view::<f32>()
                .map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(v.iter().copied().collect())
        };
        Ok(SelfTest {
            input: read(input)?,
            output: read(output)?,
        })
    }
}

/// The JSON answer on `<prefix>/reply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The order's id.
    pub id: String,
    /// The answering device.
    pub device: String,
    /// `ok`, `applied`, `refused`, `rolled_back` or `interrupted`.
    pub outcome: String,
    /// What happened, for people.
    pub detail: String,
    /// The model running after the order, sha256.
    pub model_sha256: String,
    /// Its version.
    pub model_version: String,
    /// Extra data (the info document for `info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// Errors with keys and signatures.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A key file could not be read or written.
    #[error("{path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not a signed order.
    #[error("not a signed order: {0}")]
    Decode(#[from] postcard::Error),
    /// The signature does not verify.
    #[error("bad signature: not signed by the configured key")]
    Signature,
    /// No signature, and unsigned orders are not allowed.
    #[error("unsigned order refused ([remote] allow_unsigned is false)")]
    Unsigned,
    /// An order of another version.
    #[error("order version {0} not understood (this build reads {ORDER_VERSION})")]
    Version(u16),
}

fn hex_key<const N: usize>(path: &Path, text: &str) -> Result<[u8; N], WireError> {
    let bad = |reason: String| WireError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let t = text.trim();
    if t.len() != 2 * N || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "expected {} hex digits (an edgeinfer-host keygen key), found {} characters",
            2 * N,
            t.len()
        )));
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| bad(e.to_string()))?;
    }
    Ok(out)
}

fn read_key_text(path: &Path) -> Result<String, WireError> {
    std::fs::read_to_string(path).map_err(|e| WireError::KeyFile {
        path: path.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })
}

/// Reads a public key file (64 hex digits).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, WireError> {
    let bytes = hex_key::<32>(path, &read_key_text(path)?)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| WireError::KeyFile {
        path: path.to_path_buf(),
        reason: format!("not an Ed25519 public key: {e}"),
    })
}

/// Reads the secret key of a key directory.
pub fn read_secret_key(dir: &Path) -> Result<SigningKey, WireError> {
    let path = dir.join(SECRET_FILE);
    Ok(SigningKey::from_bytes(&hex_key::<32>(
        &path,
        &read_key_text(&path)?,
    )?))
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

/// Writes a new key pair into `dir`: the secret key readable by its owner
/// only. Refuses to overwrite an existing key.
pub fn keygen(dir: &Path) -> Result<VerifyingKey, WireError> {
    let err = |path: &Path, reason: String| WireError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create: {e}")))?;
    let secret_path = dir.join(SECRET_FILE);
    let seed = random_bytes::<32>().map_err(|e| err(&secret_path, e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let hex = |b: &[u8]| crate::model::hex(b);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_path)
            .map_err(|e| err(&secret_path, format!("cannot create (kept as it is): {e}")))?;
        writeln!(f, "{}", hex(&key.to_bytes()))
            .and_then(|_| f.sync_all())
            .map_err(|e| err(&secret_path, e.to_string()))?;
    }
    let public_path = dir.join(PUBLIC_FILE);
    std::fs::write(
        &public_path,
        format!("{}\n", hex(key.verifying_key().as_bytes())),
    )
    .map_err(|e| err(&public_path, e.to_string()))?;
    Ok(key.verifying_key())
}

impl Order {
    /// A new order for `device`, stamped now with a random nonce.
    pub fn new(device: &str, id: &str, action: Action) -> Self {
        Order {
            version: ORDER_VERSION,
            device: device.into(),
            id: id.into(),
            ts_ms: crate::clock::now_ms(),
            nonce: u64::from_le_bytes(random_bytes::<8>().unwrap_or_default()),
            action,
        }
    }

    /// Signed postcard bytes for `<prefix>/cmd` (unsigned with no key).
    pub fn sign(&self, key: Option<&SigningKey>) -> Vec<u8> {
        let body = postcard::to_stdvec(self).unwrap_or_default();
        let signature = key
            .map(|k| k.sign(&body).to_bytes().to_vec())
            .unwrap_or_default();
        postcard::to_stdvec(&Signed { body, signature }).unwrap_or_default()
    }

    /// Decodes and verifies `bytes` against `key`; with `allow_unsigned`,
    /// an order without a signature is taken too (one with a wrong
    /// signature never is).
    pub fn verify(
        bytes: &[u8],
        key: Option<&VerifyingKey>,
        allow_unsigned: bool,
    ) -> Result<Order, WireError> {
        let signed: Signed = postcard::from_bytes(bytes)?;
        match (key, signed.signature.is_empty()) {
            (_, true) if allow_unsigned => {}
            (_, true) => return Err(WireError::Unsigned),
            (None, false) => return Err(WireError::Signature),
            (Some(k), false) => {
                let sig =
                    Signature::from_slice(&signed.signature).map_err(|_| WireError::Signature)?;
                k.verify(&signed.body, &sig)
                    .map_err(|_| WireError::Signature)?;
            }
        }
        let order: Order = postcard::from_bytes(&signed.body)?;
        if order.version != ORDER_VERSION {
            return Err(WireError::Version(order.version));
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_the_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let public = keygen(dir.path()).unwrap();
        let secret = read_secret_key(dir.path()).unwrap();
        assert_eq!(
            read_public_key(&dir.path().join(PUBLIC_FILE)).unwrap(),
            public
        );
        let bytes = Order::new("pi", "c1", Action::Ping).sign(Some(&secret));
        let order = Order::verify(&bytes, Some(&public), false).unwrap();
        assert_eq!((order.device.as_str(), order.action), ("pi", Action::Ping));
        // One flipped bit anywhere in the body breaks it.
        let mut signed: Signed = postcard::from_bytes(&bytes).unwrap();
        signed.body[3] ^= 1;
        let tampered = postcard::to_stdvec(&signed).unwrap();
        assert!(matches!(
            Order::verify(&tampered, Some(&public), true),
            Err(WireError::Signature)
        ));
        // Another key's signature.
        let other = tempfile::tempdir().unwrap();
        keygen(other.path()).unwrap();
        let foreign = Order::new("pi", "c2", Action::Ping)
            .sign(Some(&read_secret_key(other.path()).unwrap()));
        assert!(matches!(
            Order::verify(&foreign, Some(&public), true),
            Err(WireError::Signature)
        ));
        // Unsigned: only when allowed.
        let unsigned = Order::new("pi", "c3", Action::Ping).sign(None);
        assert!(matches!(
            Order::verify(&unsigned, Some(&public), false),
            Err(WireError::Unsigned)
        ));
        assert!(Order::verify(&unsigned, Some(&public), true).is_ok());
        // keygen never overwrites a key.
        assert!(keygen(dir.path()).is_err());
        assert_eq!(
            read_public_key(&dir.path().join(PUBLIC_FILE)).unwrap(),
            public
        );
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pub");
        std::fs::write(&p, "not hex").unwrap();
        let e = read_public_key(&p).unwrap_err().to_string();
        assert!(e.contains("k.pub") && e.contains("64 hex digits"), "{e}");
    }
}
