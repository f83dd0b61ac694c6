//! Reading inputs and writing outputs the same way in every tool.
//!
//! A path of `-` is stdin (for inputs) or stdout (for outputs). Named outputs are written
//! atomically: to a temporary file in the same directory, renamed over the target only when
//! complete, so a killed run never leaves a half-written file for Make to trust.

use crate::{Error, Result};
use ndarray::Array2;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};
use std::path::Path;

/// The name of an input or output in messages: `<stdin>`/`<stdout>` for `-`.
pub fn display_name(path: &str, output: bool) -> String {
    match (path, output) {
        ("-", false) => "<stdin>".into(),
        ("-", true) => "<stdout>".into(),
        _ => path.into(),
    }
}

/// Read all bytes of a file, or of stdin for `-`.
pub fn read_bytes(path: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path == "-" {
        std::io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("<stdin>", e))?;
    } else {
        buf = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(buf)
}

/// Write `bytes` to `path` atomically, or to stdout for `-`.
pub fn write_bytes(path: &str, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// Call `fill` with a writer for `path` (stdout for `-`); a named file appears only if `fill`
/// succeeds, atomically, and is left untouched otherwise.
pub fn write_with(path: &str, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    if path == "-" {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        fill(&mut lock).map_err(|e| Error::io("<stdout>", e))?;
        lock.flush().map_err(|e| Error::io("<stdout>", e))?;
        return Ok(());
    }
    let target = Path::new(path);
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(path, e))?;
    {
        let mut buffered = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut buffered).map_err(|e| Error::io(path, e))?;
        buffered.flush().map_err(|e| Error::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    // Temporary files are created private (0600); a finished output is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    tmp.persist(target).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Check that the outputs of one run, `(flag, path)` pairs, are different files: two outputs
/// renamed onto one path would leave only the last, and two `-` would mix on stdout.
pub fn check_distinct_outputs(outputs: &[(&str, &str)]) -> Result<()> {
    let key = |path: &str| -> (std::path::PathBuf, Option<std::ffi::OsString>) {
        if path == "-" {
            return (std::path::PathBuf::from("-"), None);
        }
        let p = Path::new(path);
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        (
            dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
            p.file_name().map(|n| n.to_os_string()),
        )
    };
    for (i, (flag_a, a)) in outputs.iter().enumerate() {
        for (flag_b, b) in &outputs[i + 1..] {
            if key(a) == key(b) {
                let what = if *a == "-" {
                    "both write stdout".to_string()
                } else {
                    format!("name the same file {a}")
                };
                return Err(Error::usage(format!(
                    "{flag_a} {a} and {flag_b} {b} {what}: give different outputs"
                )));
            }
        }
    }
    Ok(())
}

/// Read an N×N (or any 2-D) float matrix from a `.npy` file or stdin. float64 is read as is;
/// float32 is promoted. Anything else is an input error naming the file.
pub fn read_matrix(path: &str) -> Result<Array2<f64>> {
    let name = display_name(path, false);
    let bytes = read_bytes(path)?;
    matrix_from_npy_bytes(&name, &bytes)
}

/// Parse `.npy` bytes into a 2-D float64 matrix (see [`read_matrix`]).
pub fn matrix_from_npy_bytes(name: &str, bytes: &[u8]) -> Result<Array2<f64>> {
    use ndarray_npy::ReadNpyExt;
    if bytes.is_empty() {
        return Err(Error::input(name, "empty input, expected a .npy file"));
    }
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(Error::input(name, "not a .npy file (missing the \\x93NUMPY magic)"));
    }
    let header = npy_header(bytes).ok_or_else(|| Error::input(name, "truncated .npy header"))?;
    let descr = header_value(&header, "descr").unwrap_or_default();
    let shape = header_value(&header, "shape").unwrap_or_default();
    let dims = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .count();
    if dims != 2 {
        return Err(Error::input(name, format!("expected a 2-D matrix, got shape {shape}")));
    }
    let m = match descr.trim_matches('\'') {
        "<f8" => Array2::<f64>::read_npy(std::io::Cursor::new(bytes)),
        "<f4" => Array2::<f32>::read_npy(std::io::Cursor::new(bytes)).map(|a| a.mapv(f64::from)),
        other => {
            return Err(Error::input(
                name,
                format!("expected float64 or float32 data, got dtype '{other}'"),
            ))
        }
    }
    .map_err(|e| Error::input(name, describe_npy_error(e)))?;
    Ok(m)
}

/// One line for `.npy` data that cannot be read.
fn describe_npy_error(e: ndarray_npy::ReadNpyError) -> String {
    use ndarray_npy::ReadNpyError;
    match e {
        ReadNpyError::MissingData => "truncated: the data is shorter than the header's shape says".into(),
        ReadNpyError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "truncated: the data is shorter than the header's shape says".into()
        }
        ReadNpyError::ExtraBytes(n) => format!("{n} bytes after the data the header's shape announces"),
        other => format!("bad .npy data: {other}"),
    }
}

/// Check that every entry is finite; the error names the first bad entry.
pub fn check_finite(name: &str, m: &Array2<f64>) -> Result<()> {
    if let Some(((i, j), v)) = m.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::input(
            name,
            format!("entry [{i}, {j}] is {v}, expected a finite number"),
        ));
    }
    Ok(())
}

/// The header dictionary of a `.npy` file, as text.
fn npy_header(bytes: &[u8]) -> Option<String> {
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into().ok()?) as usize, 12),
        _ => return None,
    };
    let h = bytes.get(start..start + len)?;
    Some(String::from_utf8_lossy(h).into_owned())
}

fn header_value(header: &str, key: &str) -> Option<String> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    if rest.starts_with('(') {
        let end = rest.find(')')?;
        Some(rest[..=end].to_string())
    } else {
        let end = rest.find(',').unwrap_or(rest.len());
        Some(rest[..end].trim().to_string())
    }
}

/// Write a float64 matrix as `.npy` (atomically, or to stdout for `-`).
pub fn write_matrix(path: &str, m: &Array2<f64>) -> Result<()> {
    use ndarray_npy::WriteNpyExt;
    let mut buf = Vec::new();
    m.write_npy(&mut buf)
        .map_err(|e| Error::other(format!("encoding .npy: {e}")))?;
    write_bytes(path, &buf)
}

/// A JSON document with a format version. Reading checks the version before anything else.
pub trait Versioned {
    /// The file kind in messages, e.g. `index.json`.
    const KIND: &'static str;
    /// The version this build reads and writes.
    const VERSION: u32;
}

/// Read a versioned JSON document. Unknown fields, a missing or other version, and type errors
/// are input errors naming the file and the field.
pub fn read_json<T: DeserializeOwned + Versioned>(path: &str) -> Result<T> {
    let name = display_name(path, false);
    let bytes = read_bytes(path)?;
    json_from_bytes(&name, &bytes)
}

/// Parse a versioned JSON document from bytes (see [`read_json`]).
pub fn json_from_bytes<T: DeserializeOwned + Versioned>(name: &str, bytes: &[u8]) -> Result<T> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::input(
            name,
            format!("empty input, expected a {} document", T::KIND),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::input(name, format!("not valid JSON: {e}")))?;
    match value.get("version") {
        Some(v) if v.as_u64() == Some(T::VERSION as u64) => {}
        Some(v) => {
            return Err(Error::input(
                name,
                format!(
                    "{} version {v} is not supported (this build reads version {})",
                    T::KIND,
                    T::VERSION
                ),
            ))
        }
        None => {
            return Err(Error::input(
                name,
                format!(
                    "missing field `version`: not a {} document (expected version {})",
                    T::KIND,
                    T::VERSION
                ),
            ))
        }
    }
    // The path of the offending field (`layers[3].params`), so the message says where to look.
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => Error::input(name, format!("{}: {}", T::KIND, e.inner())),
            _ => Error::input(name, format!("{}: {path}: {}", T::KIND, e.inner())),
        }
    })
}

/// Write a JSON document (pretty, one trailing newline), atomically or to stdout for `-`.
pub fn write_json<T: Serialize>(path: &str, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::other(format!("encoding JSON: {e}")))?;
    text.push('\n');
    write_bytes(path, text.as_bytes())
}

/// One compact JSON line (for JSON-lines outputs such as sweeps).
pub fn json_line<T: Serialize>(value: &T) -> Result<String> {
    let mut text = serde_json::to_string(value).map_err(|e| Error::other(format!("encoding JSON: {e}")))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partial results and resumed units are f64s in JSON: reading one back must give the same
    /// bits, or a resumed `perturb` differs from an uninterrupted one in the last place (serde_json
    /// parses exactly only with its `float_roundtrip` feature, which the workspace enables).
    #[test]
    fn f64_survives_a_json_round_trip_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..200_000 {
            let x = f64::from_bits(rng.random::<u64>());
            if !x.is_finite() {
                continue;
            }
            let text = serde_json::to_string(&x).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:e} written as {text}");
        }
    }

    #[test]
    fn matrix_roundtrip_f64_and_f32_promotion() {
        use ndarray_npy::WriteNpyExt;
        let m = Array2::from_shape_fn((3, 3), |(i, j)| (i * 3 + j) as f64 * 0.5);
        let mut b = Vec::new();
        m.write_npy(&mut b).unwrap();
        assert_eq!(matrix_from_npy_bytes("m", &b).unwrap(), m);
        let m32 = m.mapv(|v| v as f32);
        let mut b32 = Vec::new();
        m32.write_npy(&mut b32).unwrap();
        assert_eq!(matrix_from_npy_bytes("m", &b32).unwrap(), m);
    }

    #[test]
    fn matrix_errors_name_the_problem() {
        let e = matrix_from_npy_bytes("G.npy", b"").unwrap_err().to_string();
        assert!(e.contains("G.npy") && e.contains("empty"), "{e}");
        let e = matrix_from_npy_bytes("G.npy", b"hello world, not npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a .npy"), "{e}");
        use ndarray_npy::WriteNpyExt;
        let v = ndarray::Array1::<f64>::zeros(4);
        let mut b = Vec::new();
        v.write_npy(&mut b).unwrap();
        let e = matrix_from_npy_bytes("G.npy", &b).unwrap_err().to_string();
        assert!(e.contains("2-D"), "{e}");
        let m = Array2::<f64>::zeros((4, 4));
        let mut b = Vec::new();
        m.write_npy(&mut b).unwrap();
        b.truncate(b.len() - 8);
        let e = matrix_from_npy_bytes("G.npy", &b).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn outputs_must_differ() {
        assert!(check_distinct_outputs(&[("-o", "G.npy"), ("--index", "index.json"), ("--se", "-")]).is_ok());
        let e = check_distinct_outputs(&[("-o", "G.npy"), ("--index", "./G.npy")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("-o G.npy") && e.contains("--index ./G.npy") && e.contains("same file"),
            "{e}"
        );
        let e = check_distinct_outputs(&[("-o", "-"), ("--se", "-")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("stdout"), "{e}");
    }

    #[test]
    fn atomic_write_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.json");
        let t = target.to_str().unwrap();
        let r = write_with(t, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("killed"))
        });
        assert!(r.is_err());
        assert!(!target.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary file left behind"
        );
        write_bytes(t, b"done").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"done");
    }
}
