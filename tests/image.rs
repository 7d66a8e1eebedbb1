//! The container image, built without a container engine (`scripts/oci_image.py`, which
//! `scripts/build-image.sh` runs after building the static release binary), inspected the way
//! a registry and a container runtime read it: index.json → manifest → config and layer.
//!
//! To stay cheap in CI this builds the image from the test's own (debug, dynamically linked)
//! binary, whose shared libraries the script copies in beside it; a release image built by
//! `scripts/build-image.sh` into `target/image/signalman` is inspected too when present.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_file(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    format!(
        "sha256:{}",
        out.split_whitespace().next().expect("a digest")
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads a blob by descriptor, checking its size and digest.
fn blob(layout: &Path, desc: &Value) -> PathBuf {
    let digest = desc["digest"].as_str().expect("digest");
    let path = layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("a sha256 digest"));
    let size = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len();
    assert_eq!(Some(size), desc["size"].as_u64(), "size of {digest}");
    assert_eq!(sha256_file(&path), digest, "content of {digest}");
    path
}

struct Inspected {
    manifest_digest: String,
    layer_compressed: u64,
    layer_uncompressed: u64,
}

/// Checks an OCI layout holding the signalman image; returns its figures.
fn inspect(layout: &Path, scratch: &Path) -> Inspected {
    std::fs::create_dir_all(scratch).unwrap();
    assert_eq!(
        read_json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "one image");
    let mdesc = &manifests[0];
    assert_eq!(
        mdesc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(mdesc["platform"]["os"], "linux");
    assert!(mdesc["annotations"]["org.opencontainers.image.ref.name"].is_string());

    let manifest = read_json(&blob(layout, mdesc));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = read_json(&blob(layout, &manifest["config"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], mdesc["platform"]["architecture"]);
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/signalman"]));
    assert_eq!(c["Cmd"], serde_json::json!(["run"]));
    assert_eq!(c["User"], "65532:65532", "runs as nonroot");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(c["Labels"]["org.opencontainers.image.title"], "signalman");

    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = blob(layout, &layers[0]);
    let tar = scratch.join("layer.tar");
    run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc '{}' > '{}'",
        layer.display(),
        tar.display()
    )));
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([sha256_file(&tar)]),
        "diff_id is the uncompressed layer's digest"
    );

    // What is in it: owners 0:0 but nonroot's home (its own, 0700, so the user the image runs
    // as can use $HOME), the binary executable, nonroot known, a CA bundle.
    let listing = run(Command::new("tar")
        .args(["-tvf"])
        .arg(&tar)
        .arg("--numeric-owner"));
    for line in listing.lines() {
        if line.ends_with(" home/nonroot/") {
            assert!(
                line.starts_with("drwx------ 65532/65532 "),
                "nonroot's home: {line}"
            );
        } else {
            assert!(line.contains(" 0/0 "), "not owned by 0:0: {line}");
        }
    }
    assert!(
        listing.lines().any(|l| l.ends_with(" home/nonroot/")),
        "no home for nonroot: {listing}"
    );
    let rootfs = scratch.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&rootfs)
        .arg("--no-same-owner"));
    let bin = rootfs.join("signalman");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&bin)
            .expect("/signalman")
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert!(std::fs::read_to_string(rootfs.join("etc/passwd"))
        .unwrap()
        .contains(":65532:65532:"));
    assert!(
        std::fs::metadata(rootfs.join("etc/ssl/certs/ca-certificates.crt"))
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "the CA bundle the AWS SDK's TLS needs"
    );

    // It runs from the layer alone: chrooted as 65532 when this test may chroot (root), else
    // with the layer's own loader and libraries (or directly, when static).
    let version = if is_root() {
        run(Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .args(["/signalman", "version"]))
    } else if rootfs.join("lib64/ld-linux-x86-64.so.2").exists() {
        run(Command::new(rootfs.join("lib64/ld-linux-x86-64.so.2"))
            .arg("--library-path")
            .arg(rootfs.join("lib/x86_64-linux-gnu"))
            .arg(&bin)
            .arg("version"))
    } else {
        run(Command::new(&bin).arg("version"))
    };
    assert_eq!(
        version.trim(),
        format!("signalman {}", env!("CARGO_PKG_VERSION"))
    );

    Inspected {
        manifest_digest: mdesc["digest"].as_str().unwrap().to_string(),
        layer_compressed: layers[0]["size"].as_u64().unwrap(),
        layer_uncompressed: std::fs::metadata(&tar).unwrap().len(),
    }
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

fn build(binary: &Path, out: &Path) -> Value {
    let stdout = run(Command::new("python3")
        .arg(root().join("scripts/oci_image.py"))
        .arg("--binary")
        .arg(binary)
        .arg("--out")
        .arg(out)
        .args(["--version", env!("CARGO_PKG_VERSION"), "--gzip-level", "1"]));
    serde_json::from_str(&stdout).expect("the script's summary")
}

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn image_layout_from_the_binary_is_complete_and_runs() {
    let scratch = std::env::temp_dir().join(format!("signalman-image-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_signalman"));

    let start = std::time::Instant::now();
    let summary = build(binary, &scratch.join("a"));
    let took = start.elapsed();
    let first = inspect(&scratch.join("a"), &scratch.join("inspect-a"));
    eprintln!(
        "image from {} ({:.1} MiB, static: {}): layer {:.1} MiB gzip / {:.1} MiB, written in {:.1}s",
        binary.display(),
        std::fs::metadata(binary).unwrap().len() as f64 / MIB,
        summary["static"],
        first.layer_compressed as f64 / MIB,
        first.layer_uncompressed as f64 / MIB,
        took.as_secs_f64()
    );

    // Nothing in the layer but the binary, the libraries it needs and a few small files.
    let mut payload = std::fs::metadata(binary).unwrap().len();
    for lib in summary["bundled_libraries"].as_array().unwrap() {
        payload += std::fs::metadata(lib.as_str().unwrap()).unwrap().len();
    }
    assert!(
        first.layer_uncompressed < payload + 2 * 1024 * 1024,
        "the layer carries {} bytes beyond the binary and its libraries",
        first.layer_uncompressed - payload
    );
    // A debug binary is large; the release image is a fraction of this (see below).
    assert!(
        first.layer_compressed < 80 * 1024 * 1024,
        "layer of {} bytes",
        first.layer_compressed
    );

    // Reproducible: the same binary gives the same digests.
    build(binary, &scratch.join("b"));
    let index_b = read_json(&scratch.join("b/index.json"));
    assert_eq!(
        index_b["manifests"][0]["digest"], first.manifest_digest,
        "two builds of the same binary differ"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The release image of `scripts/build-image.sh`, when one was built in this tree.
#[test]
fn release_image_when_built_is_static_and_small() {
    let layout = root().join("target/image/signalman");
    if !layout.join("index.json").exists() {
        eprintln!(
            "no {} (scripts/build-image.sh makes it): skipped",
            layout.display()
        );
        return;
    }
    let scratch =
        std::env::temp_dir().join(format!("signalman-image-release-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let figures = inspect(&layout, &scratch);
    eprintln!(
        "release image {}: layer {:.1} MiB gzip / {:.1} MiB",
        figures.manifest_digest,
        figures.layer_compressed as f64 / MIB,
        figures.layer_uncompressed as f64 / MIB
    );
    let listing = run(Command::new("tar")
        .arg("-tf")
        .arg(scratch.join("layer.tar")));
    assert!(
        !listing.contains(".so"),
        "a release image holds a static binary and no shared library:\n{listing}"
    );
    assert!(
        figures.layer_compressed < 40 * 1024 * 1024,
        "release layer of {} bytes",
        figures.layer_compressed
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
