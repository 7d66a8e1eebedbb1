#!/usr/bin/env python3
"""Writes the signalman container image as an OCI image layout, without a container engine.

    python3 scripts/oci_image.py --binary target/x86_64-unknown-linux-gnu/release/signalman \
        [--binary target/aarch64-unknown-linux-gnu/release/signalman] \
        --out target/image/signalman --version 0.1.0 [--tag 0.1.0] [--tar signalman.tar]

The result is a directory in the OCI image layout (oci-layout, index.json, blobs/sha256/...)
holding one image, or, given one static binary per platform, an image index of one image per
platform (a multi-arch image, as scripts/release.sh pushes it). Each image is a single gzip
layer with

    /signalman                              the operator (mode 0755)
    /etc/passwd, /etc/group                 root and nonroot (65532), as in distroless
    /etc/nsswitch.conf                      hosts: files dns (read by glibc's resolver)
    /etc/ssl/certs/ca-certificates.crt      the build machine's CA bundle (the AWS SDK's
                                            rustls reads the system roots)
    /tmp                                    1777, empty
    + the shared libraries of a dynamically linked binary (a dev build), at their paths

and a config with Entrypoint ["/signalman"], Cmd ["run"], User "65532:65532". It is what the
Dockerfile builds on distroless/static, minus distroless's other files. Push or load it with
any OCI tool: `skopeo copy oci:target/image/signalman:0.1.0 docker://REGISTRY/signalman:0.1.0`,
`crane push target/image/signalman REGISTRY/signalman:0.1.0`, or `docker load -i` /
`podman load -i` of the `--tar` archive.

Python's standard library only (tarfile, gzip, hashlib, json): nothing to install on a build
machine or in CI, and the output is reproducible: entries sorted, owners 0:0, every mtime
SOURCE_DATE_EPOCH (else 0), gzip header without a time stamp, so the same binary always gives
the same digests.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

USER = "65532:65532"
PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
NONROOT = 65532
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
NSSWITCH = "hosts: files dns\n"
CA_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]

# ELF e_machine -> OCI architecture
ARCHES = {0x3E: "amd64", 0xB7: "arm64"}


def elf_info(path):
    """(architecture, dynamically linked?) of an ELF executable."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            sys.exit(f"{path}: not a 64-bit little-endian ELF executable")
        machine = int.from_bytes(head[18:20], "little")
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    interp = any(
        int.from_bytes(table[i * phentsize : i * phentsize + 4], "little") == 3  # PT_INTERP
        for i in range(phnum)
    )
    if machine not in ARCHES:
        sys.exit(f"{path}: unsupported ELF machine {machine:#x}")
    return ARCHES[machine], interp


def shared_libraries(binary):
    """Paths of the shared libraries (and the loader) a dynamic binary needs, from ldd."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
    return sorted(set(libs))


class Layer:
    """A deterministic tar of regular files and directories."""

    def __init__(self, mtime):
        self.mtime = mtime
        self.entries = {}  # path -> (TarInfo, bytes or None)

    def _info(self, path, kind, mode, size=0, owner=0):
        info = tarfile.TarInfo(path)
        info.type = kind
        info.mode = mode
        info.size = size
        info.mtime = self.mtime
        info.uid = info.gid = owner
        info.uname = info.gname = ""
        return info

    def dir(self, path, mode=0o755, owner=0):
        """The directory (mode, owner) and its missing parents (0755, root's)."""
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            last = i == len(parts)
            if p not in self.entries:
                info = self._info(p, tarfile.DIRTYPE, mode if last else 0o755, owner=owner if last else 0)
                self.entries[p] = (info, None)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        if "/" in path:
            self.dir(path.rsplit("/", 1)[0])
        self.entries[path] = (self._info(path, tarfile.REGTYPE, mode, len(data)), data)

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                info, data = self.entries[path]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def content_size(self):
        return sum(len(d) for _, d in self.entries.values() if d is not None)


def write_blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def image(out, binary, version, revision, ca_bundle, mtime, created, gzip_level):
    """Writes one platform's image (layer, config, manifest) into the layout's blobs; returns
    its manifest descriptor (with the platform) and what went into it."""
    arch, dynamic = elf_info(binary)
    layer = Layer(mtime)
    with open(binary, "rb") as f:
        layer.file("signalman", f.read(), 0o755)
    layer.file("etc/passwd", PASSWD.encode())
    layer.file("etc/group", GROUP.encode())
    layer.file("etc/nsswitch.conf", NSSWITCH.encode())
    bundle = ca_bundle or next((b for b in CA_BUNDLES if os.path.exists(b)), None)
    if bundle:
        with open(bundle, "rb") as f:
            layer.file("etc/ssl/certs/ca-certificates.crt", f.read())
    else:
        print("warning: no CA bundle found; TLS to AWS will fail without SSL_CERT_FILE", file=sys.stderr)
    layer.dir("tmp", 0o1777)
    # nonroot's own home, as in distroless: the AWS SDK and others read and write under $HOME.
    layer.dir("home/nonroot", 0o700, owner=NONROOT)
    libs = shared_libraries(binary) if dynamic else []
    for lib in libs:
        with open(lib, "rb") as f:  # follows symlinks: the file lands under the name ldd used
            layer.file(lib, f.read(), 0o755)

    tar = layer.tar()
    gz = gzip.compress(tar, compresslevel=gzip_level, mtime=0)
    layer_desc = dict(mediaType=MEDIA_LAYER, **write_blob(out, gz))

    labels = {
        "org.opencontainers.image.title": "signalman",
        "org.opencontainers.image.description": "Kubernetes operator that sends AWS SWF and SSM Automation signals exactly once",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
    }
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": USER,
            "Entrypoint": ["/signalman"],
            "Cmd": ["run"],
            "WorkingDir": "/",
            "Env": ["PATH=/", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created": created, "created_by": "scripts/oci_image.py"}],
    }
    config_desc = dict(mediaType=MEDIA_CONFIG, **write_blob(out, canonical(config)))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_desc,
        "layers": [layer_desc],
        "annotations": {k: v for k, v in labels.items() if k != "org.opencontainers.image.description"},
    }
    manifest_desc = dict(mediaType=MEDIA_MANIFEST, **write_blob(out, canonical(manifest)))
    manifest_desc["platform"] = {"architecture": arch, "os": "linux"}
    summary = {
        "manifest": manifest_desc["digest"],
        "architecture": arch,
        "static": not dynamic,
        "bundled_libraries": libs,
        "layer_bytes_uncompressed": len(tar),
        "layer_bytes_compressed": len(gz),
    }
    return manifest_desc, summary


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--binary",
        required=True,
        action="append",
        help="the signalman executable; give it once per platform (amd64, arm64) for a multi-arch image index",
    )
    p.add_argument("--out", required=True, help="OCI layout directory to (re)create")
    p.add_argument("--version", required=True, help="image version label")
    p.add_argument("--tag", help="ref name in index.json (default: the version)")
    p.add_argument("--revision", default="", help="VCS revision label")
    p.add_argument("--tar", help="also write the layout as this tar archive (docker/podman load)")
    p.add_argument("--gzip-level", type=int, default=6, help="1 (fast) .. 9 (small); default 6")
    p.add_argument("--ca-bundle", help="CA bundle to include (default: the system's)")
    args = p.parse_args()

    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(args.binary) > 1:
        # Libraries are bundled by asking the build machine's ldd, which answers for its own
        # architecture only: a multi-platform image takes static binaries.
        for b in args.binary:
            if elf_info(b)[1]:
                sys.exit(f"{b}: dynamically linked; a multi-platform image needs static binaries")

    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(os.path.join(args.out, "blobs", "sha256"))
    images = [
        image(args.out, b, args.version, args.revision, args.ca_bundle, mtime, created, args.gzip_level)
        for b in args.binary
    ]
    arches = [summary["architecture"] for _, summary in images]
    if len(set(arches)) != len(arches):
        sys.exit(f"two binaries of one architecture: {arches}")
    tag = args.tag or args.version
    ref = {"org.opencontainers.image.ref.name": tag}
    if len(images) == 1:
        # One platform: index.json names the image manifest itself.
        top = dict(images[0][0], annotations=ref)
    else:
        # Several: index.json names an image index listing one manifest per platform, which is
        # what a registry serves for a multi-arch tag.
        platforms = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [desc for desc, _ in images],
        }
        top = dict(mediaType=MEDIA_INDEX, **write_blob(args.out, canonical(platforms)), annotations=ref)
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [top]}
    with open(os.path.join(args.out, "index.json"), "wb") as f:
        f.write(canonical(index))
    with open(os.path.join(args.out, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))

    if args.tar:
        with tarfile.open(args.tar, "w", format=tarfile.PAX_FORMAT) as t:
            for root, dirs, files in os.walk(args.out):
                dirs.sort()
                for name in sorted(files):
                    full = os.path.join(root, name)
                    info = t.gettarinfo(full, os.path.relpath(full, args.out))
                    info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
                    with open(full, "rb") as f:
                        t.addfile(info, f)

    summary = {"layout": args.out, "ref": tag, "digest": top["digest"]}
    if len(images) == 1:
        summary.update(images[0][1])
    else:
        summary["images"] = [s for _, s in images]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
