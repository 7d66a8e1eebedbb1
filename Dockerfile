# syntax=docker/dockerfile:1
# The signalman image: a static binary on distroless/static, non-root.
#
#   docker build -t registry.example.com/signalman:0.1.0 .
#
# Without a container engine, scripts/build-image.sh builds the same image (same static
# binary, same user, entrypoint and command) as an OCI layout; see the chart's README.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# glibc linked statically (crt-static): the crates are pure Rust plus aws-lc (C, built by
# cc), so the binary needs no shared library and runs on distroless/static. An explicit
# --target keeps the flag off build scripts and proc macros.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    triple="$(rustc -vV | sed -n 's/^host: //p')" \
 && var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS" \
 && env "$var=-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
      cargo build --locked --release --target "$triple" -p signalman --bin signalman \
 && cp "target/$triple/release/signalman" /signalman \
 && /signalman version

# CA certificates (the AWS SDK's rustls reads the system roots), /etc/passwd with nonroot,
# /tmp; nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="signalman" \
      org.opencontainers.image.description="Kubernetes operator that sends AWS SWF and SSM Automation signals exactly once" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /signalman /signalman
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/signalman"]
CMD ["run"]
