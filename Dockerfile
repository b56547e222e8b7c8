# syntax=docker/dockerfile:1
#
# The quicmatch server as a container image (docs/deploy.md).
#
#   docker build -t quicmatch .
#   docker run --rm -p 5000:5000/udp -p 5000:5000/tcp quicmatch
#
# Every flag has an environment variable (`quicmatch --help`), so the image is
# configured with `-e PORT=...`, `-e REDIS_URL=...` and so on; flags given
# after the image name are passed to the server as well.

# ---- build: the official Rust image, on the same Debian as the runtime, so
# the binary links against the glibc it will run with.
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole context (.dockerignore leaves out target/, .git and keys): cargo
# needs every target Cargo.toml names (benches, src/bin) to read the manifest,
# and the web app in web/ is compiled into the binary.
COPY . .
# Cache mounts keep the crate registry and the compiled dependencies between
# builds, so a source change recompiles only quicmatch itself. They are not
# part of the image, which is why the binary is copied out of target/.
# --locked builds exactly the versions in Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin quicmatch \
    && install -D -m 0755 target/release/quicmatch /out/quicmatch

# ---- runtime: a slim Debian with nothing but CA certificates (for rediss://
# and other TLS the server makes as a client). The server needs no files at
# run time: the web app is embedded in the binary, and without a certificate
# (CERT/KEY, or certs/cert.pem + certs/key.pem in the working directory) it
# makes a self-signed one and renews it itself.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# An unprivileged system user: the server binds port 5000 (above 1024) and
# writes nothing. Its fixed, numeric id lets Kubernetes' runAsNonRoot verify
# it and lets mounted key files be made readable to it alone.
RUN groupadd --system --gid 10001 quicmatch \
    && useradd --system --uid 10001 --gid quicmatch --home-dir /srv/quicmatch \
        --no-create-home --shell /usr/sbin/nologin quicmatch \
    && install -d -o quicmatch -g quicmatch -m 0750 /srv/quicmatch
# The server looks for certs/cert.pem and certs/key.pem relative to its working
# directory: mount a certificate at /srv/quicmatch/certs, or set CERT and KEY.
WORKDIR /srv/quicmatch
COPY --from=build /out/quicmatch /usr/local/bin/quicmatch
USER 10001:10001
# Container networks often have no IPv6 (Docker's default bridge has none), so
# listen on every IPv4 address instead of the default `::`. On a network with
# IPv6, set BIND=:: to take both.
ENV BIND=0.0.0.0
# WebTransport (HTTP/3) on UDP; the HTTP sidecar (web app, /health, /api/*) on
# TCP, the same port number unless HTTP_PORT says otherwise.
EXPOSE 5000/udp 5000/tcp
# On SIGTERM the server drains: sessions get `Closing` with code 3 and a few
# seconds to go, about 4 s (6 s in a pool), within Docker's default 10 s stop
# timeout; with DRAIN_SECS set, give `docker stop --time` that much more. It
# handles the signal itself (SIGHUP too: reload the certificate) and starts no
# children, so it runs as PID 1 without an init.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/quicmatch"]
