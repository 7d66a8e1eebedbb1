//! `scripts/release.sh` against a real OCI registry (the CNCF registry, built from its Go
//! module by tests/env/setup.sh) on 127.0.0.1: the tag is a multi-arch image index whose amd64
//! and arm64 images hold static binaries of those machines, the pushed chart pins that digest,
//! and the chart installs from the registry into the test API server with the image by digest.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin(name: &str) -> PathBuf {
    let path = signalman_testenv::env_home().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run tests/env/setup.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The registry program on a free loopback port, stopped on drop.
struct Registry {
    child: Child,
    address: String,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin("registry"))
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("starting the registry");
        let registry = Registry { child, address };
        let deadline = Instant::now() + Duration::from_secs(20);
        while registry.status("/v2/") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the registry never answered /v2/"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// The HTTP status of a GET, if the registry answers.
    fn status(&self, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(&self.address).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.address).ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oras(args: &[&str]) -> String {
    run(Command::new(bin("oras")).args(args))
}

/// ELF machine and whether it asks for an interpreter (dynamically linked).
fn elf(path: &Path) -> (u16, bool) {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], b"\x7fELF", "{} is not ELF", path.display());
    let machine = u16::from_le_bytes([data[18], data[19]]);
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes([data[54], data[55]]) as usize;
    let phnum = u16::from_le_bytes([data[56], data[57]]) as usize;
    let interp = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) == 3
    });
    (machine, interp)
}

#[test]
fn a_release_is_a_multi_arch_image_and_a_chart_pinned_to_it_that_installs_from_the_registry() {
    let scratch =
        std::env::temp_dir().join(format!("signalman-release-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let registry = Registry::start(&scratch);
    let repo = format!("{}/team", registry.address);
    let version = env!("CARGO_PKG_VERSION");

    // The release builds in a target directory of its own: the cargo running this test holds
    // the lock of the one it built the test in.
    let test_target = Path::new(env!("CARGO_BIN_EXE_signalman"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf();
    let started = Instant::now();
    let out = run(Command::new(root().join("scripts/release.sh"))
        .args([version, &repo, "--plain-http", "--profile", "dev", "--out"])
        .arg(scratch.join("out"))
        .env("CARGO_TARGET_DIR", test_target.join("release-test"))
        .env("SIGNALMAN_ENV_HOME", signalman_testenv::env_home())
        .stderr(Stdio::inherit()));
    eprintln!("release.sh took {:.0}s", started.elapsed().as_secs_f64());
    let summary: Value =
        serde_json::from_str(out.lines().last().expect("a summary line")).expect("JSON summary");
    let image = summary["image"].as_str().unwrap();
    let (image_repo, digest) = image.split_once('@').expect("repository@digest");
    assert_eq!(image_repo, format!("{repo}/signalman"));

    // The tag is that digest, an index of one image per platform.
    let tag = format!("{repo}/signalman:{version}");
    assert_eq!(oras(&["resolve", "--plain-http", &tag]).trim(), digest);
    let index: Value =
        serde_json::from_str(&oras(&["manifest", "fetch", "--plain-http", &tag])).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let mut platforms = Vec::new();
    for m in index["manifests"].as_array().expect("manifests") {
        let arch = m["platform"]["architecture"].as_str().unwrap().to_string();
        assert_eq!(m["platform"]["os"], "linux");
        let at = format!("{repo}/signalman@{}", m["digest"].as_str().unwrap());
        let manifest: Value =
            serde_json::from_str(&oras(&["manifest", "fetch", "--plain-http", &at])).unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let blob = scratch.join(format!("layer-{arch}.tar.gz"));
        oras(&[
            "blob",
            "fetch",
            "--plain-http",
            "--output",
            blob.to_str().unwrap(),
            &format!("{repo}/signalman@{layer}"),
        ]);
        let rootfs = scratch.join(format!("rootfs-{arch}"));
        std::fs::create_dir_all(&rootfs).unwrap();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(&rootfs)
            .args(["--no-same-owner", "signalman"]));
        let (machine, dynamic) = elf(&rootfs.join("signalman"));
        let expected = match arch.as_str() {
            "amd64" => 0x3E,
            "arm64" => 0xB7,
            other => panic!("unexpected platform {other}"),
        };
        assert_eq!(machine, expected, "{arch}: ELF machine {machine:#x}");
        assert!(!dynamic, "{arch}: the binary is dynamically linked");
        platforms.push(arch);
    }
    platforms.sort();
    assert_eq!(platforms, ["amd64", "arm64"]);

    // The plugin's archives, one per platform, each the binary of that machine and the
    // LICENSE, and a krew manifest naming them with their sha256.
    let krew = std::fs::read_to_string(summary["krew_manifest"].as_str().unwrap()).unwrap();
    for (arch, machine) in [("amd64", 0x3E), ("arm64", 0xB7)] {
        let archive = scratch
            .join("out")
            .join(format!("kubectl-signalman-linux-{arch}.tar.gz"));
        let sha = run(Command::new("sha256sum").arg(&archive));
        let sha = sha.split_whitespace().next().unwrap();
        assert!(
            krew.contains(&format!(
                "kubectl-signalman-linux-{arch}.tar.gz\n      sha256: \"{sha}\""
            )),
            "the krew manifest lacks {arch}'s archive and its sha256:\n{krew}"
        );
        let unpacked = scratch.join(format!("plugin-{arch}"));
        std::fs::create_dir_all(&unpacked).unwrap();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&unpacked));
        assert!(unpacked.join("LICENSE").exists());
        assert_eq!(elf(&unpacked.join("kubectl-signalman")), (machine, false));
    }
    assert!(krew.contains(&format!("  version: v{version}\n")), "{krew}");

    // The chart in the registry pins that digest.
    let chart = format!("oci://{repo}/charts/signalman");
    assert_eq!(summary["chart"], chart);
    let env = signalman_testenv::shared();
    let values = run(env.helm().args([
        "show",
        "values",
        &chart,
        "--version",
        version,
        "--plain-http",
    ]));
    assert!(
        values.contains(&format!("repository: {repo}/signalman"))
            && values.contains(&format!("digest: \"{digest}\"")),
        "the pushed chart does not pin the image:\n{values}"
    );

    // Installed from the registry into the test API server, the Deployment runs the image by
    // digest. (The shared API server's CRDs and admission belong to the other tests.)
    let release = format!("release-test-{}", std::process::id());
    run(env.helm().args([
        "install",
        &release,
        &chart,
        "--version",
        version,
        "--plain-http",
        "--namespace",
        &release,
        "--create-namespace",
        "--set",
        "crds.install=false",
        "--set",
        "admission.enabled=false",
    ]));
    let running = run(env.kubectl().args([
        "get",
        "deployment",
        &format!("{release}-signalman"),
        "--namespace",
        &release,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]));
    assert_eq!(running, format!("{repo}/signalman@{digest}"));
    run(env
        .helm()
        .args(["uninstall", &release, "--namespace", &release]));
    run(env
        .kubectl()
        .args(["delete", "namespace", &release, "--wait=false"]));
    drop(registry);
    let _ = std::fs::remove_dir_all(&scratch);
}
