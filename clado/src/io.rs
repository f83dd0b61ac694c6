//! Reading inputs and writing outputs the same way in every tool.
//!
//! A path of `-` is stdin (for inputs) or stdout (for outputs). Named outputs are written
//! atomically: to a temporary file in the same directory, renamed over the target only when
//! complete, so a killed run never leaves a half-written file for Make to trust.
//!
//! # Pipelines
//! A tool that reads data on stdin and side files (`--index`, `--calib`, `--se`, `--weights`)
//! reads stdin to its end first ([`read_inputs`]), then the side files: in
//! `perturb -o - --index index.json | psd | allocate --matrix - --index index.json`, perturb
//! finishes `index.json` before the last byte of G, so allocate reads the index of this run, not
//! one left from an earlier run. A tool that writes data on stdout and side files writes the
//! side files completely first ([`write_outputs`]). Reading stdin that is a terminal says so on
//! stderr, instead of waiting silently.

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

/// FNV-1a 64 of some bytes, as 16 hex digits: the content digest files record (weights files,
/// quantizer parameters, matrices). It tells files apart; it does not authenticate them.
pub fn digest(bytes: &[u8]) -> String {
    let mut d = Digest::new();
    d.update(bytes);
    d.finish()
}

/// [`digest`] computed over parts given one after another (the same value as [`digest`] of
/// their concatenation).
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Self::new()
    }
}

impl Digest {
    pub fn new() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// 16 hex digits.
    pub fn finish(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// [`digest`] of a file.
pub fn file_digest(path: &str) -> Result<String> {
    Ok(digest(&std::fs::read(path).map_err(|e| Error::io(path, e))?))
}

/// The running tool's name for messages printed outside its error path (set by
/// [`crate::cli::main`]).
static TOOL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub(crate) fn set_tool_name(name: &str) {
    let _ = TOOL.set(name.to_string());
}

/// When stdin is a terminal, say on stderr what the tool waits for there (a `kind`, e.g.
/// `a .npy matrix`) and how to give it one (`example`, a file name), instead of hanging
/// silently.
pub fn note_terminal_stdin(kind: &str, example: &str) {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let tool = TOOL.get().map(String::as_str).unwrap_or("clado");
        eprintln!(
            "{tool}: reading {kind} from standard input (a terminal): pipe or redirect a file in, \
             e.g. `{tool} ... < {example}`, or end the input with Ctrl-D"
        );
    }
}

/// Read all bytes of a file, or of stdin for `-`.
pub fn read_bytes(path: &str) -> Result<Vec<u8>> {
    read_input(path, "the input", "FILE")
}

/// [`read_bytes`], saying what is expected (`kind`, `example` file name) when stdin is a
/// terminal ([`note_terminal_stdin`]).
pub fn read_input(path: &str, kind: &str, example: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path == "-" {
        note_terminal_stdin(kind, example);
        std::io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("<stdin>", e))?;
    } else {
        buf = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(buf)
}

/// One input of a run for [`read_inputs`]: its path (`-` for stdin) and, for the message when
/// stdin is a terminal, what it holds and an example file name.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub path: &'a str,
    pub kind: &'a str,
    pub example: &'a str,
}

impl<'a> Input<'a> {
    pub fn new(path: &'a str, kind: &'a str, example: &'a str) -> Self {
        Input { path, kind, example }
    }
}

/// The bytes of every input of a run, in the order given, reading stdin (`-`, at most one) to
/// its end before any named file is opened (see the module doc, Pipelines).
pub fn read_inputs(inputs: &[Input<'_>]) -> Result<Vec<Vec<u8>>> {
    if inputs.iter().filter(|i| i.path == "-").count() > 1 {
        return Err(Error::usage(
            "stdin (`-`) can be read only once: give the other inputs as files",
        ));
    }
    let mut bytes: Vec<Option<Vec<u8>>> = vec![None; inputs.len()];
    let order = inputs
        .iter()
        .enumerate()
        .filter(|(_, i)| i.path == "-")
        .chain(inputs.iter().enumerate().filter(|(_, i)| i.path != "-"));
    for (at, input) in order {
        bytes[at] = Some(read_input(input.path, input.kind, input.example)?);
    }
    Ok(bytes.into_iter().map(|b| b.expect("every input was read")).collect())
}

/// Write several outputs of one run, each as [`write_bytes`] does: named files first, stdout
/// (`-`) last, so a reader at the end of the pipe finds the side files complete when its data
/// ends.
pub fn write_outputs(outputs: &[(&str, &[u8])]) -> Result<()> {
    for (path, bytes) in outputs.iter().filter(|(p, _)| *p != "-") {
        write_bytes(path, bytes)?;
    }
    for (path, bytes) in outputs.iter().filter(|(p, _)| *p == "-") {
        write_bytes(path, bytes)?;
    }
    Ok(())
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
    let bytes = read_input(path, MATRIX_KIND, "G.npy")?;
    matrix_from_npy_bytes(&name, &bytes)
}

/// What a matrix input holds, for [`Input::kind`].
pub const MATRIX_KIND: &str = "a .npy matrix";

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
    write_bytes(path, &npy_bytes(m)?)
}

/// The `.npy` bytes of a float64 matrix, as [`write_matrix`] writes them.
pub fn npy_bytes(m: &Array2<f64>) -> Result<Vec<u8>> {
    use ndarray_npy::WriteNpyExt;
    let mut buf = Vec::new();
    m.write_npy(&mut buf)
        .map_err(|e| Error::other(format!("encoding .npy: {e}")))?;
    Ok(buf)
}

/// A JSON document with a format version. Reading checks the version before anything else.
pub trait Versioned {
    /// The file kind in messages, e.g. `index.json`.
    const KIND: &'static str;
    /// The version this build reads and writes.
    const VERSION: u32;
    /// The tool to rerun when a file of an older version is given.
    const WRITER: &'static str = "the tool that wrote it";
}

/// [`Versioned::KIND`] as a phrase for [`Input::kind`]: `an alloc.json document`.
pub fn document_kind<T: Versioned>() -> String {
    let article = if T::KIND.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {} document", T::KIND)
}

/// An example file name of `T`'s kind for messages: `alloc.json`.
fn document_example<T: Versioned>() -> &'static str {
    if T::KIND.ends_with(".json") {
        T::KIND
    } else {
        "FILE"
    }
}

/// Read a versioned JSON document. Unknown fields, a missing or other version, and type errors
/// are input errors naming the file and the field.
pub fn read_json<T: DeserializeOwned + Versioned>(path: &str) -> Result<T> {
    let name = display_name(path, false);
    let bytes = read_input(path, &document_kind::<T>(), document_example::<T>())?;
    json_from_bytes(&name, &bytes)
}

/// Parse one versioned JSON document from bytes (see [`read_json`]). Several documents (JSON
/// lines) are an error that says how many there are.
pub fn json_from_bytes<T: DeserializeOwned + Versioned>(name: &str, bytes: &[u8]) -> Result<T> {
    let mut docs = json_documents_from_bytes::<T>(name, bytes)?;
    if docs.len() > 1 {
        return Err(Error::input(
            name,
            format!("holds {} JSON documents, expected one {}", docs.len(), T::KIND),
        ));
    }
    Ok(docs.remove(0))
}

/// Read one or more versioned JSON documents: one document, JSON lines, or documents simply
/// following each other (whitespace between them is optional). At least one is needed.
pub fn read_json_documents<T: DeserializeOwned + Versioned>(path: &str) -> Result<Vec<T>> {
    let name = display_name(path, false);
    let bytes = read_input(path, &document_kind::<T>(), document_example::<T>())?;
    json_documents_from_bytes(&name, &bytes)
}

/// Parse one or more versioned JSON documents from bytes (see [`read_json_documents`]). With
/// several, messages say which document (from 1) is wrong.
pub fn json_documents_from_bytes<T: DeserializeOwned + Versioned>(name: &str, bytes: &[u8]) -> Result<Vec<T>> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::input(
            name,
            format!("empty input, expected {}", document_kind::<T>()),
        ));
    }
    let values: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(bytes)
        .into_iter::<serde_json::Value>()
        .enumerate()
        .map(|(i, v)| {
            v.map_err(|e| match i {
                0 => Error::input(name, format!("not valid JSON: {e}")),
                _ => Error::input(name, format!("document {}: not valid JSON: {e}", i + 1)),
            })
        })
        .collect::<Result<_>>()?;
    let several = values.len() > 1;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            document_from_value::<T>(v).map_err(|msg| match several {
                true => Error::input(name, format!("document {}: {msg}", i + 1)),
                false => Error::input(name, msg),
            })
        })
        .collect()
}

/// Check the version of one parsed document, then its fields; the message on failure.
fn document_from_value<T: DeserializeOwned + Versioned>(value: serde_json::Value) -> std::result::Result<T, String> {
    match value.get("version") {
        Some(v) if v.as_u64() == Some(T::VERSION as u64) => {}
        Some(v) => {
            return Err(match v.as_u64() {
                Some(old) if old < T::VERSION as u64 => format!(
                    "{} version {old} was written by an older version of the toolkit (this build reads \
                     version {}): rerun {}",
                    T::KIND,
                    T::VERSION,
                    T::WRITER
                ),
                Some(new) => format!(
                    "{} version {new} was written by a newer version of the toolkit (this build reads \
                     version {})",
                    T::KIND,
                    T::VERSION
                ),
                None => format!(
                    "{} version {v} is not supported (this build reads version {})",
                    T::KIND,
                    T::VERSION
                ),
            })
        }
        None => {
            return Err(format!(
                "missing field `version`: not a {} document (expected version {})",
                T::KIND,
                T::VERSION
            ))
        }
    }
    // The path of the offending field (`layers[3].params`), so the message says where to look.
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => format!("{}: {}", T::KIND, e.inner()),
            _ => format!("{}: {path}: {}", T::KIND, e.inner()),
        }
    })
}

/// Write a JSON document (pretty, one trailing newline), atomically or to stdout for `-`.
pub fn write_json<T: Serialize>(path: &str, value: &T) -> Result<()> {
    write_bytes(path, json_document(value)?.as_bytes())
}

/// The text [`write_json`] writes.
pub fn json_document<T: Serialize>(value: &T) -> Result<String> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::other(format!("encoding JSON: {e}")))?;
    text.push('\n');
    Ok(text)
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
    use crate::format::FORMAT_VERSION;

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
    fn json_lines_and_concatenated_documents_read_in_order() {
        use crate::format::Metrics;
        let line = |config: &str| {
            format!(
                r#"{{"version":{FORMAT_VERSION},"config":"{config}","arch":"resnet20","data":"d","samples":1,"top1":0,
                "top5":0,"loss":0,"kl":0,"size_bits":0,"size_mb":0,"avg_w_bits":0,"bops":0}}"#
            )
            .replace('\n', "")
        };
        let lines = format!("{}\n{}\n{}\n", line("a"), line("b"), line("c"));
        let docs: Vec<Metrics> = json_documents_from_bytes("m.jsonl", lines.as_bytes()).unwrap();
        assert_eq!(
            docs.iter().map(|m| m.config.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        // Pretty documents one after another (`cat a.json b.json`), even without a newline.
        let pretty = |c: &str| json_document(&json_from_bytes::<Metrics>("x", line(c).as_bytes()).unwrap()).unwrap();
        let cat = format!("{}{}", pretty("x").trim_end(), pretty("y"));
        let docs: Vec<Metrics> = json_documents_from_bytes("cat", cat.as_bytes()).unwrap();
        assert_eq!(docs.len(), 2);
        // One document where one is expected; several name their count.
        let e = json_from_bytes::<Metrics>("m.jsonl", lines.as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "m.jsonl: holds 3 JSON documents, expected one metrics JSON");
        // Errors name the document.
        let bad = format!("{}\n{}\n", line("a"), line("b").replace("\"top1\":0", "\"top1\":\"x\""));
        let e = json_documents_from_bytes::<Metrics>("m.jsonl", bad.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.jsonl: document 2: metrics JSON: top1:"), "{e}");
        let e = json_documents_from_bytes::<Metrics>("m.jsonl", format!("{}\n{{oops", line("a")).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.jsonl: document 2: not valid JSON"), "{e}");
        let e = json_documents_from_bytes::<Metrics>("<stdin>", b" \n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "<stdin>: empty input, expected a metrics JSON document");
    }

    #[test]
    fn outputs_are_written_and_digests_are_fnv1a() {
        // FNV-1a 64 test vectors (Fowler, Noll, Vo): "" and "a".
        assert_eq!(digest(b""), "cbf29ce484222325");
        assert_eq!(digest(b"a"), "af63dc4c8601ec8c");
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_outputs(&[(a.to_str().unwrap(), b"1"), (b.to_str().unwrap(), b"2")]).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"1");
        assert_eq!(file_digest(b.to_str().unwrap()).unwrap(), digest(b"2"));
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
