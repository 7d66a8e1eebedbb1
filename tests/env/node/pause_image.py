#!/usr/bin/env python3
"""Packs a static executable as a one-layer OCI image archive that `ctr images import` names
by itself (the io.containerd.image.name annotation), for the node's sandbox image.

    python3 pause_image.py BINARY NAME OUT.tar      e.g. pause registry.local/pause:3.10 pause.tar

Standard library only, reproducible (owners 0:0, mtimes 0, no gzip time stamp).
"""

import gzip
import hashlib
import io
import json
import sys
import tarfile


def blob(files, data, media):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    files["blobs/sha256/" + digest[7:]] = data
    return {"mediaType": media, "digest": digest, "size": len(data)}


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main():
    binary, name, out = sys.argv[1:4]
    with open(binary, "rb") as f:
        program = f.read()
    layer = tar_bytes([("pause", program, 0o755)])
    files = {}
    layer_desc = blob(files, gzip.compress(layer, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    enc = lambda o: json.dumps(o, sort_keys=True, separators=(",", ":")).encode()
    config_desc = blob(files, enc(config), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(files, enc(manifest), "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
    }
    files["index.json"] = enc({"schemaVersion": 2, "manifests": [manifest_desc]})
    files["oci-layout"] = enc({"imageLayoutVersion": "1.0.0"})
    with open(out, "wb") as f:
        f.write(tar_bytes([(n, d, 0o644) for n, d in sorted(files.items())]))


if __name__ == "__main__":
    main()
