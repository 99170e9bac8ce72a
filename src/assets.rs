//! Mission Control's static files: fingerprinting and precompression at build
//! time (`herald site <dir>`), and serving with the matching cache headers.
//!
//! The browser bundle is `pkg/herald.js` and `pkg/herald.wasm` (4-5 MB). The build
//! step renames both to `herald.<hash>.js|wasm`, writes `hash.txt` for Leptos's
//! hydration script, and stores brotli and gzip copies next to every file, so a
//! browser that accepts them downloads about a fifth of the bytes and never
//! downloads the same bundle twice.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use axum::http::{header, HeaderValue, Request};
use axum::response::Response;
use sha2::{Digest, Sha256};

/// The bundle's base name (cargo-leptos's `output-name`).
pub const OUTPUT_NAME: &str = "herald";
/// Written by [`prepare`] in the site root; read by [`hash_file`].
pub const HASH_FILE: &str = "hash.txt";

/// What [`prepare`] did, for the build log.
#[derive(Debug)]
pub struct Prepared {
    pub js: String,
    pub wasm: String,
    /// (file, bytes, brotli bytes, gzip bytes)
    pub files: Vec<(String, u64, u64, u64)>,
}

/// Fingerprints and precompresses the bundle in `<site>/pkg`, as built by
/// wasm-bindgen (`herald.js` and `herald_bg.wasm`) or cargo-leptos (`herald.wasm`).
/// Older fingerprinted bundles and their compressed copies are removed.
pub fn prepare(site: &Path) -> Result<Prepared> {
    let pkg = site.join("pkg");
    let js_path = pkg.join(format!("{OUTPUT_NAME}.js"));
    let wasm_path = [format!("{OUTPUT_NAME}_bg.wasm"), format!("{OUTPUT_NAME}.wasm")]
        .into_iter()
        .map(|n| pkg.join(n))
        .find(|p| p.exists())
        .with_context(|| format!("no {OUTPUT_NAME}_bg.wasm or {OUTPUT_NAME}.wasm in {}: build the wasm first", pkg.display()))?;
    let js = std::fs::read(&js_path).with_context(|| format!("cannot read {}", js_path.display()))?;
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let (js_hash, wasm_hash) = (fingerprint(&js), fingerprint(&wasm));
    let keep_js = format!("{OUTPUT_NAME}.{js_hash}.js");
    let keep_wasm = format!("{OUTPUT_NAME}.{wasm_hash}.wasm");
    for entry in std::fs::read_dir(&pkg)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let base = name.trim_end_matches(".br").trim_end_matches(".gz");
        if is_fingerprinted(base) && base != keep_js && base != keep_wasm {
            std::fs::remove_file(pkg.join(&name))?;
        }
    }
    // Rewritten only when new: their compressed copies are kept while they are older.
    for (name, bytes) in [(&keep_js, &js), (&keep_wasm, &wasm)] {
        if !pkg.join(name).exists() {
            write_atomically(&pkg.join(name), bytes)?;
        }
    }
    let unhashed = |n: &str| [format!("{OUTPUT_NAME}.js"), format!("{OUTPUT_NAME}.wasm"), format!("{OUTPUT_NAME}_bg.wasm")].iter().any(|u| u == n);
    let mut files = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&pkg)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| !n.ends_with(".br") && !n.ends_with(".gz") && !n.ends_with(".tmp") && !n.ends_with(".d.ts") && !unhashed(n))
        .collect();
    names.sort();
    for name in names {
        let (br, gz) = precompress(&pkg.join(&name))?;
        let bytes = std::fs::metadata(pkg.join(&name))?.len();
        files.push((name, bytes, br, gz));
    }
    std::fs::write(site.join(HASH_FILE), format!("js: {js_hash}\nwasm: {wasm_hash}\n"))?;
    Ok(Prepared { js: keep_js, wasm: keep_wasm, files })
}

/// The first 16 hex digits of the SHA-256 of the bytes.
fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// `herald.<16 hex digits>.<ext>`: a name whose content never changes.
pub fn is_fingerprinted(name: &str) -> bool {
    let mut parts = name.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(OUTPUT_NAME), Some(h), Some(_), None) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit())
    )
}

/// Writes `<file>.br` (quality 11) and `<file>.gz` (level 9) unless they are
/// newer than the file; returns their sizes.
fn precompress(file: &Path) -> Result<(u64, u64)> {
    let br_path = with_suffix(file, ".br");
    let gz_path = with_suffix(file, ".gz");
    let modified = std::fs::metadata(file)?.modified()?;
    let fresh = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|m| m >= modified);
    if !(fresh(&br_path) && fresh(&gz_path)) {
        let bytes = std::fs::read(file)?;
        let mut br = Vec::new();
        {
            let params = brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 24, ..Default::default() };
            brotli::BrotliCompress(&mut bytes.as_slice(), &mut br, &params)?;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes)?;
        let gz = gz.finish()?;
        // Written last and whole: a half-written copy must never be served.
        write_atomically(&br_path, &br)?;
        write_atomically(&gz_path, &gz)?;
    }
    Ok((std::fs::metadata(&br_path)?.len(), std::fs::metadata(&gz_path)?.len()))
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = with_suffix(path, ".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The absolute path of the site's `hash.txt`, when the site was prepared and the
/// files it names are there; without it the bundle is served by its plain names.
pub fn hash_file(site: &Path) -> Option<PathBuf> {
    let path = std::path::absolute(site.join(HASH_FILE)).ok()?;
    let text = std::fs::read_to_string(&path).ok()?;
    let all_there = text.lines().filter_map(|l| l.split_once(':')).all(|(kind, hash)| {
        site.join("pkg").join(format!("{OUTPUT_NAME}.{}.{}", hash.trim(), kind.trim())).exists()
    });
    all_there.then_some(path)
}

/// Checks a prepared site before serving from it, so a half-built site fails at
/// start-up and not in a user's browser.
pub fn check_site(site: &Path) -> Result<()> {
    if site.join(HASH_FILE).exists() && hash_file(site).is_none() {
        bail!("{} names files that are not in {}/pkg: run `make build` again", site.join(HASH_FILE).display(), site.display());
    }
    Ok(())
}

/// Cache headers for `/pkg`: fingerprinted files never change, so browsers keep
/// them a year without asking; the rest (the stylesheet) is revalidated each time.
pub async fn cache_headers(req: Request<axum::body::Body>, next: axum::middleware::Next) -> Response {
    let immutable = req.uri().path().rsplit('/').next().is_some_and(is_fingerprinted);
    let mut response = next.run(req).await;
    if response.status().is_success() || response.status() == axum::http::StatusCode::NOT_MODIFIED {
        let value = if immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fingerprinted_names_are_immutable() {
        assert!(is_fingerprinted("herald.0123456789abcdef.wasm"));
        assert!(is_fingerprinted("herald.0123456789abcdef.js"));
        assert!(!is_fingerprinted("herald.js"));
        assert!(!is_fingerprinted("herald.css"));
        assert!(!is_fingerprinted("herald.0123456789abcdeg.js"));
        assert!(!is_fingerprinted("herald.0123456789abcdef.js.br"));
        assert!(!is_fingerprinted("other.0123456789abcdef.js"));
    }

    #[test]
    fn prepare_fingerprints_compresses_and_replaces_an_older_build() {
        let site = std::env::temp_dir().join(format!("herald-site-{}", std::process::id()));
        let pkg = site.join("pkg");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join("herald.js"), "export default function init() {}\n".repeat(200)).unwrap();
        std::fs::write(pkg.join("herald_bg.wasm"), vec![7u8; 50_000]).unwrap();
        std::fs::write(pkg.join("herald.css"), "body { color: red }\n".repeat(100)).unwrap();
        let first = prepare(&site).unwrap();
        assert!(pkg.join(&first.wasm).exists() && pkg.join(format!("{}.br", first.wasm)).exists());
        let hashes = std::fs::read_to_string(hash_file(&site).expect("hash.txt names files that exist")).unwrap();
        assert_eq!(hashes, format!("js: {}\nwasm: {}\n", &first.js[7..23], &first.wasm[7..23]));
        let (_, bytes, br, gz) = first.files.iter().find(|f| f.0 == first.wasm).unwrap().clone();
        assert!(br < bytes / 100 && gz < bytes / 50, "{bytes} -> br {br}, gz {gz}");
        let brotli_back = {
            let mut out = Vec::new();
            brotli::BrotliDecompress(&mut std::fs::File::open(pkg.join(format!("{}.br", first.wasm))).unwrap(), &mut out).unwrap();
            out
        };
        assert_eq!(brotli_back, vec![7u8; 50_000]);

        std::fs::write(pkg.join("herald_bg.wasm"), vec![8u8; 50_000]).unwrap();
        let second = prepare(&site).unwrap();
        assert_ne!(first.wasm, second.wasm);
        assert!(!pkg.join(&first.wasm).exists() && !pkg.join(format!("{}.gz", first.wasm)).exists(), "the old bundle is removed");
        assert!(pkg.join(&second.wasm).exists() && pkg.join(&first.js).exists(), "an unchanged file keeps its name");
        std::fs::remove_file(pkg.join(&second.wasm)).unwrap();
        assert!(hash_file(&site).is_none() && check_site(&site).is_err(), "a hash.txt naming a missing file is refused");
        std::fs::remove_dir_all(&site).unwrap();
    }
}
