#!/usr/bin/env bash
# Builds the signalman container image without a container engine, as an OCI image layout.
#
#   scripts/build-image.sh                 release: static binary, target/image/signalman
#   scripts/build-image.sh --dev           the debug binary (quick; for trying the tool chain)
#   options: --out DIR   --tag TAG   --tar FILE (also an archive for docker/podman load)
#
# Release builds link glibc statically (-C target-feature=+crt-static on the host's
# *-linux-gnu target: pure Rust plus aws-lc, so nothing else to link), for the same image
# the Dockerfile builds on distroless/static: one layer with /signalman, the CA bundle,
# /etc/passwd with nonroot (65532), USER 65532:65532, ENTRYPOINT ["/signalman"], CMD ["run"].
# A dev (dynamically linked) binary gets its few shared libraries copied in beside it.
# The layout is written by scripts/oci_image.py (Python standard library only).
#
# Push it with any OCI tool, e.g.
#   skopeo copy oci:target/image/signalman:0.1.0 docker://REGISTRY/signalman:0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=target/image/signalman
tag=""
tar=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) profile=dev ;;
    --out) out="$2"; shift ;;
    --tag) tag="$2"; shift ;;
    --tar) tar="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

target_dir="${CARGO_TARGET_DIR:-target}"
start=$(date +%s)
if [ "$profile" = release ]; then
  triple=$(rustc -vV | sed -n 's/^host: //p')
  case "$triple" in
    *-linux-gnu) ;;
    *) echo "release images are built on a *-linux-gnu host (this is $triple)" >&2; exit 1 ;;
  esac
  var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
  # An explicit --target keeps these flags off build scripts and proc macros, and puts the
  # artifacts in target/$triple, apart from the everyday debug build.
  env "$var=-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --locked --release --target "$triple" -p signalman --bin signalman
  bin="$target_dir/$triple/release/signalman"
else
  cargo build --locked -p signalman --bin signalman
  bin="$target_dir/debug/signalman"
fi
built=$(date +%s)

version=$("$bin" version | awk '{print $2}')
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || true)
python3 scripts/oci_image.py --binary "$bin" --out "$out" --version "$version" \
  --tag "${tag:-$version}" --revision "$revision" ${tar:+--tar "$tar"}
echo "built in $((built - start))s, image written in $(($(date +%s) - built))s: $out"
